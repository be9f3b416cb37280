"""The TAP service against the IVOA validator: ``stilts taplint`` over every stage it has.

The issue's list of stages includes UUC (UCD and unit syntax), which Debian's STILTS 3.4.7
does not have yet; the second test checks the same things with astropy's UCD and VOUnit parsers.
"""

from __future__ import annotations

import re
import warnings

from astropy import units
from astropy.io.votable.ucd import check_ucd
from conftest import run

#: Every stage of the acceptance list, in order.
STAGES = "TMV TME TMS TMC UUC CPV CAP AVV QGE QPO QAS UWS MDQ OBS UPL EXA".split()
#: VOUnit functions of a unit, e.g. log(cm.s**-2) for log g (VOUnit 1.0 section 2.6), which
#: astropy's VOUnit parser does not read.
UNIT_FUNCTION = re.compile(r"^(log|ln|exp|sqrt)\((.+)\)$")


def _known_stages(stilts: str) -> list[str]:
    usage = run([stilts, "taplint", "help=stages"], timeout=120).stdout
    known = set(re.findall(r"^\s*\* ([A-Z]{3}):", usage, flags=re.MULTILINE))
    return [stage for stage in STAGES if stage in known]


def test_taplint_reports_no_errors_and_no_warnings(tap_url, stilts):
    stages = _known_stages(stilts)
    assert set(STAGES) - set(stages) <= {"UUC"}
    linted = run([stilts, "taplint", f"tapurl={tap_url}", f"stages={' '.join(stages)}", "report=EWIS",
                  "maxrepeat=5"], timeout=500)
    report = linted.stdout + linted.stderr
    totals = re.search(r"Totals: Errors: (\d+); Warnings: (\d+)", report)
    assert totals, report[-3000:]
    problems = [line for line in report.splitlines() if line.startswith(("E-", "W-"))]
    assert totals.groups() == ("0", "0"), "\n".join(problems)
    # The stages that need async jobs, uploads and the ObsCore view did run their queries.
    for evidence in ("I-UWS-POPA", "I-UPL-QJOB", "S-OBS-COLS-1 ivoa.ObsCore columns: 30/30 required"):
        assert evidence in report, f"taplint did not get as far as {evidence}"
    assert re.search(r"S-OBS-QNUM-1 Successful/submitted TAP queries: (\d+)/\1", report)


def test_every_published_ucd_and_unit_parses(service):
    """What taplint's UUC stage checks: UCDs against the UCD1+ vocabulary, units as VOUnits."""
    columns = service.search(
        "SELECT table_name, column_name, ucd, unit FROM TAP_SCHEMA.columns").to_table()
    assert len(columns) > 50
    for row in columns:
        where = f"{row['table_name']}.{row['column_name']}"
        if row["ucd"]:
            assert check_ucd(str(row["ucd"]), check_controlled_vocabulary=True), where
        if row["unit"]:
            unit = str(row["unit"])
            function = UNIT_FUNCTION.match(unit)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", units.UnitsWarning)
                units.Unit(function.group(2) if function else unit, format="vounit")
