"""One line per HTTP request on the ``vo_ml.access`` logger: the Combined Log Format that web
servers write (and log analysers read), plus the seconds the request took.

The line is written when the response has been sent whole, as results are streamed: a large
query's time is its rows' time too, and a client that hangs up mid-stream still gets its line.
It sits around the Flask app as WSGI middleware, so every route, error and static answer
passes it once, whichever server runs the app.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from urllib.parse import quote

__all__ = ["AccessLog"]

log = logging.getLogger("vo_ml.access")

WsgiApp = Callable[[dict, Callable], Iterable[bytes]]


class AccessLog:
    """WSGI middleware logging each request of ``app`` as it ends."""

    def __init__(self, app: WsgiApp) -> None:
        self.app = app

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        started = time.perf_counter()
        status = ["-"]

        def recording(status_line: str, headers: list, exc_info: object = None) -> Callable:
            status[0] = status_line.split(" ", 1)[0]
            return start_response(status_line, headers, exc_info)

        try:
            body = self.app(environ, recording)
        except BaseException:
            _log(environ, "500", 0, started)
            raise
        return _Body(body, lambda size: _log(environ, status[0], size, started))


class _Body:
    """The response body, passed on unchanged, counting its bytes; closing it logs the line."""

    def __init__(self, body: Iterable[bytes], done: Callable[[int], None]) -> None:
        self._body, self._done, self._size = body, done, 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._body:
            self._size += len(chunk)
            yield chunk

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._done(self._size)


def _log(environ: dict, status: str, size: int, started: float) -> None:
    path = quote(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""))
    query = environ.get("QUERY_STRING")
    request = (f"{environ.get('REQUEST_METHOD', '-')} {path}{'?' + query if query else ''} "
               f"{environ.get('SERVER_PROTOCOL', '-')}")
    log.info('%s - %s [%s] "%s" %s %s "%s" "%s" %.3f', environ.get("REMOTE_ADDR", "-"),
             environ.get("REMOTE_USER") or "-", time.strftime("%d/%b/%Y:%H:%M:%S %z"), request,
             status, size or "-", environ.get("HTTP_REFERER", "-"),
             environ.get("HTTP_USER_AGENT", "-"), time.perf_counter() - started)
