"""The errors an ADQL query can raise, one numbered class per problem (in the astropy.io.votable style).

Each class carries a stable ``code`` so clients and tests can tell problems apart without parsing
messages, and a ``message_template`` filled from keyword arguments. Numbers are never reused: a
retired problem keeps its number and a new problem takes the next one.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from sqlglot import exp


class AdqlError(ValueError):
    """Base of every ADQL problem; ``line`` and ``col`` are 1-based when the position is known."""

    code = "ADQL-E00"
    message_template = "{detail}"

    def __init__(self, line: int | None = None, col: int | None = None, **values: object) -> None:
        self.message = self.message_template.format(**values)
        self.line = line
        self.col = col
        position = f" (line {line}, column {col})" if line is not None else ""
        super().__init__(f"{self.code}: {self.message}{position}")


class E01(AdqlError):
    """The query is not valid ADQL syntax; the position is where the parser gave up."""

    code = "ADQL-E01"
    message_template = "syntax error: {detail}"


class E02(AdqlError):
    """The query is not exactly one SELECT: TAP runs queries, never commands or scripts."""

    code = "ADQL-E02"
    message_template = "expected a single SELECT statement, got {found}"


class E03(AdqlError):
    """A FROM clause names a table the service does not publish in TAP_SCHEMA."""

    code = "ADQL-E03"
    message_template = "unknown table '{table}'{suggestion}"


class E04(AdqlError):
    """A column is not in any table of its FROM clause (or not in the table it is qualified by)."""

    code = "ADQL-E04"
    message_template = "unknown column '{column}' in {where}{suggestion}"


class E05(AdqlError):
    """A function is neither a standard ADQL function nor one the service declares (TAPRegExt)."""

    code = "ADQL-E05"
    message_template = "unknown function '{function}'{suggestion}"


class E06(AdqlError):
    """A function got arguments ADQL does not allow it (wrong count or kind), whoever declares it."""

    code = "ADQL-E06"
    message_template = "{function}: {detail}"


class E07(AdqlError):
    """An unqualified column name belongs to more than one table of the FROM clause."""

    code = "ADQL-E07"
    message_template = "ambiguous column '{column}': it is in {tables}; qualify it, e.g. {example}"


class E08(AdqlError):
    """A latent distance was given a reference identifier that names no row of the table."""

    code = "ADQL-E08"
    message_template = (
        "ml_distance: no row of {table} has {key_columns} '{value}'; "
        "give the {key_columns} of a spectrum in the table"
    )


class E09(AdqlError):
    """The query uses SQL the ADQL translation does not support (e.g. SELECT INTO)."""

    code = "ADQL-E09"
    message_template = "unsupported construct: {construct}"


class E10(AdqlError):
    """Retired: a standard ADQL function or type without SQL on the backend. Every standard
    function now runs on DuckDB; the number stays taken."""

    code = "ADQL-E10"
    message_template = "{feature} is standard ADQL but this service cannot run it on {backend} yet"


class E11(AdqlError):
    """A latent distance's reference row exists but has no embedding yet (not embedded)."""

    code = "ADQL-E11"
    message_template = (
        "ml_distance: the row of {table} with {key_columns} '{value}' has no {column} yet; "
        "run 'vo-ml embed' for the table, or compare with another spectrum"
    )


class E12(AdqlError):
    """ml_encode cannot encode: the table has no model, or the service cannot load it."""

    code = "ADQL-E12"
    message_template = "ml_encode: there is no model to encode with for {table}: {reason}"


class E13(AdqlError):
    """The query nests parentheses (or CASE expressions) deeper than the service reads: the
    parser and every walk over the tree recurse once per level, and ADQL needs no such depth.
    The limit is :data:`vo_ml.adql.checker.MAX_NESTING`."""

    code = "ADQL-E13"
    message_template = (
        "the query nests parentheses and CASE expressions more than {limit} levels deep, the "
        "most this service reads: write it with fewer nested levels"
    )


class E14(AdqlError):
    """The query is built too deeply to translate without brackets to count: a long run of NOT
    or of signs, say, which the parser reads one level inside the other."""

    code = "ADQL-E14"
    message_template = (
        "the query is built too deeply to translate (a long run of NOT, signs or nested "
        "subqueries); write it with fewer levels, e.g. NOT once instead of NOT NOT"
    )


class E15(AdqlError):
    """A measure of uploaded spectra (ml_coverage, ml_encode_error, ml_typicality) names
    columns that no ml_encode of the query encodes: there is no encoding to measure."""

    code = "ADQL-E15"
    message_template = (
        "{function}: the query has no ml_encode({arguments}) whose spectra it could measure; "
        "measure uploaded spectra in the query that compares them, e.g. with "
        "ml_distance(s.embedding, ml_encode({arguments}))"
    )


class E16(AdqlError):
    """ml_typicality cannot be measured: the archive's own nearest-neighbour distances, kept
    with the table's neighbour index, are not there."""

    code = "ADQL-E16"
    message_template = (
        "ml_typicality: the nearest-neighbour distances of {table}.{column} are not known: "
        "{reason}; the operator computes them with 'vo-ml index --table {table}'"
    )


class E17(AdqlError):
    """ml_tag cannot tag: the table has no tags of the model that embedded it, or not the one
    asked for."""

    code = "ADQL-E17"
    message_template = "ml_tag: {table} {reason}"


def position(node: exp.Expr) -> dict[str, int]:
    """The ``line`` and ``col`` of an error about ``node``: its first token the parser positioned."""
    for candidate in (node, *node.find_all(exp.Identifier)):
        if candidate.meta.get("line") is not None:
            return {"line": candidate.meta["line"], "col": candidate.meta["col"]}
    return {}


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """A "; did you mean 'x'?" suffix naming the closest candidates, or "" when none is close."""
    lowered = {c.lower(): c for c in candidates}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.6)
    if not close:
        return ""
    return "; did you mean " + " or ".join(f"'{lowered[c]}'" for c in close) + "?"
