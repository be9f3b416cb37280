"""The demo, step by step: wall time per step, similarity latency, and how physical the map is.

    python benchmarks/demo.py [--source ../shared/data/real_spectra/miles_v9.1/fits/..] [--queries 200]

Builds the MILES demo archive in a fresh folder (ingest, train, embed), then serves it with
`vo-ml serve` and times the similarity query end to end over HTTP (pyvo), against the same SQL run
directly on DuckDB in this process: the baseline. Last, it scores the latent neighbours of FGK
stars (median |dTeff|/Teff, |dlogg|, |d[Fe/H]| of the 5 nearest) against PCA-2, PCA-16 and raw
flux on the same spectra.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pyvo  # noqa: E402
from served import start_server  # noqa: E402

from vo_ml import adql  # noqa: E402
from vo_ml.archive.duckdb_backend import DuckDBBackend  # noqa: E402
from vo_ml.ml.evaluation import FGK, neighbour_label_error  # noqa: E402
from vo_ml.ml.projection import pca_projection  # noqa: E402
from vo_ml.pipeline import build_demo, store_path  # noqa: E402
from vo_ml.spectra.grid import downsample  # noqa: E402
from vo_ml.spectra.store import SpectrumStore  # noqa: E402

TABLE = "miles.spectra"
QUERY = ("SELECT TOP 20 obs_publisher_did, target_name, teff, "
         "ml_distance(embedding, '{did}') AS d FROM miles.spectra WHERE teff > 4000 ORDER BY d")


def latency(db: Path, dids: list[str], queries: int) -> tuple[np.ndarray, np.ndarray]:
    with start_server(db) as root:
        service = pyvo.dal.TAPService(f"{root}/tap")
        http = []
        for did in dids[:queries]:
            started = time.perf_counter()
            service.search(QUERY.format(did=did))
            http.append(time.perf_counter() - started)
    backend = DuckDBBackend(db, read_only=True)
    schema = backend.read_tap_schema()
    direct = []
    for did in dids[:queries]:
        sql = adql.translate(QUERY.format(did=did), schema).sql
        started = time.perf_counter()
        backend.execute(sql)
        direct.append(time.perf_counter() - started)
    backend.close()
    return np.array(http), np.array(direct)


def label_scores(db: Path) -> None:
    backend = DuckDBBackend(db, read_only=True)
    rows = backend.execute(f"SELECT obs_publisher_did, teff, logg, feh, embedding FROM {TABLE}")
    backend.close()
    order = {did: i for i, did in enumerate(rows.columns[0].data)}
    labels = {name: np.ma.filled(rows.columns[i].astype(float), np.nan)
              for i, name in ((1, "teff"), (2, "logg"), (3, "feh"))}
    store = SpectrumStore(store_path(db, TABLE))
    flux, mask = downsample(*store.read(0, len(store)), 4)
    rows_in_store = np.array([order[d] for d in store.dids])
    latent = np.asarray(rows.columns[4].data)[rows_in_store]
    teff = labels["teff"][rows_in_store]
    fgk = (teff >= FGK[0]) & (teff < FGK[1])
    spaces = {"latent dense16": latent, "PCA-2": pca_projection(flux, 2),
              "PCA-16": pca_projection(flux, 16), "raw flux": flux}
    print(f"\n5 nearest neighbours of {fgk.sum()} FGK stars (median over pairs):")
    print(f"{'neighbours by':24s} {'dTeff/Teff':>11s} {'dlogg':>7s} {'d[Fe/H]':>8s}")
    for name, points in spaces.items():
        scores = [neighbour_label_error(points, labels[k][rows_in_store], fgk, 5, k == "teff")
                  for k in ("teff", "logg", "feh")]
        print(f"{name:24s} {scores[0]:11.4f} {scores[1]:7.3f} {scores[2]:8.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, help="local MILES folder instead of the PyPI wheel")
    parser.add_argument("--queries", type=int, default=200)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        demo = build_demo(Path(scratch), arguments.source)
        db = demo.db
        print("\nstep wall times: " + ", ".join(f"{k} {v:.1f} s" for k, v in demo.timings.items()))
        backend = DuckDBBackend(db, read_only=True)
        dids = [r[0] for r in backend.execute(f"SELECT obs_publisher_did FROM {TABLE} "
                                              "ORDER BY hash(obs_publisher_did)").rows()]
        backend.close()
        http, direct = latency(db, dids, arguments.queries)
        print(f"\nsimilarity query (TOP 20, filter, ORDER BY ml_distance), {len(http)} references:")
        print(f"  HTTP TAP sync via pyvo  p50 {np.median(http) * 1e3:6.2f} ms  "
              f"p95 {np.percentile(http, 95) * 1e3:6.2f} ms")
        print(f"  direct DuckDB (baseline) p50 {np.median(direct) * 1e3:6.2f} ms  "
              f"p95 {np.percentile(direct, 95) * 1e3:6.2f} ms")
        label_scores(db)


if __name__ == "__main__":
    main()
