"""What the TAP and SSA endpoints share on the Flask side: one request cycle, limits, errors.

Like pyvo's ``DALService`` under its protocol classes: each protocol supplies a function from
DALI parameters to a VOTable document, and this module turns requests into parameters, the
function's result into a response, and every refusal into a DALI error document.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

from flask import Response, current_app, request

from vo_ml.archive.backend import QueryError, QueryResult, QueryTimeout
from vo_ml.service import archive
from vo_ml.service.dali import DaliError, DaliParameters, parse_maxrec
from vo_ml.service.votable import VOTABLE_MIME, error_votable

__all__ = ["answer", "dali_error_response", "request_parameters", "maxrec_of", "run_limited"]

log = logging.getLogger(__name__)


def request_parameters() -> DaliParameters:
    """GET and POST parameters of the current request, names case-insensitive."""
    return DaliParameters([*request.args.items(multi=True), *request.form.items(multi=True)])


def answer(run: Callable[[DaliParameters], bytes]) -> Response:
    """Run a protocol's query on this request: a VOTable, or a DALI error document."""
    try:
        body = run(request_parameters())
    except DaliError as error:
        return dali_error_response(error)
    except Exception:
        log.exception("%s failed", request.path)
        return dali_error_response(DaliError(
            "internal error while running the query; the service log has the details", 500))
    return Response(body, mimetype=VOTABLE_MIME)


def dali_error_response(error: DaliError) -> Response:
    return Response(error_votable(error.message), status=error.status, mimetype=VOTABLE_MIME)


def maxrec_of(parameters: Mapping[str, str]) -> int:
    """MAXREC within the limits the service declares in its capabilities."""
    config = current_app.config
    return parse_maxrec(parameters, int(config["TAP_MAXREC_DEFAULT"]), int(config["TAP_MAXREC_LIMIT"]))


def run_limited(sql: str, values: Sequence, maxrec: int) -> tuple[QueryResult, bool]:
    """At most ``maxrec`` rows of the query, and whether there were more (OVERFLOW)."""
    timeout = float(current_app.config["QUERY_TIMEOUT"])
    try:
        result = archive().backend.execute(sql, values, limit=maxrec + 1, timeout=timeout)
    except QueryTimeout:
        raise DaliError(f"the query ran longer than the service's limit of {timeout:g} s and was "
                        "stopped: narrow it with WHERE conditions or TOP", status=400) from None
    except QueryError as error:
        raise DaliError(f"the database refused the query: {error}") from None
    overflow = len(result) > maxrec
    result.columns = [c[:maxrec] for c in result.columns]
    return result, overflow
