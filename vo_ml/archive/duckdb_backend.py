"""The embedded default archive: one DuckDB file.

The service attaches the file read-only and runs every statement on a cursor of its own on one
shared connection, which DuckDB makes safe across threads (the connection itself serves one
statement at a time: a second thread's gets "connection is busy"). Writers (ingest, embed)
open it read-write; a DuckDB file has one writer process at a time, so serve after writing, or
serve from PostgreSQL.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import duckdb
import numpy as np
import psutil
import pyarrow as pa

from vo_ml.archive import sphere
from vo_ml.archive.backend import (
    INTERNAL_SCHEMA,
    ArchiveInUse,
    Backend,
    MlColumns,
    QueryError,
    QueryStopped,
    QueryTimeout,
    ResultStream,
    derived_columns,
)
from vo_ml.archive.tap_schema import Column, Schema, Table, TapSchema, tap_schema_rows

__all__ = ["DuckDBBackend"]

log = logging.getLogger(__name__)

TAP_SCHEMA = "TAP_SCHEMA"
#: The ObsCore view, and the columns a table needs to appear in it.
OBSCORE_VIEW = "ivoa.obscore"
OBSCORE_MARKERS = ("obs_publisher_did", "dataproduct_type", "calib_level")
#: Rows per Arrow batch a query streams. Small batches keep a streamed result's memory low and
#: stay in the CPU caches: writing 1M rows of benchmarks/tap.py's table as BINARY2 in-process
#: peaked at +9 MB at 1.5M rows/s with 8192 rows, at +170 MB and 0.8M rows/s with 65536.
ROWS_PER_BATCH = 8192
#: The archive file is attached under this name, so a file called like a schema (miles.duckdb
#: holding schema miles) never makes ``miles.spectra`` ambiguous.
CATALOG = "vo_ml_archive"

_INTERNAL_TABLES = f"""
CREATE SCHEMA IF NOT EXISTS {INTERNAL_SCHEMA};
CREATE TABLE IF NOT EXISTS {INTERNAL_SCHEMA}.ingested (
    checksum VARCHAR, path VARCHAR, obs_publisher_did VARCHAR, table_name VARCHAR,
    ingested_at TIMESTAMP DEFAULT current_timestamp, PRIMARY KEY (checksum, table_name));
CREATE TABLE IF NOT EXISTS {INTERNAL_SCHEMA}.ingest_report (
    path VARCHAR, checksum VARCHAR, reason VARCHAR, reported_at TIMESTAMP DEFAULT current_timestamp);
CREATE TABLE IF NOT EXISTS {INTERNAL_SCHEMA}.models (
    table_name VARCHAR PRIMARY KEY, model_id VARCHAR, latent_dim INTEGER, card JSON);
"""


class DuckDBBackend(Backend):
    """An archive in one DuckDB file (or in memory with ``":memory:"``)."""

    #: DuckDB's row ids are stable while a table is not written, and order its rows.
    row_id = "rowid"

    def __init__(self, path: str | Path, read_only: bool = False) -> None:
        self.path = str(path)
        if read_only and not Path(self.path).exists():
            raise FileNotFoundError(
                f"no archive database at {self.path}: build one with 'vo-ml ingest' or 'vo-ml demo'"
            )
        self._connection = duckdb.connect(":memory:")
        mode = " (READ_ONLY)" if read_only else ""
        try:
            self._connection.execute(f"ATTACH ? AS {CATALOG}{mode}", [self.path])
            self._connection.execute(f"USE {CATALOG}")
        except duckdb.Error as error:
            self._connection.close()
            holder = _LOCK_HOLDER.search(str(error))
            if holder is None:
                raise
            pid = int(holder.group(1))
            raise ArchiveInUse(str(Path(self.path).resolve()), pid, _process(pid)) from None
        if not read_only:
            self._connection.execute(_INTERNAL_TABLES)
        _register_sphere_functions(self._connection)

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor of its own for one thread (one request), on the archive catalog."""
        cursor = self._connection.cursor()
        cursor.execute(f"USE {CATALOG}")
        return cursor

    def _read(self, sql: str, parameters: Sequence = ()) -> list[tuple]:
        """All rows of ``sql`` read on a cursor of its own: the connection itself is busy while
        any other thread runs a statement on it, and a service reads from many threads at once."""
        with contextlib.closing(self.cursor()) as cursor:
            return cursor.execute(sql, parameters).fetchall()

    def lookup(self, sql: str, parameters: Sequence) -> list[tuple]:
        try:
            return self._read(sql, parameters)
        except _QUERY_FAULTS as error:
            raise QueryError(str(error).splitlines()[0]) from None

    def close(self) -> None:
        self._connection.close()

    def rows_hash(self, values: Sequence[str]) -> str:
        return f"coalesce(sum(hash({', '.join(values)})), 0)"

    def ensure_table(self, table: Table, columns: Sequence[Column]) -> None:
        schema, name = table.name.split(".")
        definitions = ", ".join(f'"{c.sql_name}" {c.sql_type}' for c in columns)
        self._connection.execute(
            f'CREATE SCHEMA IF NOT EXISTS "{schema}"; '
            f'CREATE TABLE IF NOT EXISTS "{schema}"."{name}" ({definitions})'
        )

    def table_columns(self, table_name: str) -> list[str]:
        schema, name = table_name.split(".")
        return [r[0] for r in self._read(_COLUMNS_OF_TABLE, [schema, name])]

    def insert_rows(self, table: Table, rows: Sequence[dict], ingested: Sequence[tuple]) -> None:
        if not rows:
            return
        names = list(dict.fromkeys(name for row in rows for name in row))
        quoted = ", ".join(f'"{n}"' for n in names)
        marks = ", ".join("?" for _ in names)
        with _transaction(self._connection) as connection:
            connection.executemany(
                f"INSERT INTO {_quoted(table.name)} ({quoted}) VALUES ({marks})",
                [[row.get(n) for n in names] for row in rows],
            )
            if ingested:  # rows need not come from files (DuckDB refuses an empty executemany)
                connection.executemany(
                    f"INSERT INTO {INTERNAL_SCHEMA}.ingested (path, checksum, obs_publisher_did, "
                    "table_name) VALUES (?, ?, ?, ?)",
                    [[path, checksum, did, table.name] for path, checksum, did in ingested],
                )

    def ingested_checksums(self, table_name: str) -> set[str]:
        return {r[0] for r in self._read(
            f"SELECT checksum FROM {INTERNAL_SCHEMA}.ingested WHERE table_name = ?", [table_name])}

    def ingested_dids(self, table_name: str) -> set[str]:
        return {r[0] for r in self._read(
            f"SELECT obs_publisher_did FROM {INTERNAL_SCHEMA}.ingested WHERE table_name = ?",
            [table_name])}

    def ingested_sources(self, dids: Sequence[str]) -> dict[str, tuple[str, str]]:
        rows = self._read(f"SELECT obs_publisher_did, path, table_name FROM {INTERNAL_SCHEMA}.ingested "
                          "WHERE obs_publisher_did IN (SELECT unnest(?::VARCHAR[]))", [list(dids)])
        return {did: (path, table) for did, path, table in rows}

    def record_failures(self, failures: Sequence[tuple[str, str | None, str]]) -> None:
        """Keep one report line per file: the latest reason it failed."""
        if not failures:
            return
        with _transaction(self._connection) as connection:
            connection.executemany(f"DELETE FROM {INTERNAL_SCHEMA}.ingest_report WHERE path = ?",
                                   [[path] for path, _, _ in failures])
            connection.executemany(
                f"INSERT INTO {INTERNAL_SCHEMA}.ingest_report (path, checksum, reason) "
                "VALUES (?, ?, ?)",
                [list(f) for f in failures],
            )

    def write_ml_columns(self, table: Table, ml: MlColumns) -> None:
        """Load the values into a scratch table, then swap the columns in one transaction; the
        derived columns of the model they replace go with it."""
        values = pa.table({
            "embedding": pa.FixedSizeListArray.from_arrays(
                pa.array(np.ascontiguousarray(ml.embedding, dtype=np.float32).ravel()),
                ml.latent_dim),
            "ml_x": pa.array(ml.map_xy[:, 0].astype(np.float64)),
            "ml_y": pa.array(ml.map_xy[:, 1].astype(np.float64)),
            "ml_recon_error": pa.array(ml.recon_error.astype(np.float64)),
            "ml_model": pa.array([ml.model_id] * len(ml.dids), type=pa.string()),
        })
        sized = table.with_values(latent_dim=ml.latent_dim)
        with _transaction(self._connection) as connection:
            self._swap_columns(connection, sized, ml.dids, values, drop=derived_columns(
                self.table_columns(table.name)))
            connection.execute(
                f"INSERT OR REPLACE INTO {INTERNAL_SCHEMA}.models VALUES (?, ?, ?, ?)",
                [table.name, ml.model_id, ml.latent_dim, json.dumps(ml.card)],
            )

    def write_derived_columns(self, table: Table, dids: Sequence[str], values: pa.Table,
                              model_id: str) -> None:
        with _transaction(self._connection) as connection:
            current = connection.execute(
                f"SELECT model_id FROM {INTERNAL_SCHEMA}.models WHERE table_name = ?",
                [table.name]).fetchall()
            if not current or current[0][0] != model_id:
                raise ValueError(f"{table.name} was embedded by another model than {model_id} "
                                 "since these values were computed; compute them again")
            self._swap_columns(connection, table, dids, values)

    @staticmethod
    def _swap_columns(connection: duckdb.DuckDBPyConnection, table: Table, dids: Sequence[str],
                      values: pa.Table, drop: Sequence[str] = ()) -> None:
        """Replace (or add) the columns of ``values`` with the rows' values by publisher DID, as
        ``table`` declares them, and drop the columns ``drop`` names, inside the caller's
        transaction."""
        target = _quoted(table.name)
        keyed = values.add_column(0, "did", pa.array(list(dids), type=pa.string()))
        with _registered(connection, "column_values", keyed), _indexes_set_aside(connection,
                                                                                 table.name):
            existing = {r[0] for r in connection.execute(
                _COLUMNS_OF_TABLE, table.name.split(".")).fetchall()}
            for name in {*values.column_names, *drop} & existing:
                connection.execute(f'ALTER TABLE {target} DROP COLUMN "{name}"')
            for name in values.column_names:
                column = table.column(name)
                if column is None:
                    raise ValueError(f"{table.name} declares no column {name} in its tap_schema "
                                     "files; add it there (see tap_schema/tag_columns.yaml)")
                connection.execute(f'ALTER TABLE {target} ADD COLUMN "{name}" {column.sql_type}')
            assignments = ", ".join(f'"{name}" = v."{name}"' + (
                f"::{table.column(name).sql_type}" if table.column(name).is_array else "")
                for name in values.column_names)
            connection.execute(f"UPDATE {target} AS t SET {assignments} FROM column_values AS v "
                               "WHERE t.obs_publisher_did = v.did")

    def current_model(self, table_name: str) -> dict | None:
        rows = self._read(f"SELECT card FROM {INTERNAL_SCHEMA}.models WHERE table_name = ?",
                          [table_name])
        return json.loads(rows[0][0]) if rows else None

    def publish_tap_schema(self, schema: TapSchema) -> TapSchema:
        obscore = schema.table(OBSCORE_VIEW)
        if obscore is not None:
            self._create_obscore_view(obscore, schema)
        published = self._as_published(schema)
        self._index_columns(published)
        rows = tap_schema_rows(published)
        definitions = {t.name.split(".")[1]: t for t in published.schemas[-1].tables}
        with _transaction(self._connection) as connection:
            connection.execute(f'CREATE SCHEMA IF NOT EXISTS "{TAP_SCHEMA}"')
            for name, table in definitions.items():
                columns = ", ".join(f'"{c.sql_name}" {c.sql_type}' for c in table.columns)
                connection.execute(f'CREATE OR REPLACE TABLE "{TAP_SCHEMA}"."{name}" ({columns})')
                if rows[name]:
                    marks = ", ".join("?" for _ in table.columns)
                    connection.executemany(
                        f'INSERT INTO "{TAP_SCHEMA}"."{name}" VALUES ({marks})', rows[name])
        return published

    def _index_columns(self, schema: TapSchema) -> None:
        """An index on every column published as indexed, so that TAP_SCHEMA's ``indexed`` is
        true: above all the keys ml_distance looks its reference rows up by, which a scan of a
        HARPS-sized table would otherwise read in full for every similarity query."""
        tables = {name.lower() for (name,) in self._connection.execute(
            "SELECT schema_name || '.' || table_name FROM duckdb_tables() "
            "WHERE database_name = current_database()").fetchall()}
        with _transaction(self._connection) as connection:
            for table in schema.tables.values():
                if table.name.lower() not in tables:
                    continue
                name = table.name.split(".")[1]
                for column in (c for c in table.columns if c.indexed):
                    # The lengths keep the names of (a_b, c) and (a, b_c) apart.
                    index = f"vo_ml_{len(name)}_{name}_{len(column.sql_name)}_{column.sql_name}"
                    connection.execute(f'CREATE INDEX IF NOT EXISTS "{index}" '
                                       f'ON {_quoted(table.name)} ("{column.sql_name}")')

    def _create_obscore_view(self, view: Table, schema: TapSchema) -> None:
        """``ivoa.obscore`` as the union of every table with ObsCore columns (none: no view)."""
        constants = dict(view.constants)
        selects = []
        for table in schema.tables.values():
            existing = set(self.table_columns(table.name))
            if table.name == view.name or not set(OBSCORE_MARKERS) <= existing:
                continue
            items = ", ".join(
                f'CAST({_view_value(c, existing, constants)} AS {c.sql_type}) AS "{c.sql_name}"'
                for c in view.columns)
            selects.append(f"SELECT {items} FROM {_quoted(table.name)}")
        schema_name, name = view.name.split(".")
        with _transaction(self._connection) as connection:
            connection.execute(f'DROP VIEW IF EXISTS "{schema_name}"."{name}"')
            if selects:
                connection.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema_name}"')
                connection.execute(f'CREATE VIEW "{schema_name}"."{name}" AS '
                                   + " UNION ALL ".join(selects))

    def _as_published(self, schema: TapSchema) -> TapSchema:
        """Keep tables and columns that exist, TAP_SCHEMA last; fill in each table's model."""
        schemas = []
        tap = None
        for s in schema.schemas:
            if s.name.upper() == TAP_SCHEMA:
                tap = s
                continue
            tables = tuple(self._existing_part(t) for t in s.tables if self.table_columns(t.name))
            if tables:
                schemas.append(Schema(s.name, s.description, tables))
        if tap is None:
            raise ValueError("the tap_schema files do not describe TAP_SCHEMA itself")
        return TapSchema([*schemas, tap])

    def _existing_part(self, table: Table) -> Table:
        existing = set(self.table_columns(table.name))
        card = self.current_model(table.name) or {}
        filled = table.with_values(
            model=card.get("model_id", "(none yet)"), latent_dim=card.get("latent_dim", "*"))
        return replace(filled, columns=tuple(c for c in filled.columns if c.sql_name.lower() in existing))

    def read_tap_schema(self) -> TapSchema:
        """The schema as published in the TAP_SCHEMA tables: what the service may expose."""
        with contextlib.closing(self.cursor()) as cursor:
            schema_rows = cursor.execute(
                f'SELECT schema_name, description FROM "{TAP_SCHEMA}".schemas ORDER BY schema_index'
            ).fetchall()
            table_rows = cursor.execute(
                f'SELECT schema_name, table_name, description, table_type FROM "{TAP_SCHEMA}".tables '
                "ORDER BY table_index").fetchall()
            column_rows = cursor.execute(
                f'SELECT table_name, column_name, datatype, description, arraysize, xtype, unit, ucd, '
                f'utype, principal, indexed, std FROM "{TAP_SCHEMA}".columns ORDER BY column_index'
            ).fetchall()
        columns: dict[str, list[Column]] = {}
        for row in column_rows:
            columns.setdefault(row[0], []).append(Column(
                *row[1:9], principal=bool(row[9]), indexed=bool(row[10]), std=bool(row[11])))
        return TapSchema([
            Schema(s_name, s_description, tuple(
                Table(t_schema, t_name, t_description, tuple(columns.get(t_name, [])), t_type)
                for t_schema, t_name, t_description, t_type in table_rows if t_schema == s_name))
            for s_name, s_description in schema_rows
        ])

    @contextlib.contextmanager
    def stream(
        self, sql: str, parameters: Sequence | Mapping | None = None, limit: int | None = None,
        timeout: float | None = None, stop: threading.Event | None = None,
        tables: Mapping[str, pa.Table] | None = None,
    ) -> Iterator[ResultStream]:
        cursor = self.cursor()
        watchdog = _Watchdog(cursor, timeout, stop)
        try:
            with _query_faults(watchdog):
                for name, table in (tables or {}).items():
                    cursor.register(name, table)
                reader = cursor.sql(sql, params=parameters or None).to_arrow_reader(ROWS_PER_BATCH)
            yield ResultStream(reader.schema, _limited(reader, limit, watchdog))
        finally:
            watchdog.finish()
            cursor.close()


#: The lower-cased column names of a table (schema and name as parameters), in order.
_COLUMNS_OF_TABLE = (
    "SELECT lower(column_name) FROM information_schema.columns "
    "WHERE lower(table_schema) = lower(?) AND lower(table_name) = lower(?) ORDER BY ordinal_position")

#: DuckDB's refusal to open a file another process has locked, with the process id it names.
_LOCK_HOLDER = re.compile(r"Could not set lock on file .*\(PID (\d+)\)")


def _process(pid: int) -> str:
    """``process <pid> (<its command line>)``, as far as the system still knows it."""
    try:
        command = " ".join(psutil.Process(pid).cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return f"process {pid}"
    return f"process {pid} ({command[:300]})"


#: DuckDB's refusals of a query itself, as opposed to faults of the database or the service.
_QUERY_FAULTS = (duckdb.BinderException, duckdb.ConversionException, duckdb.InvalidInputException,
                 duckdb.OutOfRangeException, duckdb.NotImplementedException, duckdb.ParserException,
                 duckdb.CatalogException)


def _register_sphere_functions(connection: duckdb.DuckDBPyConnection) -> None:
    """The spherical geometry ADQL's polygons need, for every cursor of the connection."""
    region = duckdb.list_type(duckdb.sqltype("DOUBLE"))
    for name, (function, arity, returns) in sphere.SQL_FUNCTIONS.items():
        connection.create_function(name, function, [region] * arity, duckdb.sqltype(returns),
                                   type="arrow", null_handling="special")


class _Watchdog:
    """Interrupts a cursor's query when its time runs out or ``stop`` is set, and says which.

    Every query's watchdog is checked by one thread of the process (:class:`_Watchdogs`):
    starting a thread for each query would cost more than a query on an index takes.
    """

    def __init__(self, cursor: duckdb.DuckDBPyConnection, timeout: float | None,
                 stop: threading.Event | None) -> None:
        self.cursor = cursor
        self.timeout = timeout
        self.stop = stop
        self.deadline = time.monotonic() + timeout if timeout else float("inf")
        self.fired: str | None = None
        if timeout or stop is not None:
            _WATCHDOGS.add(self)

    def finish(self) -> None:
        """The query is over: after this returns, it is never interrupted."""
        _WATCHDOGS.discard(self)

    def error(self) -> QueryError:
        if self.fired == "stop":
            return QueryStopped("stopped on request")
        return QueryTimeout(f"stopped after {self.timeout:g} s")


class _Watchdogs:
    """The watchdogs of the queries running in the process, and the thread that fires them."""

    POLL_SECONDS = 0.05

    def __init__(self) -> None:
        self._watched: set[_Watchdog] = set()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def add(self, watchdog: _Watchdog) -> None:
        with self._changed:
            self._watched.add(watchdog)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._watch, name="vo_ml-query-watchdog",
                                                daemon=True)
                self._thread.start()
            self._changed.notify()

    def discard(self, watchdog: _Watchdog) -> None:
        with self._changed:
            self._watched.discard(watchdog)

    def _watch(self) -> None:
        with self._changed:
            while True:
                now = time.monotonic()
                for watchdog in list(self._watched):
                    if watchdog.stop is not None and watchdog.stop.is_set():
                        watchdog.fired = "stop"
                    elif now >= watchdog.deadline:
                        watchdog.fired = "timeout"
                    else:
                        continue
                    self._watched.discard(watchdog)
                    self._interrupt(watchdog)
                self._changed.wait(self._next_check(now))

    @staticmethod
    def _interrupt(watchdog: _Watchdog) -> None:
        """Interrupt the query; its connection may be gone already (the backend closed), and
        that must not end the thread every other query's limit depends on."""
        try:
            watchdog.cursor.interrupt()
        except duckdb.Error as error:
            log.warning("could not interrupt a query past its %s: %s", watchdog.fired, error)

    def _next_check(self, now: float) -> float | None:
        """Seconds until a watchdog may fire: polling while any waits for a stop event."""
        waits = [w.deadline - now for w in self._watched]
        waits += [self.POLL_SECONDS for w in self._watched if w.stop is not None]
        return max(min(waits), 0.0) if waits else None


_WATCHDOGS = _Watchdogs()


@contextlib.contextmanager
def _query_faults(watchdog: _Watchdog) -> Iterator[None]:
    """DuckDB's refusals and interruptions as the backend's query errors."""
    try:
        yield
    except duckdb.InterruptException:
        raise watchdog.error() from None
    except _QUERY_FAULTS as error:
        if watchdog.fired:
            raise watchdog.error() from None
        raise QueryError(str(error).splitlines()[0]) from None


def _limited(reader: pa.RecordBatchReader, limit: int | None,
             watchdog: _Watchdog) -> Iterator[pa.RecordBatch]:
    """The reader's batches, cut at ``limit`` rows, with errors raised as query errors."""
    rows = 0
    with _query_faults(watchdog):
        for batch in reader:
            if limit is not None and rows + batch.num_rows >= limit:
                yield batch.slice(0, limit - rows)
                return
            rows += batch.num_rows
            yield batch


@contextlib.contextmanager
def _registered(connection: duckdb.DuckDBPyConnection, name: str, values: pa.Table) -> Iterator[None]:
    """``values`` visible to SQL as ``name`` for the block, and unregistered however it ends."""
    connection.register(name, values)
    try:
        yield
    finally:
        connection.unregister(name)


@contextlib.contextmanager
def _indexes_set_aside(connection: duckdb.DuckDBPyConnection, table_name: str) -> Iterator[None]:
    """The table's indexes dropped for the block and made again after it: DuckDB cannot drop
    a column of a table that has an index."""
    schema, name = table_name.split(".")
    indexes = connection.execute(
        "SELECT index_name, sql FROM duckdb_indexes() WHERE database_name = current_database() "
        "AND lower(schema_name) = lower(?) AND lower(table_name) = lower(?)",
        [schema, name]).fetchall()
    for index_name, _ in indexes:
        connection.execute(f'DROP INDEX "{schema}"."{index_name}"')
    yield
    for _, definition in indexes:
        connection.execute(definition)


class _transaction:
    """``with _transaction(connection):`` commits on success and rolls back on any error."""

    def __init__(self, connection: duckdb.DuckDBPyConnection) -> None:
        self.connection = connection

    def __enter__(self) -> duckdb.DuckDBPyConnection:
        self.connection.execute("BEGIN TRANSACTION")
        return self.connection

    def __exit__(self, kind: type | None, *_: object) -> None:
        self.connection.execute("COMMIT" if kind is None else "ROLLBACK")


def _view_value(column: Column, existing: set[str], constants: dict[str, str]) -> str:
    if column.sql_name.lower() in existing:
        return f'"{column.sql_name}"'
    return constants.get(column.sql_name, "NULL")


def _quoted(qualified: str) -> str:
    schema, name = qualified.split(".")
    return f'"{schema}"."{name}"'
