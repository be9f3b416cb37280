"""The TAP database behind a small interface, so DuckDB and PostgreSQL serve the same service.

Published tables hold only published columns; the pipeline's own bookkeeping (which files were
ingested, which failed and why, which model made the ML columns) lives in the ``vo_ml`` schema,
which TAP_SCHEMA never lists and ADQL therefore cannot reach.

Code outside this package opens an archive with :func:`vo_ml.archive.backends.open_backend`
and talks to :class:`Backend` only.
"""

from __future__ import annotations

import contextlib
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Self

import numpy as np
import pyarrow as pa

from vo_ml.archive.tap_schema import Column, Table, TapSchema

__all__ = ["Backend", "QueryResult", "QueryError", "QueryTimeout", "QueryStopped", "ResultStream",
           "arrow_to_masked", "MlColumns", "INTERNAL_SCHEMA", "ML_COLUMNS", "ArchiveInUse",
           "derived_columns"]

INTERNAL_SCHEMA = "vo_ml"

#: The columns `vo-ml embed` writes; they come and go together, whole, with each model.
ML_COLUMNS = ("embedding", "ml_x", "ml_y", "ml_recon_error", "ml_model")


def derived_columns(names: Iterable[str]) -> list[str]:
    """Of a table's column names, those computed from its model's ML columns (``vo-ml tag``
    writes them: ``ml_teff``, its bounds, ``ml_anomaly``...): every other ``ml_`` column. They
    are stale once another model embeds the table, which drops them."""
    return [name for name in names if name.lower().startswith("ml_") and name not in ML_COLUMNS]


class QueryError(ValueError):
    """The database refused a query it was given (a type mismatch, a division by zero...): the
    query's fault, not the service's, so clients get the database's own message."""


class QueryTimeout(QueryError):
    """A query ran past its time limit and was stopped."""


class QueryStopped(QueryError):
    """A query was stopped on request (an async job aborted or deleted while it ran)."""


class ArchiveInUse(RuntimeError):
    """Another process holds the archive in a way that excludes this one (a writer excludes
    everyone; readers exclude a writer). ``holder`` names the process ``pid``, so the user can act."""

    def __init__(self, path: str, pid: int, holder: str) -> None:
        super().__init__(f"the archive {path} is in use by {holder}")
        self.path = path
        self.pid = pid
        self.holder = holder


@dataclass
class QueryResult:
    """Column names and values (masked where NULL) of one query, in result order."""

    names: list[str]
    columns: list[np.ma.MaskedArray]

    def __len__(self) -> int:
        return len(self.columns[0]) if self.columns else 0

    def rows(self) -> list[tuple]:
        """The rows as tuples, with None for NULL."""
        return list(zip(*(_with_nones(c) for c in self.columns), strict=True))


def _with_nones(column: np.ma.MaskedArray) -> list:
    """Values as Python objects; a row masked in every element (a NULL array) becomes None."""
    null = np.ma.getmaskarray(column).reshape(len(column), -1).all(axis=1)
    return [None if masked else value
            for value, masked in zip(column.data.tolist(), null, strict=True)]


@dataclass
class ResultStream:
    """A query's result as it is read: the Arrow schema, then record batches one at a time."""

    schema: pa.Schema
    batches: Iterator[pa.RecordBatch]


def arrow_to_masked(column: pa.ChunkedArray | pa.Array) -> np.ma.MaskedArray:
    """One Arrow column as a masked numpy array; fixed-size lists become 2-D.

    Types VOTable has no datatype for are converted: decimals (SQL literals such as 1.5) to
    double, dates and times to ISO strings.
    """
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_null(array.type):
        return np.ma.masked_all(len(array), dtype=np.float64)
    if pa.types.is_decimal(array.type):
        array = array.cast(pa.float64())
    elif pa.types.is_temporal(array.type):
        array = array.cast(pa.string())
    mask = array.is_null().to_numpy(zero_copy_only=False)
    if pa.types.is_fixed_size_list(array.type):
        size = array.type.list_size
        values = np.zeros((len(array), size), dtype=array.type.value_type.to_pandas_dtype())
        values[~mask] = array.flatten().to_numpy(zero_copy_only=False).reshape(-1, size)
        return np.ma.MaskedArray(values, mask=np.repeat(mask[:, None], size, axis=1))
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        values = np.array(array.fill_null("").to_pylist(), dtype=str)
    else:
        values = array.fill_null(0).to_numpy(zero_copy_only=False) if array.null_count \
            else array.to_numpy(zero_copy_only=False)
    return np.ma.MaskedArray(values, mask=mask)


@dataclass
class MlColumns:
    """What one model computed for a set of rows, keyed by publisher DID."""

    model_id: str
    dids: Sequence[str]
    embedding: np.ndarray
    map_xy: np.ndarray
    recon_error: np.ndarray
    card: dict

    @property
    def latent_dim(self) -> int:
        return int(self.embedding.shape[1])


class Backend(ABC):
    """One archive database. Methods that write are atomic: readers see all of a change or none.

    Every method may be called from many threads at once on a backend opened read-only (the
    service's); one opened to write is used by one thread. A backend is a context manager that
    closes it.
    """

    #: SQL for a row's id in any table: a whole number that stays the row's while the archive
    #: is not written, and that orders the rows (the order the reference rule of
    #: :mod:`vo_ml.archive.references` takes the first row in). Neighbour indexes label rows
    #: with it.
    row_id: ClassVar[str]

    #: Where the archive is: the file of an embedded database, or the URL of a server.
    path: str

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @abstractmethod
    def rows_hash(self, values: Sequence[str]) -> str:
        """SQL of an aggregate over a table's rows: a whole number that changes when any row's
        ``values`` (SQL expressions) change, whatever order the rows are read in."""

    @abstractmethod
    def ensure_table(self, table: Table, columns: Sequence[Column]) -> None:
        """Create ``table`` with ``columns`` if it does not exist yet."""

    @abstractmethod
    def table_columns(self, table_name: str) -> list[str]:
        """Names of the columns the table has now, lower-cased; empty if it does not exist."""

    @abstractmethod
    def insert_rows(self, table: Table, rows: Sequence[dict], ingested: Sequence[tuple]) -> None:
        """Insert catalogue rows and record their source files (path, checksum, DID) together."""

    @abstractmethod
    def ingested_checksums(self, table_name: str) -> set[str]:
        """Checksums of every source file already ingested into ``table_name``."""

    @abstractmethod
    def ingested_dids(self, table_name: str) -> set[str]:
        """Publisher DIDs of the rows ingested into ``table_name``."""

    @abstractmethod
    def record_failures(self, failures: Sequence[tuple[str, str | None, str]]) -> None:
        """Record files that could not be ingested: (path, checksum or None, reason)."""

    @abstractmethod
    def write_ml_columns(self, table: Table, ml: MlColumns) -> None:
        """Replace the ML columns of ``table`` with the given model's values, in one transaction."""

    @abstractmethod
    def write_derived_columns(self, table: Table, dids: Sequence[str], values: pa.Table,
                              model_id: str) -> None:
        """Replace (or add) the columns of ``values``, declared by ``table``, with each row's
        value by publisher DID, in one transaction; refused (ValueError) unless ``model_id``
        still made the table's ML columns, which the values were computed from."""

    @abstractmethod
    def current_model(self, table_name: str) -> dict | None:
        """The model card of the model that made the table's ML columns, if any."""

    @abstractmethod
    def publish_tap_schema(self, schema: TapSchema) -> TapSchema:
        """Rewrite the TAP_SCHEMA tables; return the schema as published (existing columns only)."""

    @abstractmethod
    def stream(
        self, sql: str, parameters: Sequence | Mapping | None = None, limit: int | None = None,
        timeout: float | None = None, stop: threading.Event | None = None,
        tables: Mapping[str, pa.Table] | None = None,
    ) -> contextlib.AbstractContextManager[ResultStream]:
        """Run one query; the context yields its rows as Arrow batches, ``limit`` rows at most.

        The query is stopped with :class:`QueryTimeout` when it (reading included) runs longer
        than ``timeout`` seconds, and with :class:`QueryStopped` as soon as ``stop`` is set.
        ``tables`` are visible to this query alone under their names (TAP uploads).
        """

    def execute(
        self, sql: str, parameters: Sequence | Mapping | None = None, limit: int | None = None,
        timeout: float | None = None, stop: threading.Event | None = None,
        tables: Mapping[str, pa.Table] | None = None,
    ) -> QueryResult:
        """All rows of :meth:`stream` at once, as masked numpy columns."""
        with self.stream(sql, parameters, limit, timeout, stop, tables) as result:
            table = pa.Table.from_batches(list(result.batches), schema=result.schema)
        return QueryResult(table.column_names, [arrow_to_masked(c) for c in table.columns])

    @abstractmethod
    def lookup(self, sql: str, parameters: Sequence) -> list[tuple]:
        """All rows of a query that reads a few rows by an index, as tuples (None for NULL):
        no streaming, time limit or Arrow, whose set-up would cost more than such a query."""

    def ingested_source(self, did: str) -> tuple[str, str] | None:
        """(path, table name) of the file a publisher DID was ingested from, or None if unknown.

        The service serves original files only through this lookup, so no request can name a path.
        """
        return self.ingested_sources([did]).get(did)

    @abstractmethod
    def ingested_sources(self, dids: Sequence[str]) -> dict[str, tuple[str, str]]:
        """:meth:`ingested_source` of many DIDs in one lookup; unknown DIDs are left out."""

    @abstractmethod
    def read_tap_schema(self) -> TapSchema:
        """The schema as published in the TAP_SCHEMA tables: what the service may expose."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection."""
