"""Progress of long steps: a bar on a terminal, a few plain lines in a log.

tqdm redraws its bar with carriage returns; written to a file or a CI log, every redraw becomes
one more line (hundreds for one training run). So a bar is drawn only when stderr is a terminal.
Anywhere else a step logs plain lines on the ``vo_ml.progress`` logger: one each time another
tenth of the total is done (but not within ``QUIET_SECONDS`` of the last, so a short step says
only that it is done), one after ``LINE_SECONDS`` of little progress or with no total, and one
when the step ends, each with its counts (``train m: 120/600 epoch (20%), 24 s,
loss=1.2e-03``). Every progress display of the package comes from :func:`progress`.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Protocol, TypeVar

from dask.callbacks import Callback
from tqdm import tqdm

__all__ = ["LINE_SECONDS", "QUIET_SECONDS", "DaskProgress", "Progress", "progress", "tracked"]

#: The longest silence of a step logged as lines, when it advances by less than a tenth.
LINE_SECONDS = 30.0
#: The shortest time between two lines of a step, unless it ends.
QUIET_SECONDS = 5.0
log = logging.getLogger("vo_ml.progress")
Item = TypeVar("Item")


class Progress(Protocol):
    """What the package's steps do with a progress display, a bar or lines alike."""

    total: int | None
    n: int

    def update(self, n: int = 1) -> None: ...
    def set_postfix(self, **values: object) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> Progress: ...
    def __exit__(self, *exc: object) -> None: ...


def progress(total: int | None, desc: str, unit: str = "it", initial: int = 0,
             disable: bool = False) -> Progress:
    """A progress display of ``total`` steps counted in ``unit`` (``initial`` done already): a
    tqdm bar when stderr is a terminal, else lines logged as the module says."""
    if not disable and not _on_terminal():
        return _Lines(total, desc, unit, initial)
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=disable,
                mininterval=0.5, file=sys.stderr)


def tracked(items: Iterable[Item], desc: str, unit: str = "it", disable: bool = False
            ) -> Iterator[Item]:
    """``items``, one at a time, with their :func:`progress` (its total taken from ``len``)."""
    items = list(items)
    with progress(len(items), desc, unit, disable=disable) as bar:
        for item in items:
            yield item
            bar.update(1)


class DaskProgress(Callback):
    """Advance a progress display as Dask finishes each task of a computation on a local
    scheduler (threads, processes or in-process); without a total, the graph's task count."""

    def __init__(self, bar: Progress) -> None:
        super().__init__()
        self._bar = bar

    def _start_state(self, dsk: object, state: dict) -> None:
        if self._bar.total is None:
            self._bar.total = sum(len(state[k]) for k in ("ready", "waiting", "running", "finished"))

    def _posttask(self, key: object, result: object, dsk: object, state: object,
                  worker_id: object) -> None:
        self._bar.update(1)


def _on_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # no stderr, or a closed one
        return False


class _Lines:
    """A progress display as log lines (see the module docstring)."""

    def __init__(self, total: int | None, desc: str, unit: str, initial: int) -> None:
        self.total, self.n, self.desc, self.unit = total, initial, desc, unit
        self._started = self._said = time.monotonic()
        self._said_n = initial
        self._postfix = ""
        self._closed = False

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if self.total and self.n >= self.total:
            return  # closing says so
        tenth = self.total and (self.n - self._said_n) * 10 >= self.total
        if (tenth and now - self._said >= QUIET_SECONDS) or now - self._said >= LINE_SECONDS:
            self._say(now)

    def set_postfix(self, **values: object) -> None:
        self._postfix = ", ".join(f"{key}={value}" for key, value in values.items())

    def close(self, status: str = "done") -> None:
        if not self._closed:
            self._closed = True
            self._say(time.monotonic(), f"{status}, ")

    def __enter__(self) -> _Lines:
        return self

    def __exit__(self, error: type[BaseException] | None, *details: object) -> None:
        self.close("done" if error is None else "stopped")

    def _say(self, now: float, status: str = "") -> None:
        counts = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        share = f" ({100 * self.n // self.total}%)" if self.total else ""
        postfix = f", {self._postfix}" if self._postfix else ""
        log.info("%s: %s%s %s%s, %.0f s%s", self.desc, status, counts, self.unit, share,
                 now - self._started, postfix)
        self._said, self._said_n = now, self.n
