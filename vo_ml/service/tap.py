"""TAP 1.1 synchronous queries: ``/tap/sync``.

A request is parsed into DALI parameters, the ADQL is translated against the published
TAP_SCHEMA (so only published tables and declared functions are reachable), similarity
references are checked, and the result is written as a VOTable. Every refusal is a DALI error
document with the HTTP status DALI gives, never a traceback.
"""

from __future__ import annotations

from collections.abc import Mapping

from flask import Blueprint, Response

from vo_ml import adql
from vo_ml.service import archive
from vo_ml.service.dal import answer, maxrec_of, run_limited
from vo_ml.service.dali import DaliError, parse_serialization
from vo_ml.service.votable import results_votable

__all__ = ["bp", "run_query", "LANGUAGES"]

bp = Blueprint("tap", __name__, url_prefix="/tap")

#: LANG values accepted for ADQL (TAP 1.1 section 2.3.1).
LANGUAGES = ("ADQL", "ADQL-2.0", "ADQL-2.1")


@bp.route("/sync", methods=["GET", "POST"])
def sync() -> Response:
    return answer(run_query)


def run_query(parameters: Mapping[str, str]) -> bytes:
    """Run one TAP query given its DALI parameters; the VOTable document it answers with."""
    request_type = parameters.get("REQUEST", "doQuery")
    if request_type.lower() != "doquery":
        raise DaliError(f"REQUEST={request_type!r} is not supported: use REQUEST=doQuery")
    language = parameters.required("LANG")
    if language.upper() not in LANGUAGES:
        raise DaliError(f"LANG={language!r} is not supported: use one of {', '.join(LANGUAGES)}")
    query = parameters.required("QUERY")
    serialization = parse_serialization(parameters, ("RESPONSEFORMAT", "FORMAT"))
    maxrec = maxrec_of(parameters)

    state = archive()
    try:
        translation = adql.translate(query, state.schema)
        _check_references(translation.references)
    except adql.AdqlError as error:
        raise DaliError(str(error)) from None
    result, overflow = run_limited(translation.sql, [], maxrec)
    columns = [o.column for o in translation.output_columns]
    return results_votable(result, columns, overflow, serialization)


def _check_references(references: list) -> None:
    """Every DID given to ml_distance must name a row, or the distances would all be NULL."""
    backend = archive().backend
    for reference in references:
        found = backend.execute(
            f"SELECT 1 FROM {reference.table} WHERE {reference.key_column} = ? LIMIT 1",
            [reference.value])
        if not len(found):
            raise adql.unknown_reference_error(reference)
