"""The IVOA lyonetia ADQL suite through `vo-ml adql check`: valid queries pass, invalid ones fail.

Cases come from the copy of the suite in tests/data/lyonetia; a case is named file:index, since
UUIDs repeat across files. Every case runs in-process through the CLI's own entry point: the
console script takes about 0.8 s to start, 400 s for the whole suite. A few cases also run as
the real console script.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import vo_ml

from vo_ml.cli import main

CASES_FILE = Path(__file__).parent / "data" / "lyonetia" / "cases.jsonl"

#: gavo/ holds DaCHS's parser tests, and DaCHS takes any ivo_-prefixed name for a user-defined
#: function: these cases call such functions that no <functions> block declares. They are
#: declared here, as DaCHS implicitly does.
DACHS_UDFS = {
    "gavo/additionaltests.xml:1": ["ivo_foo(x DOUBLE) -> VARCHAR"],
    "gavo/additionaltests.xml:2": ["ivo_foo(x VARCHAR) -> VARCHAR"],
    "gavo/simpleunit.xml:174": ["ivo_getstring() -> VARCHAR"],
}

#: Cases whose expectation contradicts ADQL 2.1 and other cases of the suite: they are checked
#: against ADQL 2.1, the reason given here.
ERRATA = {
    "ivoa/2_from.xml:4": "valid: ADQL 2.1's BNF makes the join condition optional "
                         "(<qualified_join> ::= ... JOIN <table_reference> [<join_specification>]), "
                         "and gavo/simpleunit.xml:16, 18-20 and 23 expect joins without one to pass",
}

#: Cases also run as the console script: valid, invalid, with a declared UDF, geometry, and a
#: query that starts with a comment (which looks like an option).
SUBPROCESS_CASES = ["gavo/simpleunit.xml:0", "ivoa/O2_user_defined_functions.xml:1",
                    "ivoa/O2_user_defined_functions.xml:0", "ivoa/O1_geometrical_functions.xml:10",
                    "ivoa/X1_obscore_eso.xml:0"]


def load_cases() -> dict[str, dict]:
    lines = CASES_FILE.read_text(encoding="utf-8").splitlines()
    cases = (json.loads(line) for line in lines if line)
    return {f"{case['file']}:{case['index']}": case for case in cases}


CASES = load_cases()


def arguments(case_id: str) -> list[str]:
    """`vo-ml adql check` with the case's declared functions; ``--`` keeps a query that starts
    with a comment (``-- ...``) from reading as an option."""
    forms = [udf["form"] for udf in CASES[case_id]["udfs"]] + DACHS_UDFS.get(case_id, [])
    return ["adql", "check", *(a for form in forms for a in ("--udf", form)), "--",
            CASES[case_id]["adql"]]


def expected_exit_code(case_id: str) -> int:
    valid = CASES[case_id]["valid"] != (case_id in ERRATA)
    return 0 if valid else 1


@pytest.mark.parametrize("case_id", list(CASES))
def test_case(case_id, capsys):
    code = main(arguments(case_id))
    out, err = capsys.readouterr()
    assert code == expected_exit_code(case_id), f"{CASES[case_id]['adql']}\n{out}{err}"
    if code:
        assert err.startswith("ADQL-E") and "Traceback" not in err, err


@pytest.mark.parametrize("case_id", SUBPROCESS_CASES)
def test_case_through_the_console_script(case_id):
    result = vo_ml(*arguments(case_id), timeout=60)
    assert result.returncode == expected_exit_code(case_id), result.stderr
    assert result.stdout.strip() == "valid ADQL" if result.returncode == 0 else (
        result.stderr.startswith("ADQL-E"))


def test_special_cases_are_in_the_suite():
    assert {*DACHS_UDFS, *ERRATA, *SUBPROCESS_CASES} <= set(CASES)
