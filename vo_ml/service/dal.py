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
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa
from flask import Response, current_app, request

from vo_ml.archive.backend import QueryError, QueryResult, QueryTimeout, ResultStream
from vo_ml.service import archive
from vo_ml.service.dali import DaliError, DaliParameters, parse_maxrec
from vo_ml.service.votable import VOTABLE_MIME, error_votable

__all__ = ["answer", "respond", "dali_error_response", "request_parameters", "request_part", "maxrec_of",
           "run_limited", "query_errors", "TimeLimitError", "Executor", "Found", "Plan", "SqlPlan"]

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
    """One SQL statement whose rows are the answer."""

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
