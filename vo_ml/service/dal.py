"""What the TAP and SSA endpoints share on the Flask side: one request cycle, limits, errors.

Like pyvo's ``DALService`` under its protocol classes: each protocol supplies a function from
DALI parameters to a VOTable document, and this module turns requests into parameters, the
function's result into a response, and every refusal into a DALI error document.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence

import pyarrow as pa
from flask import Response, current_app, request

from vo_ml.archive.backend import QueryError, QueryResult, QueryTimeout, ResultStream
from vo_ml.service import archive
from vo_ml.service.dali import DaliError, DaliParameters, parse_maxrec
from vo_ml.service.formats import CappedRows
from vo_ml.service.votable import VOTABLE_MIME, error_votable

__all__ = ["answer", "respond", "dali_error_response", "request_parameters", "request_part", "maxrec_of",
           "run_limited", "open_rows", "read_rows", "query_errors", "TimeLimitError"]

log = logging.getLogger(__name__)


def request_parameters() -> DaliParameters:
    """GET and POST parameters of the current request, names case-insensitive."""
    return DaliParameters([*request.args.items(multi=True), *request.form.items(multi=True)])


def request_part(name: str, limit: int) -> bytes | None:
    """The file sent in multipart part ``name`` of the current request, at most ``limit`` + 1
    bytes of it (enough to tell it is too large); None when there is no such part."""
    part = request.files.get(name)
    return None if part is None else part.stream.read(limit + 1)


def answer(run: Callable[[DaliParameters], bytes]) -> Response:
    """Run a protocol's query on this request: a VOTable, or a DALI error document."""
    return respond(lambda: Response(run(request_parameters()), mimetype=VOTABLE_MIME))


def respond(make: Callable[[], Response]) -> Response:
    """The response ``make`` builds for this request, or a DALI error document: the request's
    fault as its DaliError says, anything else as a 500 whose cause goes to the log."""
    try:
        return make()
    except DaliError as error:
        return dali_error_response(error)
    except Exception:
        log.exception("%s failed", request.path)
        return dali_error_response(DaliError(
            "internal error while running the query; the service log has the details", 500))


def dali_error_response(error: DaliError) -> Response:
    return Response(error_votable(error.message), status=error.status, mimetype=VOTABLE_MIME)


def maxrec_of(parameters: Mapping[str, str]) -> int:
    """MAXREC within the limits the service declares in its capabilities."""
    config = current_app.config
    return parse_maxrec(parameters, int(config["TAP_MAXREC_DEFAULT"]), int(config["TAP_MAXREC_LIMIT"]))


def run_limited(sql: str, values: Sequence, maxrec: int) -> tuple[QueryResult, bool]:
    """At most ``maxrec`` rows of the query, and whether there were more (OVERFLOW)."""
    timeout = float(current_app.config["QUERY_TIMEOUT"])
    with query_errors(timeout):
        result = archive().backend.execute(sql, values, limit=maxrec + 1, timeout=timeout)
    overflow = len(result) > maxrec
    result.columns = [c[:maxrec] for c in result.columns]
    return result, overflow


class TimeLimitError(DaliError):
    """A query stopped at its time limit; async jobs say so in their own terms."""


@contextlib.contextmanager
def query_errors(timeout: float) -> Iterator[None]:
    """The backend's refusals of a query as DALI errors a client can act on."""
    try:
        yield
    except QueryTimeout:
        raise TimeLimitError(f"the query ran longer than its limit of {timeout:g} s and was stopped: "
                        "narrow it with WHERE conditions or TOP, or run it as an async job",
                        status=400) from None
    except QueryError as error:
        raise DaliError(f"the database refused the query: {error}") from None


def read_rows(table: pa.Table, maxrec: int, infos: tuple[tuple[str, str], ...] = ()) -> CappedRows:
    """A result already read, as :func:`open_rows` gives one being read."""
    return CappedRows(ResultStream(table.schema, iter(table.to_batches())), maxrec, infos)


def open_rows(stack: contextlib.ExitStack, sql: str, maxrec: int, timeout: float,
              stop: threading.Event | None = None,
              tables: Mapping[str, pa.Table] | None = None,
              infos: tuple[tuple[str, str], ...] = (),
              parameters: Mapping[str, object] | None = None) -> CappedRows:
    """Start the query, closed with ``stack``, and read its first batch; ``infos`` (name, value)
    go into a VOTable result as INFO elements, ``parameters`` are the SQL's named parameters.

    Reading one batch before answering means the errors most queries can have (bad casts,
    division by zero, the time limit of a sort) still become a DALI error with its HTTP status
    rather than a broken stream.
    """
    with query_errors(timeout):
        stream = stack.enter_context(archive().backend.stream(
            sql, parameters, limit=maxrec + 1, timeout=timeout, stop=stop, tables=tables))
        first = next(stream.batches, None)
    stream.batches = itertools.chain([first] if first is not None else [], stream.batches)
    return CappedRows(stream, maxrec, infos)
