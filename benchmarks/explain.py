"""Cost of explaining one similarity answer, against the encoder's own forward pass.

    python benchmarks/explain.py --db vo-ml-demo/miles.duckdb [--table miles.spectra] [--pairs 50]
                                 [--repeat 3]

On an archive that `vo-ml demo` (or `vo-ml embed`) built, ``--pairs`` stored spectra drawn at
random are each paired with their nearest latent neighbour, and timed one at a time as the
service meets them, in the same run: the baseline, the encoder's forward pass on one spectrum at
the model's sampling; the explanation of the neighbour against its reference (integrated
gradients over the Gauss-Legendre nodes as one batch with its gradient, and the windows table);
and the explanation's figure (PNG).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from vo_ml.archive.backends import open_backend  # noqa: E402
from vo_ml.ml.embedding import encode, load_model  # noqa: E402
from vo_ml.ml.explain import NODES, explain  # noqa: E402
from vo_ml.ml.explain_eval import nearest_pairs  # noqa: E402
from vo_ml.ml.figures import explanation_png  # noqa: E402
from vo_ml.ml.models import downsampling  # noqa: E402
from vo_ml.pipeline import store_path  # noqa: E402
from vo_ml.spectra.store import SpectrumStore  # noqa: E402


def median_ms(repeat: int, cases: list, work) -> float:
    """The median over ``cases`` of the fastest of ``repeat`` runs of ``work(case)``, in ms."""
    times = []
    for case in cases:
        best = np.inf
        for _ in range(repeat):
            started = time.perf_counter()
            work(case)
            best = min(best, time.perf_counter() - started)
        times.append(best)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--table", default="miles.spectra")
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    arguments = parser.parse_args()
    with open_backend(arguments.db, read_only=True) as backend:
        card = backend.current_model(arguments.table)
    model = Path(card["location"])
    encoder, _, _ = load_model(str(model))
    store = SpectrumStore(store_path(arguments.db, arguments.table))
    flux, mask = store.coarsened(downsampling(card["config"])).read(0, len(store))
    pairs = [tuple(pair) for pair in nearest_pairs(encode(flux, mask, model)[:, :-1], arguments.pairs)]
    good = (~mask).astype(np.float32)

    def explained(pair: tuple[int, int]) -> object:
        reference, neighbour = pair
        explanation = explain(model, flux[neighbour], mask[neighbour], flux[reference], mask[reference])
        explanation.windows()
        return explanation

    explained(pairs[0])  # the model loads and TensorFlow warms up outside the timings
    forward = median_ms(arguments.repeat, [reference for reference, _ in pairs],
                        lambda row: encoder([flux[row:row + 1], good[row:row + 1]], training=False).numpy())
    explaining = median_ms(arguments.repeat, pairs, explained)
    figure = median_ms(1, pairs[:5], lambda pair: explanation_png(explained(pair), ("spectrum", "reference")))
    print(f"{len(pairs)} pairs of {flux.shape[1]}-pixel spectra at the model's sampling, model "
          f"{card['model_id']}, {NODES} nodes, {os.cpu_count()} cores (median of best of {arguments.repeat})")
    print(f"  encoder forward pass, one spectrum (baseline) {forward:8.2f} ms")
    print(f"  explanation with its windows table            {explaining:8.2f} ms/pair  "
          f"({explaining / forward:.1f}x the forward pass)")
    print(f"  explanation and its PNG figure                {figure:8.2f} ms/pair  "
          f"({figure / forward:.1f}x the forward pass)")


if __name__ == "__main__":
    main()
