"""The TAP service against the same work done directly: DuckDB plus astropy's VOTable writer.

    python benchmarks/tap.py [--rows 1000000] [--repeats 200] [--workdir DIR]

One archive is built in the work folder: a table ``bench.sources`` of ``--rows`` generated rows
(id, ra, dec, name, mag, flag and a 16-d float embedding), published in TAP_SCHEMA with its id
indexed. `vo-ml serve` runs on it in its own process. For each measurement the baseline is the
same SQL run on a DuckDB connection of this process and written as BINARY2 with astropy:

- latency: a ``TOP 100`` query on the indexed column, p50/p95 over ``--repeats`` requests on
  one keep-alive connection (sync GET), against the direct path; the difference of the p50s is
  the service's overhead per query;
- throughput: requests/s with 8 concurrent clients, each on its own connection, against 8
  threads running the direct path;
- streaming: a 1M-row BINARY2 result read over HTTP in rows/s, against the direct path (which
  must hold the whole table and document in memory), with the server's peak resident memory
  above its idle level, for 1M rows and for 100k rows: flat means the two are alike. A first
  1M-row read, not counted, fills DuckDB's buffer cache with the table (about 250 MB, kept
  and shared by later queries, so not memory a result holds).

All servers listen on 127.0.0.1 and are stopped by process id.
"""

from __future__ import annotations

import argparse
import io
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import numpy as np
import psutil
import pyarrow as pa
import requests
from astropy.io.votable import from_table
from astropy.table import Table as AstropyTable
from served import percentile, server_process

from vo_ml.archive import tap_schema
from vo_ml.archive.duckdb_backend import DuckDBBackend
from vo_ml.archive.tap_schema import Column, Schema, Table, TapSchema

CLIENTS = 8

BENCH_TABLE = Table("bench", "bench.sources", "generated rows for the TAP benchmark", (
    Column("id", "long", "row number", indexed=True, principal=True, ucd="meta.id;meta.main"),
    Column("ra", "double", "right ascension", unit="deg", ucd="pos.eq.ra"),
    Column("dec", "double", "declination", unit="deg", ucd="pos.eq.dec"),
    Column("name", "char", "source name", arraysize="*", ucd="meta.id"),
    Column("mag", "float", "magnitude", unit="mag", ucd="phot.mag"),
    Column("flag", "boolean", "quality flag", ucd="meta.code"),
    Column("embedding", "float", "latent vector", arraysize="16", ucd="src.class;stat.fit.param"),
))


def build_archive(folder: Path, rows: int) -> Path:
    db = folder / "tap_benchmark.duckdb"
    if db.exists():
        return db
    backend = DuckDBBackend(db)
    backend.ensure_table(BENCH_TABLE, BENCH_TABLE.columns)
    backend._connection.execute(
        "INSERT INTO bench.sources SELECT i, random() * 360, random() * 180 - 90, "
        "'src-' || i::VARCHAR, (10 + random() * 10)::FLOAT, i % 7 = 0, "
        "[random()::FLOAT for _ in range(16)]::FLOAT[16] FROM range(?) AS t(i)", [rows])
    backend._connection.execute("CREATE INDEX sources_id ON bench.sources (id)")
    published = tap_schema.load()
    backend.publish_tap_schema(TapSchema([Schema("bench", "benchmark rows", (BENCH_TABLE,)),
                                          *published.schemas]))
    backend.close()
    return db


def latency_queries(rows: int) -> tuple[str, str]:
    """The TOP 100 on the indexed id from the middle of the table (id 500000 at the default
    size), as ADQL for the service and as SQL for the direct path. A fixed start past the end
    of a smaller table would give no rows, which astropy cannot write."""
    columns, where = "id, ra, dec, name, mag", f"WHERE id >= {rows // 2} ORDER BY id"
    return (f"SELECT TOP 100 {columns} FROM bench.sources {where}",
            f"SELECT {columns} FROM bench.sources {where} LIMIT 100")


def direct_votable(connection: duckdb.DuckDBPyConnection, sql: str) -> bytes:
    """The baseline: the SQL on DuckDB, the rows written as a BINARY2 VOTable by astropy."""
    arrow = connection.sql(sql).to_arrow_table()
    table = AstropyTable({name: _numpy(arrow.column(name)) for name in arrow.column_names})
    buffer = io.BytesIO()
    from_table(table).to_xml(buffer, tabledata_format="binary2")
    return buffer.getvalue()


def _numpy(column: pa.ChunkedArray) -> np.ndarray:
    array = column.combine_chunks()
    if pa.types.is_fixed_size_list(array.type):
        return array.flatten().to_numpy().reshape(len(array), array.type.list_size)
    return array.to_numpy(zero_copy_only=False)


def direct_streaming(db: Path, rows: int) -> tuple[float, float]:
    """(rows/s, peak RSS increase in MB) of the direct path, in a fresh process of this script."""
    output = subprocess.run([sys.executable, __file__, "--direct", str(db), str(rows)],
                            capture_output=True, text=True, check=True).stdout.split()
    return float(output[0]), float(output[1])


def _direct_process(db: str, rows: int) -> None:
    connection = duckdb.connect(db, read_only=True)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    direct_votable(connection, f"SELECT * FROM bench.sources LIMIT {rows}")
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(rows / elapsed, (peak - base) / 1024)


def latency(root: str, db: Path, repeats: int, queries: tuple[str, str]) -> None:
    query, sql = queries
    session = requests.Session()
    params = {"LANG": "ADQL", "QUERY": query}
    connection = duckdb.connect(str(db), read_only=True)
    for _ in range(10):
        session.get(f"{root}/tap/sync", params=params).raise_for_status()
        direct_votable(connection, sql)
    service, direct = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        response = session.get(f"{root}/tap/sync", params=params)
        service.append(time.perf_counter() - started)
        assert response.status_code == 200 and response.content.count(b"<FIELD") == 5
        started = time.perf_counter()
        direct_votable(connection, sql)
        direct.append(time.perf_counter() - started)
    ms = 1000
    print(f"TOP 100 on the indexed id, {repeats} requests:")
    print(f"  direct (DuckDB + astropy BINARY2): p50 {statistics.median(direct) * ms:.2f} ms, "
          f"p95 {percentile(direct, 0.95) * ms:.2f} ms")
    print(f"  vo-ml sync over HTTP:              p50 {statistics.median(service) * ms:.2f} ms, "
          f"p95 {percentile(service, 0.95) * ms:.2f} ms")
    overhead = statistics.median(service) - statistics.median(direct)
    print(f"  overhead per query (p50): {overhead * ms:+.2f} ms (goal <= 2 ms)")


def throughput(root: str, db: Path, queries: tuple[str, str], seconds: float = 10.0) -> None:
    query, sql = queries
    params = {"LANG": "ADQL", "QUERY": query}
    connection = duckdb.connect(str(db), read_only=True)

    def hammer(work) -> int:
        done, deadline = 0, time.monotonic() + seconds
        while time.monotonic() < deadline:
            work()
            done += 1
        return done

    def service_client() -> int:
        session = requests.Session()
        return hammer(lambda: session.get(f"{root}/tap/sync", params=params).raise_for_status())

    def direct_client() -> int:
        cursor = connection.cursor()
        return hammer(lambda: direct_votable(cursor, sql))

    rates = {}
    for name, client in (("direct", direct_client), ("service", service_client)):
        with ThreadPoolExecutor(CLIENTS) as pool:
            futures = [pool.submit(client) for _ in range(CLIENTS)]
            rates[name] = sum(f.result() for f in futures) / seconds
    print(f"{CLIENTS} concurrent clients, {seconds:g} s each: direct {rates['direct']:.0f} requests/s, "
          f"vo-ml {rates['service']:.0f} requests/s ({rates['service'] / rates['direct']:.2f} of direct)")


def streaming(root: str, db: Path, server: psutil.Process, rows: int) -> None:
    def measured(count: int) -> tuple[float, float]:
        idle = server.memory_info().rss
        peak = [idle]
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], server.memory_info().rss)
                time.sleep(0.02)

        watcher = threading.Thread(target=watch)
        watcher.start()
        started = time.perf_counter()
        received = 0
        with requests.get(f"{root}/tap/sync", params={
                "LANG": "ADQL", "MAXREC": str(count),
                "QUERY": f"SELECT TOP {count} * FROM bench.sources"}, stream=True) as response:
            response.raise_for_status()
            for chunk in response.iter_content(1 << 20):
                received += len(chunk)
        elapsed = time.perf_counter() - started
        stop.set()
        watcher.join()
        return count / elapsed, (peak[0] - idle) / 2**20

    measured(rows)  # brings the table into DuckDB's buffer cache, which is not result memory
    small_rate, small_memory = measured(rows // 10)
    rate, memory = measured(rows)
    direct_rate, direct_memory = direct_streaming(db, rows)
    print(f"{rows:,}-row BINARY2 result (7 columns with a 16-d float array):")
    print(f"  direct (DuckDB + astropy, whole table in memory): {direct_rate:,.0f} rows/s, "
          f"peak +{direct_memory:.0f} MB")
    print(f"  vo-ml streamed over HTTP: {rate:,.0f} rows/s ({rate / direct_rate:.2f} of direct, "
          "goal >= 0.5)")
    print(f"  server peak memory above idle: +{memory:.0f} MB for {rows:,} rows, "
          f"+{small_memory:.0f} MB for {rows // 10:,} rows ({small_rate:,.0f} rows/s)")


def main() -> None:
    if sys.argv[1:2] == ["--direct"]:
        _direct_process(sys.argv[2], int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--workdir", type=Path, default=None)
    arguments = parser.parse_args()
    folder = arguments.workdir or Path(tempfile.mkdtemp(prefix="vo_ml_tap_bench_"))
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    db = build_archive(folder, arguments.rows)
    print(f"archive: {arguments.rows:,} rows in {db} ({time.perf_counter() - started:.1f} s)")
    with server_process(db, {"VO_ML_TAP_MAXREC_LIMIT": str(arguments.rows)}) as (root, server):
        queries = latency_queries(arguments.rows)
        latency(root, db, arguments.repeats, queries)
        throughput(root, db, queries)
        streaming(root, db, psutil.Process(server.pid), arguments.rows)


if __name__ == "__main__":
    main()
