"""The TAP database behind a small interface, so DuckDB and PostgreSQL serve the same service.

Published tables hold only published columns; the pipeline's own bookkeeping (which files were
ingested, which failed and why, which model made the ML columns) lives in the ``vo_ml`` schema,
which TAP_SCHEMA never lists and ADQL therefore cannot reach.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vo_ml.archive.tap_schema import Column, Table, TapSchema

__all__ = ["Backend", "QueryResult", "QueryError", "MlColumns", "INTERNAL_SCHEMA", "ML_COLUMNS"]

INTERNAL_SCHEMA = "vo_ml"

#: The columns `vo-ml embed` writes; they come and go together, whole, with each model.
ML_COLUMNS = ("embedding", "ml_x", "ml_y", "ml_recon_error", "ml_model")


class QueryError(ValueError):
    """The database refused a query it was given (a type mismatch, a division by zero...): the
    query's fault, not the service's, so clients get the database's own message."""


class QueryTimeout(QueryError):
    """A query ran past its time limit and was stopped."""


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
    """One archive database. Methods that write are atomic: readers see all of a change or none."""

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
    def current_model(self, table_name: str) -> dict | None:
        """The model card of the model that made the table's ML columns, if any."""

    @abstractmethod
    def publish_tap_schema(self, schema: TapSchema) -> TapSchema:
        """Rewrite the TAP_SCHEMA tables; return the schema as published (existing columns only)."""

    @abstractmethod
    def execute(
        self, sql: str, parameters: Sequence | None = None, limit: int | None = None,
        timeout: float | None = None,
    ) -> QueryResult:
        """Run one query and return its rows, at most ``limit`` of them when given; stop it with
        :class:`QueryTimeout` when it runs longer than ``timeout`` seconds."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection."""
