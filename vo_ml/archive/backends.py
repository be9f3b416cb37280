"""The archive backends by name, and the one function that opens an archive.

An archive is named by a path (a DuckDB file) or a URL whose scheme names its backend
(``duckdb:///data/archive.duckdb``; ``postgresql://...`` once there is a PostgreSQL backend).
Everything outside :mod:`vo_ml.archive` opens archives here and talks to the
:class:`~vo_ml.archive.backend.Backend` it gets, never to an implementation.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from vo_ml.archive.backend import Backend
from vo_ml.archive.duckdb_backend import DuckDBBackend

__all__ = ["BACKENDS", "backend_type", "open_backend"]

#: Backend name -> its implementation.
BACKENDS: Mapping[str, type[Backend]] = MappingProxyType({"duckdb": DuckDBBackend})


def backend_type(name: str) -> type[Backend]:
    """The implementation of the backend called ``name`` (a key of :data:`BACKENDS`)."""
    if name not in BACKENDS:
        raise ValueError(f"no archive backend called {name!r} (known: {', '.join(BACKENDS)})")
    return BACKENDS[name]


def open_backend(db: str | Path, read_only: bool = False) -> Backend:
    """The archive at ``db``, a path or a URL. ``read_only`` opens it to be read from many
    threads at once, as the service does; otherwise one thread may write."""
    scheme, separator, rest = str(db).partition("://")
    if not separator:
        return DuckDBBackend(db, read_only=read_only)
    return backend_type(scheme)(rest if scheme == "duckdb" else str(db), read_only=read_only)
