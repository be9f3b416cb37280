"""Tag and anomaly cost per spectrum, against the encoder's own forward pass.

    python benchmarks/tags.py --db vo-ml-demo/miles.duckdb [--table miles.spectra] [--repeat 3]

On an archive that `vo-ml demo` (or `vo-ml embed` then `vo-ml tag`) built, times for every
stored spectrum, in batches as the service meets them: the baseline, the encoder's forward pass
(latent vectors only); the tags with their conformal bounds (the served regressors on their
views, the spectra view included); and the anomaly score (the 5th-neighbour search in the faiss
index and the scale). Then `vo-ml tag` itself on a copy of the archive: the one-off cost of
learning (cross-validating every candidate) per archive row, against the same baseline.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from vo_ml.archive.backends import open_backend  # noqa: E402
from vo_ml.archive.neighbours import NeighbourIndex, description_path  # noqa: E402
from vo_ml.ml.anomaly import NEIGHBOURS  # noqa: E402
from vo_ml.ml.embedding import encode_rows, latent_vectors, model_sampled  # noqa: E402
from vo_ml.ml.tags import Tagging, spectra_view, tagging_path  # noqa: E402
from vo_ml.pipeline import store_path, tag  # noqa: E402
from vo_ml.spectra.store import SpectrumStore  # noqa: E402


def best_of(repeat: int, work) -> float:
    """The fastest of ``repeat`` runs of ``work()``, in seconds."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--table", default="miles.spectra")
    parser.add_argument("--repeat", type=int, default=3)
    arguments = parser.parse_args()
    with open_backend(arguments.db, read_only=True) as backend:
        card = backend.current_model(arguments.table)
    model = Path(card["location"])
    tagging = Tagging.load(tagging_path(arguments.db, arguments.table))
    if tagging is None or tagging.model_id != card["model_id"]:
        raise SystemExit(f"{arguments.table} has no tags of its model: run 'vo-ml tag' first")
    index = NeighbourIndex.load(description_path(arguments.db, arguments.table, "embedding", "l2"))
    store = SpectrumStore(store_path(arguments.db, arguments.table))
    flux, mask = store.read(0, len(store))
    rows = len(flux)
    latent, recon = encode_rows(flux, mask, model)
    latent_vectors(flux[:8], mask[:8], model)  # the model loads outside the timings

    encoder = best_of(arguments.repeat, lambda: latent_vectors(flux, mask, model))
    tags = best_of(arguments.repeat, lambda: tagging.tagger.tag(
        {"latent": latent, "spectra": spectra_view(*model_sampled(flux, mask, model))}))
    noise = np.full(rows, np.nan)
    anomaly = best_of(arguments.repeat, lambda: tagging.anomaly.score(
        recon, noise, *index.nearest(latent, NEIGHBOURS)))

    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / arguments.db.name
        shutil.copy(arguments.db, copy)
        shutil.copytree(store_path(arguments.db, arguments.table),
                        store_path(copy, arguments.table))
        shutil.copytree(f"{arguments.db}.neighbours", f"{copy}.neighbours")
        started = time.perf_counter()
        tag(copy, arguments.table)
        learning = time.perf_counter() - started

    per = lambda seconds: 1e3 * seconds / rows  # noqa: E731
    print(f"{rows} spectra of {flux.shape[1]} pixels, model {card['model_id']} "
          f"(best of {arguments.repeat})")
    print(f"  encoder forward pass (baseline) {per(encoder):8.3f} ms/spectrum")
    print(f"  tags with 68%/95% bounds        {per(tags):8.3f} ms/spectrum  "
          f"({tags / encoder:.2f}x the encoder)")
    print(f"  anomaly score                   {per(anomaly):8.3f} ms/spectrum  "
          f"({anomaly / encoder:.2f}x the encoder)")
    print(f"  vo-ml tag, learning included    {per(learning):8.3f} ms/archive row  "
          f"({learning / encoder:.1f}x the encoder's pass over the archive)")


if __name__ == "__main__":
    main()
