"""Latent-similarity queries at archive scale: the neighbour index against exact search in SQL.

    python benchmarks/similarity.py [--rows 270000] [--dims 2 16 64 128 1024] [--queries 100]
                                    [--exact-queries 20] [--workdir DIR]

For each latent size an archive of ``--rows`` generated spectra rows is built in the work folder
(table ``bench.spectra``: publisher DID, obs_id, S/N and a float embedding, published in
TAP_SCHEMA). The embeddings are realistic in shape: rows lie near a few hundred cluster centres
(stellar types), on a low-dimensional manifold (physical parameters) with noise. Then:

- the neighbour index is built with ``vo-ml index``, in its own process: wall time and the
  process's peak resident memory;
- `vo-ml serve` runs on the archive, and the TOP-10 query ``SELECT TOP 10 obs_id,
  ml_distance(embedding, '<obs_id>') AS d FROM bench.spectra [WHERE snr > 50] ORDER BY d`` is
  sent through HTTP TAP sync for ``--queries`` random references, on one keep-alive
  connection: p50 and p95 latency with the index (ML_SEARCH=auto), without and with the filter;
- recall@10: the share of the exact answer's rows (ML_SEARCH=exact, the same service) that the
  indexed answer returns;
- the baseline, in the same run: exact search in DuckDB SQL, ``ORDER BY array_distance(embedding,
  <reference>) LIMIT 10`` on a connection of this process (p50 over ``--exact-queries``), and
  the same exact search through the service.

All servers listen on 127.0.0.1 and are stopped by process id.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import psutil
import pyarrow as pa
import requests
from astropy.io.votable import parse
from served import VO_ML, percentile, start_server

from vo_ml.archive import tap_schema
from vo_ml.archive.duckdb_backend import DuckDBBackend
from vo_ml.archive.tap_schema import Column, Schema, Table, TapSchema

TABLE = "bench.spectra"
FILTER = "snr > 50"
#: Rows written to the archive per batch while it is built.
BATCH = 20_000


def bench_table(dimension: int) -> Table:
    return Table("bench", TABLE, "generated spectra rows for the similarity benchmark", (
        Column("obs_publisher_did", "char", "publisher DID", arraysize="*", indexed=True,
               ucd="meta.ref.ivoid"),
        Column("obs_id", "char", "observation id", arraysize="*", indexed=True, ucd="meta.id"),
        Column("snr", "double", "signal-to-noise ratio", ucd="stat.snr"),
        Column("embedding", "float", "latent vector", arraysize=str(dimension),
               ucd="src.class;stat.fit.param"),
    ))


def embeddings(rows: int, dimension: int, seed: int) -> np.ndarray:
    """Rows near 300 cluster centres, spread along a 4-d manifold, with noise: like a trained
    encoder's latent space, where stars of one type crowd together."""
    generator = np.random.default_rng(seed)
    centres = generator.normal(0, 3, (300, dimension)).astype(np.float32)
    directions = generator.normal(0, 1, (300, 4, dimension)).astype(np.float32) / np.sqrt(dimension)
    cluster = generator.integers(0, 300, rows)
    parameters = generator.normal(0, 1, (rows, 4)).astype(np.float32)
    vectors = centres[cluster] + np.einsum("rk,rkd->rd", parameters, directions[cluster])
    vectors += generator.normal(0, 0.05, (rows, dimension)).astype(np.float32)
    return vectors


def build_archive(folder: Path, rows: int, dimension: int) -> Path:
    db = folder / f"similarity_{dimension}d.duckdb"
    if db.exists():
        return db
    partial = db.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    backend = DuckDBBackend(partial)
    table = bench_table(dimension)
    backend.ensure_table(table, table.columns)
    connection = backend._connection
    vectors = embeddings(rows, dimension, seed=dimension)
    snr = np.random.default_rng(0).uniform(0, 100, rows)
    for start in range(0, rows, BATCH):
        stop = min(start + BATCH, rows)
        ids = [f"b{i:07d}" for i in range(start, stop)]
        batch = pa.table({
            "did": [f"ivo://vo-ml.example/bench?{i}" for i in ids], "id": ids,
            "snr": snr[start:stop],
            "embedding": pa.FixedSizeListArray.from_arrays(
                pa.array(vectors[start:stop].ravel()), dimension)})
        connection.register("batch", batch)
        connection.execute(f"INSERT INTO {TABLE} SELECT did, id, snr, "
                           f"embedding::FLOAT[{dimension}] FROM batch")
        connection.unregister("batch")
    backend.publish_tap_schema(TapSchema([Schema("bench", "benchmark rows", (table,)),
                                          *tap_schema.load().schemas]))
    backend.close()
    partial.rename(db)
    return db


def build_index(db: Path) -> tuple[float, float]:
    """(seconds, peak resident MB) of ``vo-ml index`` on the archive, in its own process.

    Its stderr (a progress bar, and the reason when it fails) goes to a file: a pipe read only
    after the exit would fill up and stop the build."""
    with tempfile.TemporaryFile(mode="w+") as stderr:
        started = time.perf_counter()
        process = subprocess.Popen([VO_ML, "index", "--db", str(db), "--table", TABLE],
                                   stdout=subprocess.DEVNULL, stderr=stderr)
        peak = _peak_memory(process)
        elapsed = time.perf_counter() - started
        if process.returncode != 0:
            stderr.seek(0)
            raise RuntimeError(f"vo-ml index failed:\n{stderr.read()}")
    return elapsed, peak / 2**20


def _peak_memory(process: subprocess.Popen) -> int:
    """The highest resident memory, in bytes, seen while ``process`` ran; waits for its exit."""
    watched, peak = psutil.Process(process.pid), 0
    while process.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    process.wait()
    return peak


def top10_query(reference: str, filtered: bool) -> str:
    where = f" WHERE {FILTER}" if filtered else ""
    return (f"SELECT TOP 10 obs_id, ml_distance(embedding, '{reference}') AS d "
            f"FROM {TABLE}{where} ORDER BY d")


def ask(session: requests.Session, root: str, query: str, mode: str) -> tuple[float, list[str], str]:
    """(seconds, obs_ids, plan) of one sync query."""
    started = time.perf_counter()
    response = session.post(f"{root}/tap/sync", data={
        "LANG": "ADQL", "QUERY": query, "ML_SEARCH": mode, "RESPONSEFORMAT": "votable"})
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    votable = parse(io.BytesIO(response.content))
    plan = next((i.value for i in votable.resources[0].infos if i.name == "vo_ml_plan"), "")
    return elapsed, [str(v) for v in votable.get_first_table().array["obs_id"]], plan


def measure(root: str, db: Path, dimension: int, references: list[str], exact_count: int) -> dict:
    session = requests.Session()
    for reference in references[:5]:
        ask(session, root, top10_query(reference, False), "auto")
    figures: dict = {"dimension": dimension}
    for filtered in (False, True):
        timings, recalls, plans = [], [], set()
        for number, reference in enumerate(references):
            elapsed, found, plan = ask(session, root, top10_query(reference, filtered), "auto")
            timings.append(elapsed)
            plans.add(plan.split(":")[0])
            if number < exact_count:
                _, exact, _ = ask(session, root, top10_query(reference, filtered), "exact")
                recalls.append(len(set(found) & set(exact)) / len(exact))
        label = "filtered" if filtered else "plain"
        figures[f"{label}_p50"] = statistics.median(timings) * 1000
        figures[f"{label}_p95"] = percentile(timings, 0.95) * 1000
        figures[f"{label}_recall"] = statistics.mean(recalls)
        figures[f"{label}_plans"] = ",".join(sorted(plans))
    exact_timings = [ask(session, root, top10_query(r, False), "exact")[0]
                     for r in references[:exact_count]]
    figures["service_exact_p50"] = statistics.median(exact_timings) * 1000
    figures["sql_exact_p50"] = direct_exact(db, dimension, references[:exact_count]) * 1000
    return figures


def direct_exact(db: Path, dimension: int, references: list[str]) -> float:
    """p50 seconds of the exact TOP-10 in DuckDB SQL with ``array_distance``, reference given."""
    connection = duckdb.connect(str(db), read_only=True)
    timings = []
    for reference in references:
        vector = connection.execute(f"SELECT embedding FROM {TABLE} WHERE obs_id = ?",
                                    [reference]).fetchone()[0]
        started = time.perf_counter()
        connection.execute(
            f"SELECT obs_id, array_distance(embedding, ?::FLOAT[{dimension}]) AS d "
            f"FROM {TABLE} ORDER BY d LIMIT 10", [vector]).fetchall()
        timings.append(time.perf_counter() - started)
    connection.close()
    return statistics.median(timings)


def report(figures: dict, index: tuple[float, float], rows: int) -> None:
    seconds, megabytes = index
    print(f"\n== {figures['dimension']}-d, {rows:,} rows ==", flush=True)
    print(f"index build: {seconds:.1f} s, peak resident memory {megabytes:.0f} MB")
    for label, title in (("plain", "TOP 10"), ("filtered", f"TOP 10 WHERE {FILTER}")):
        print(f"{title}: p50 {figures[f'{label}_p50']:.2f} ms, p95 {figures[f'{label}_p95']:.2f} "
              f"ms, recall@10 {figures[f'{label}_recall']:.4f} (plans: {figures[f'{label}_plans']})")
    sql, service = figures["sql_exact_p50"], figures["service_exact_p50"]
    print(f"baseline exact: DuckDB SQL array_distance p50 {sql:.1f} ms; the service with "
          f"ML_SEARCH=exact p50 {service:.1f} ms")
    print(f"speed-up of the indexed query: {sql / figures['plain_p50']:.1f}x the exact SQL, "
          f"{service / figures['plain_p50']:.1f}x the exact service query")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=270_000)
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 16, 64, 128, 1024])
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--exact-queries", type=int, default=20)
    parser.add_argument("--workdir", type=Path, default=None)
    arguments = parser.parse_args()
    folder = arguments.workdir or Path(tempfile.mkdtemp(prefix="vo_ml_similarity_bench_"))
    folder.mkdir(parents=True, exist_ok=True)
    references = [f"b{i:07d}" for i in
                  np.random.default_rng(7).choice(arguments.rows, arguments.queries, replace=False)]
    for dimension in arguments.dims:
        started = time.perf_counter()
        db = build_archive(folder, arguments.rows, dimension)
        print(f"archive {db}: {time.perf_counter() - started:.1f} s", flush=True)
        index = build_index(db)
        with start_server(db) as root:
            figures = measure(root, db, dimension, references, arguments.exact_queries)
        report(figures, index, arguments.rows)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
