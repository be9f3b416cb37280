"""What every DAL protocol here shares (DALI 1.1): parameters, limits and errors.

Kept free of Flask globals, so sync requests, future UWS jobs and unit tests use the same code:
a request is a :class:`DaliParameters` mapping built from whatever carried it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["DaliError", "DaliParameters", "parse_maxrec"]

class DaliError(Exception):
    """A request the service must refuse, with the HTTP status DALI gives for it.

    ``status`` is 400 for a fault in the request (bad parameter, invalid query) and 500 for a
    fault of the service; the message goes to the client unchanged, so it must say what to do.
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class DaliParameters(dict):
    """Request parameters with case-insensitive names (DALI 1.1 section 3.1).

    Names are upper-cased; values stay as sent. A parameter given twice keeps its first value
    here, and all of them in :meth:`all` (``UPLOAD`` may be repeated).
    """

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        super().__init__()
        self._all: dict[str, list[str]] = {}
        for name, value in pairs:
            self.setdefault(name.upper(), value)
            self._all.setdefault(name.upper(), []).append(value)

    def all(self, name: str) -> list[str]:
        """Every value given for ``name``, in order."""
        return list(self._all.get(name.upper(), []))

    def pairs(self) -> list[tuple[str, str]]:
        """Every (name, value) given, repeated names included: what a job stores to run later."""
        return [(name, value) for name, values in self._all.items() for value in values]

    def required(self, name: str) -> str:
        value = self.get(name.upper(), "").strip()
        if not value:
            raise DaliError(f"missing parameter {name.upper()}: this request needs it")
        return value


def parse_maxrec(parameters: Mapping[str, str], default: int, hard_limit: int) -> int:
    """MAXREC as an int within the service's limit; absent means the default."""
    text = parameters.get("MAXREC")
    if text is None or not text.strip():
        return default
    try:
        value = int(text)
    except ValueError:
        raise DaliError(f"MAXREC={text!r} is not an integer: give a row count such as 1000") from None
    if value < 0:
        raise DaliError(f"MAXREC={value} is negative: give 0 or more")
    return min(value, hard_limit)
