"""The one pipeline of every DAL protocol here: request, plan, database, rows, writer, response.

As in pyvo, where ``DALService.search`` is ``create_query(...).execute()``, a protocol supplies
only what is its own: a function from DALI parameters to a :class:`DalQuery` (how to find the
rows: a :class:`Plan`; how to write them: an output format and the columns' metadata). This
module runs every such query the same way: :func:`execute` runs the plan through the one
:class:`Executor` that reaches the database, caps the rows at MAXREC and hands them to the
format's writer, piece by piece. TAP sync and SSA answer with :func:`serve`, async TAP jobs call
:func:`execute` themselves. Every refusal, wherever it is raised, becomes a DALI error document
in the app-wide handlers :func:`install_error_handlers` registers.

Adding a protocol is a module with its parsing and its plan, whose view returns
``serve(parse)``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from vo_ml.archive.backend import QueryError, QueryTimeout, ResultStream
from vo_ml.archive.tap_schema import Column
from vo_ml.service.access import absolute_access_urls
from vo_ml.service.context import archive, base_url
from vo_ml.service.dali import DaliError, DaliParameters, parse_maxrec
from vo_ml.service.formats import CappedRows, OutputFormat
from vo_ml.service.settings import settings
from vo_ml.service.votable import VOTABLE_MIME, ServiceDescriptor, error_votable

__all__ = ["DalQuery", "Plan", "SqlPlan", "Found", "Executor", "Answer", "execute", "serve",
           "install_error_handlers", "dali_error_response", "request_parameters",
           "request_part", "maxrec_of", "query_errors", "TimeLimitError"]

log = logging.getLogger(__name__)

#: Where the DAL endpoints live: an unknown route or method under them is answered with a
#: DALI error document, as a DAL client expects, and elsewhere with Flask's page.
DAL_PATHS = ("/tap", "/ssa", "/datalink")


def request_parameters() -> DaliParameters:
    """GET and POST parameters of the current request, names case-insensitive."""
    return DaliParameters([*request.args.items(multi=True), *request.form.items(multi=True)])


def request_part(name: str, limit: int) -> bytes | None:
    """The file sent in multipart part ``name`` of the current request, at most ``limit`` + 1
    bytes of it (enough to tell it is too large); None when there is no such part."""
    part = request.files.get(name)
    return None if part is None else part.stream.read(limit + 1)


def maxrec_of(parameters: Mapping[str, str]) -> int:
    """MAXREC within the limits the service declares in its capabilities."""
    limits = settings()
    return parse_maxrec(parameters, limits.tap_maxrec_default, limits.tap_maxrec_limit)


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


# --- plans and the executor -----------------------------------------------------------------

@dataclass(frozen=True)
class Found:
    """The rows a plan found, as they are read, and the INFO elements (name, value) that tell
    the user how they were found."""

    stream: ResultStream
    infos: tuple[tuple[str, str], ...] = ()


class Plan(Protocol):
    """How to find a query's rows: a value made before anything runs, run once."""

    def run(self, executor: Executor) -> Found:
        """The rows, found with ``executor``: the only way a plan reaches the database."""


@dataclass(frozen=True)
class SqlPlan:
    """One SQL statement whose rows are the answer; ``parameters`` are bound to it."""

    sql: str
    parameters: Sequence | Mapping | None = None
    infos: tuple[tuple[str, str], ...] = ()

    def run(self, executor: Executor) -> Found:
        return Found(executor.open(self.sql, self.parameters), self.infos)


class Executor:
    """The one place a query's SQL reaches the database: with the query's time limit, stop
    event and uploaded ``tables``, its streams closed with ``stack``, the backend's refusals
    turned into DALI errors."""

    def __init__(self, stack: contextlib.ExitStack, maxrec: int, timeout: float,
                 stop: threading.Event | None = None,
                 tables: Mapping[str, pa.Table] | None = None) -> None:
        self._stack = stack
        self._maxrec = maxrec
        self._timeout = timeout
        self._stop = stop
        self._tables = dict(tables or {})

    def open(self, sql: str, parameters: Sequence | Mapping | None = None,
             tables: Mapping[str, pa.Table] | None = None) -> ResultStream:
        """Start the query (``tables`` are visible to it besides the uploads) and read its
        first batch; at most ``maxrec + 1`` rows, one more than MAXREC to tell it cut them.

        Reading one batch before answering means the errors most queries can have (bad casts,
        division by zero, the time limit of a sort) still become a DALI error with its HTTP
        status rather than a broken stream.
        """
        with query_errors(self._timeout):
            stream = self._stack.enter_context(archive().backend.stream(
                sql, parameters, limit=self._maxrec + 1, timeout=self._timeout,
                stop=self._stop, tables=self._tables | dict(tables or {})))
            first = next(stream.batches, None)
        stream.batches = itertools.chain([first] if first is not None else [], stream.batches)
        return stream

    def read(self, sql: str, parameters: Sequence | Mapping | None = None,
             tables: Mapping[str, pa.Table] | None = None) -> pa.Table:
        """Every row of the query at once, for a plan that looks at rows before serving them."""
        with query_errors(self._timeout), archive().backend.stream(
                sql, parameters, timeout=self._timeout, stop=self._stop,
                tables=self._tables | dict(tables or {})) as result:
            return pa.Table.from_batches(list(result.batches), schema=result.schema)


# --- the pipeline -----------------------------------------------------------------------------

@dataclass(frozen=True)
class DalQuery:
    """What a protocol makes of a request: how to find the rows, and how to write them.

    ``columns`` gives, for each result column in order, the published column it shows (None
    for a computed value); ``tables`` are visible to every SQL statement of the plan (uploads);
    ``infos`` go into a VOTable result as INFO elements (name, value), and ``descriptors``
    after its table (the services a row leads to, their URLs relative to the service root).
    """

    plan: Plan
    output: OutputFormat
    columns: Sequence[Column | None]
    maxrec: int
    tables: Mapping[str, pa.Table] = field(default_factory=dict)
    infos: tuple[tuple[str, str], ...] = ()
    descriptors: tuple[ServiceDescriptor, ...] = ()


@dataclass
class Answer:
    """A query's result on its way out: the MIME type, and the document piece by piece.

    ``failure()`` says, once the pieces are read, whether the query failed while they were
    written (the document then ends early, with an error INFO for VOTable).
    """

    mimetype: str
    chunks: Iterator[bytes]
    failure: Callable[[], QueryError | None]


def execute(query: DalQuery, timeout: float, service_url: str,
            stop: threading.Event | None = None) -> Answer:
    """Run ``query``'s plan and start writing its rows; the query is closed once the pieces
    are read, however the reader stops. Access URLs go out absolute, under ``service_url``
    (the service's base URL for the request that asked).

    Raises :class:`DaliError` for anything wrong before the first byte is written.
    """
    stack = contextlib.ExitStack()
    try:
        found = query.plan.run(Executor(stack, query.maxrec, timeout, stop, query.tables))
    except BaseException:
        stack.close()
        raise
    rows = CappedRows(absolute_access_urls(found.stream, query.columns, service_url), query.maxrec,
                      query.infos + found.infos,
                      tuple(d.under(service_url) for d in query.descriptors))
    return Answer(query.output.mime, _closing(query.output.writer(rows, query.columns), stack),
                  lambda: rows.failure)


def _closing(chunks: Iterator[bytes], stack: contextlib.ExitStack) -> Iterator[bytes]:
    """``chunks``, then the query closed, however the reader stops (a client may hang up)."""
    with stack:
        yield from chunks


def serve(parse: Callable[[DaliParameters], DalQuery]) -> Response:
    """The response of a synchronous DAL request: the protocol parses the parameters, the
    pipeline runs the query under the service's time limit and streams the rows."""
    answer = execute(parse(request_parameters()), settings().query_timeout, base_url())
    return Response(answer.chunks, mimetype=answer.mimetype)


# --- errors -----------------------------------------------------------------------------------

def dali_error_response(error: DaliError) -> Response:
    return Response(error_votable(error.message), status=error.status, mimetype=VOTABLE_MIME)


def install_error_handlers(app: Flask) -> None:
    """Every refusal as a DALI error document: a :class:`DaliError` with its status, an
    unknown route or method under a DAL endpoint as 404 or 405, and anything unexpected as
    a 500 whose cause goes to the log."""
    app.register_error_handler(DaliError, dali_error_response)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)


def _http_error(error: HTTPException) -> Response | HTTPException:
    if not request.path.startswith(DAL_PATHS) or error.code is None or error.code < 400:
        return error
    response = dali_error_response(DaliError(
        f"{request.method} {request.path}: {error.description}", error.code))
    if error.code == 405:
        response.headers["Allow"] = error.get_response().headers.get("Allow", "")
    return response


def _unexpected(error: Exception) -> Response:
    log.exception("%s %s failed", request.method, request.path, exc_info=error)
    return dali_error_response(DaliError(
        "internal error while answering the request; the service log has the details", 500))
