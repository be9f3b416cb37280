"""TAP 1.1 synchronous queries: ``/tap/sync``.

A request is parsed into DALI parameters, the ADQL is translated against the published
TAP_SCHEMA (so only published tables and declared functions are reachable), similarity
references are checked, and the result is written as a VOTable. Every refusal is a DALI error
document with the HTTP status DALI gives, never a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from flask import Blueprint, Response, current_app, request

from vo_ml import adql
from vo_ml.service import archive
from vo_ml.service.dali import VOTABLE_FORMATS, DaliError, DaliParameters, parse_maxrec
from vo_ml.service.votable import VOTABLE_MIME, error_votable, results_votable

__all__ = ["bp", "run_query", "LANGUAGES"]

bp = Blueprint("tap", __name__, url_prefix="/tap")
log = logging.getLogger(__name__)

#: LANG values accepted for ADQL (TAP 1.1 section 2.3.1).
LANGUAGES = ("ADQL", "ADQL-2.0", "ADQL-2.1")


@bp.route("/sync", methods=["GET", "POST"])
def sync() -> Response:
    parameters = DaliParameters([*request.args.items(multi=True),
                                 *request.form.items(multi=True)])
    try:
        body = run_query(parameters)
    except DaliError as error:
        return dali_error_response(error)
    except Exception:
        log.exception("sync query failed")
        return dali_error_response(DaliError(
            "internal error while running the query; the service log has the details", 500))
    return Response(body, mimetype=VOTABLE_MIME)


def dali_error_response(error: DaliError) -> Response:
    return Response(error_votable(error.message), status=error.status, mimetype=VOTABLE_MIME)


def run_query(parameters: Mapping[str, str]) -> bytes:
    """Run one TAP query given its DALI parameters; the VOTable document it answers with."""
    request_type = parameters.get("REQUEST", "doQuery")
    if request_type.lower() != "doquery":
        raise DaliError(f"REQUEST={request_type!r} is not supported: use REQUEST=doQuery")
    language = parameters.required("LANG")
    if language.upper() not in LANGUAGES:
        raise DaliError(f"LANG={language!r} is not supported: use one of {', '.join(LANGUAGES)}")
    query = parameters.required("QUERY")
    serialization = _serialization(parameters)
    config = _limits()
    maxrec = parse_maxrec(parameters, *config)

    state = archive()
    try:
        translation = adql.translate(query, state.schema)
        _check_references(translation.references)
    except adql.AdqlError as error:
        raise DaliError(str(error)) from None
    result = state.backend.execute(translation.sql, limit=maxrec + 1)
    overflow = len(result) > maxrec
    if overflow:
        result.columns = [c[:maxrec] for c in result.columns]
    columns = [o.column for o in translation.output_columns]
    return results_votable(result, columns, overflow, serialization)


def _serialization(parameters: Mapping[str, str]) -> str:
    requested = parameters.get("RESPONSEFORMAT") or parameters.get("FORMAT") or "votable"
    key = requested.replace(" ", "").lower()
    if key not in VOTABLE_FORMATS:
        raise DaliError(
            f"RESPONSEFORMAT={requested!r} is not supported: use one of "
            f"{', '.join(sorted(VOTABLE_FORMATS))}")
    return VOTABLE_FORMATS[key]


def _limits() -> tuple[int, int]:
    return int(current_app.config["TAP_MAXREC_DEFAULT"]), int(current_app.config["TAP_MAXREC_LIMIT"])


def _check_references(references: list) -> None:
    """Every DID given to ml_distance must name a row, or the distances would all be NULL."""
    backend = archive().backend
    for reference in references:
        found = backend.execute(
            f"SELECT 1 FROM {reference.table} WHERE {reference.key_column} = ? LIMIT 1",
            [reference.value])
        if not len(found):
            raise adql.unknown_reference_error(reference)
