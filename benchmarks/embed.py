"""Batch embedding end to end against the pure model forward pass, and its scaling over workers.

    python benchmarks/embed.py [--workdir DIR] [--dense N] [--conv N] [--conv-latent 32] [--repeats 3]

For each family, on synthetic full-size HARPS SDP spectra (written by `vo-ml synth` into the work
folder first, and reused; then ingested into a fresh archive):

- pure forward pass: encoder and decoder over the spectra already in memory and downsampled as
  the model sees them, in batches of the model's batch size, in this process on every core: the
  baseline;
- end to end: `vo_ml.pipeline.embed` from the stored arrays to the columns written (and
  TAP_SCHEMA republished), on a dask.distributed LocalCluster of 1 and of 2 single-threaded
  worker processes, started before the clock;
- for a family that downsamples (dense2d), the one-off build of the store's copy at its
  sampling, which the first training or embedding makes and later ones reuse;
- the steady-state rate: the extra spectra over the extra time from a quarter of the spectra to
  all of them, which leaves out what every run pays once;
- the peak resident memory (VmHWM, reset as each run starts) of each worker, for all the
  spectra and for a quarter of them.

Each time is the median of ``--repeats`` runs. The models are trained by our own code for one
epoch on a few spectra: throughput does not depend on how well a model is trained.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import duckdb  # noqa: E402
import numpy as np  # noqa: E402
from dask.distributed import Client, LocalCluster  # noqa: E402
from served import VO_ML  # noqa: E402

from vo_ml.ml.cards import load_card  # noqa: E402
from vo_ml.ml.embedding import encode_batch, load_model  # noqa: E402
from vo_ml.ml.models import downsampling  # noqa: E402
from vo_ml.ml.training import train  # noqa: E402
from vo_ml.pipeline import ArchiveConfig, embed, ingest, store_path  # noqa: E402
from vo_ml.resources import config_file, load_yaml  # noqa: E402
from vo_ml.spectra.labels import CsvDescriber  # noqa: E402
from vo_ml.spectra.store import SpectrumStore  # noqa: E402

TABLE = "harps.spectra"


def archive(files: list[Path], labels: Path, folder: Path) -> Path:
    folder.mkdir(parents=True)
    db = folder / "harps.duckdb"
    config = ArchiveConfig.from_dict(load_yaml(config_file("synthetic")))
    ingest(files, db, config, CsvDescriber(labels))
    return db


def quick_model(db: Path, config: dict, models: Path) -> Path:
    """The family's model after one epoch on 32 spectra."""
    config["training"].update(epochs=1)
    store = SpectrumStore(store_path(db, TABLE))
    return train(store, config, [None] * len(store), f"benchmark {db}", models, rows=np.arange(32))


def pure_forward(db: Path, model: Path) -> float:
    """Seconds of the encoder and decoder alone over every spectrum, already in memory in the
    model's view, in batches of the model's batch size."""
    encoder, decoder, card = load_model(str(model))
    store = SpectrumStore(store_path(db, TABLE)).coarsened(downsampling(card["config"]))
    flux, mask = store.read(0, len(store))
    batch = int(card["config"]["training"]["batch_size"])
    encode_batch(encoder, decoder, flux[:batch], mask[:batch])  # trace before the clock
    started = time.perf_counter()
    for start in range(0, len(flux), batch):
        encode_batch(encoder, decoder, flux[start:start + batch], mask[start:start + batch])
    return time.perf_counter() - started


def _reset_peak_rss() -> None:
    """Start the process's peak RSS (VmHWM) afresh: a forked worker inherits its parent's."""
    Path("/proc/self/clear_refs").write_text("5")


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def end_to_end(db: Path, model: Path, workers: int) -> tuple[float, list[float]]:
    """Seconds of `embed` on a cluster of ``workers`` one-thread processes, and each worker's
    peak RSS (MB)."""
    with duckdb.connect(str(db)) as connection:  # forget the model, so embed runs again
        connection.execute("DELETE FROM vo_ml.models")
    with (LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                       dashboard_address=None) as cluster, Client(cluster) as client):
        client.run(_reset_peak_rss)
        started = time.perf_counter()
        assert embed(db, TABLE, model, scheduler=cluster.scheduler_address)
        seconds = time.perf_counter() - started
        peaks = list(client.run(_peak_rss_mb).values())
    return seconds, peaks


def coarsening(db: Path, factor: int) -> float:
    """Seconds to build the store's copy at the model's sampling, which the first training or
    embedding of a downsampling model does once."""
    started = time.perf_counter()
    SpectrumStore(store_path(db, TABLE)).coarsened(factor)
    return time.perf_counter() - started


def median_run(db: Path, model: Path, workers: int, repeats: int) -> tuple[float, list[float]]:
    """The median time of ``repeats`` end-to-end runs, and the largest worker peaks among them."""
    runs = [end_to_end(db, model, workers) for _ in range(repeats)]
    return float(np.median([seconds for seconds, _ in runs])), max((peaks for _, peaks in runs), key=max)


def measure(name: str, db: Path, model: Path, quarter_db: Path, quarter_model: Path,
            coarsen_seconds: float, repeats: int) -> None:
    n = len(SpectrumStore(store_path(db, TABLE)))
    card = load_card(model)
    one, one_peaks = median_run(db, model, 1, repeats)
    two, two_peaks = median_run(db, model, 2, repeats)
    quarter_one, _ = median_run(quarter_db, quarter_model, 1, repeats)
    quarter_two, quarter_peaks = median_run(quarter_db, quarter_model, 2, repeats)
    pure = float(np.median([pure_forward(db, model) for _ in range(repeats)]))
    print(f"\n{name}: {n} spectra of {SpectrumStore(store_path(db, TABLE)).grid.pixels} px, "
          f"latent {card['latent_dim']}, batch {card['config']['training']['batch_size']}")
    for label, seconds in ((f"pure forward pass (in memory, {os.cpu_count()} threads)", pure),
                           ("end to end, 1 worker", one), ("end to end, 2 workers", two)):
        print(f"  {label:42s} {n / seconds:8.1f} spectra/s ({seconds:.1f} s)")
    print(f"  end to end (2 workers) / pure = {pure / two:.2f}; scaling 1 -> 2 workers = {one / two:.2f}x")
    quarter = len(SpectrumStore(store_path(quarter_db, TABLE)))
    steady_one = (n - quarter) / (one - quarter_one)
    steady = (n - quarter) / (two - quarter_two)
    print(f"  steady state ({quarter} -> {n} spectra): 1 worker {steady_one:.1f}, 2 workers "
          f"{steady:.1f} spectra/s = {steady / (n / pure):.2f} of pure, scaling {steady / steady_one:.2f}x; "
          f"fixed cost per run {two - n / steady:.1f} s (TensorFlow start in the workers, model "
          "load, column swap)")
    if downsampling(card["config"]) > 1:
        print(f"  once: the store's x{downsampling(card['config'])} copy built in "
              f"{coarsen_seconds:.1f} s ({n / coarsen_seconds:.0f} spectra/s)")
    print(f"  peak RSS per worker: {max(two_peaks):.0f} MB on {n} spectra, "
          f"{max(quarter_peaks):.0f} MB on {n // 4} (1 worker: {max(one_peaks):.0f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "vo_ml_bench")
    parser.add_argument("--dense", type=int, default=2000, help="spectra for the dense family")
    parser.add_argument("--conv", type=int, default=200, help="spectra for the conv family")
    parser.add_argument("--conv-latent", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each measurement (median)")
    arguments = parser.parse_args()
    synthetic = arguments.workdir / "synthetic"
    most = max(arguments.dense, arguments.conv)
    subprocess.run([VO_ML, "synth", "--n", str(most), "--out", str(synthetic)], check=True,
                   stdout=subprocess.DEVNULL)
    files = sorted(synthetic.glob("synth_*.fits"))
    labels = synthetic / "labels.csv"
    scratch = Path(tempfile.mkdtemp(dir=arguments.workdir))
    for name, config, count in (
            ("dense2d", load_yaml(config_file("dense2d")), arguments.dense),
            ("conv", load_yaml(config_file("conv")) | {"latent_dim": arguments.conv_latent}, arguments.conv)):
        whole = archive(files[:count], labels, scratch / f"{name}-all")
        quarter = archive(files[:count // 4], labels, scratch / f"{name}-quarter")
        coarsen_seconds = coarsening(whole, downsampling(config))
        model = quick_model(whole, dict(config), scratch / "models")
        quarter_model = quick_model(quarter, dict(config), scratch / "models")
        measure(name, whole, model, quarter, quarter_model, coarsen_seconds, arguments.repeats)


if __name__ == "__main__":
    main()
