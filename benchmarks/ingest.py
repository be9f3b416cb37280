"""Ingest throughput against reading the same bytes, and peak memory against the number of files.

    python benchmarks/ingest.py [--harps DIR] [--synthetic 2000] [--workdir DIR] [--workers 2]

For the real HARPS s1d files and for N synthetic full-size HARPS SDP files (written by
`vo-ml synth` into the work folder first, and reused on later runs), in the same run:

- raw read: every file's bytes read with ``workers`` threads;
- parse only: every file read into a spectrum record, in ``workers`` processes;
- ingest: ``vo-ml ingest`` into a fresh DuckDB file and spectrum store, in its own process.

Before each measurement the files are dropped from the page cache (``posix_fadvise``
DONTNEED), so all three read from disk, as an archive of 1.35 TB must.
It prints spectra/s, MB/s and the ratio of ingest to raw read, and the peak resident memory of
the ingest on a quarter of the files and on all of them: flat memory means the two agree.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

from served import VO_ML

from vo_ml.spectra.readers import read_spectrum

HARPS = Path(__file__).resolve().parents[2] / "shared/data/real_spectra/harps_s1d/fits"


def _read_bytes(path: Path) -> int:
    with open(path, "rb") as f:
        return len(f.read())


def _parse(path: Path) -> int:
    return read_spectrum(path).flux.size


def _evict(files: list[Path]) -> None:
    """Drop the files' pages from the page cache, so the next read comes from disk."""
    for path in files:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(descriptor)


def _timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


#: Runs one command and prints the peak RSS (kB) of the largest process below it, so each ingest
#: is measured on its own.
_PEAK_RSS = ("import resource, subprocess, sys; "
             "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, "
             "stderr=subprocess.DEVNULL); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def _ingest(sources: Path, config: str, workers: int, scratch: Path) -> tuple[float, float]:
    """Wall time and peak RSS (MB, largest single process) of `vo-ml ingest` on ``sources``."""
    db = scratch / f"bench-{time.monotonic_ns()}.duckdb"
    started = time.perf_counter()
    peak_kb = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS, VO_ML, "ingest", str(sources), "--db", str(db),
         "--config", config, "--workers", str(workers), "--batch-size", "64"],
        check=True, capture_output=True, text=True).stdout
    return time.perf_counter() - started, int(peak_kb) / 1024


def _subset(files: list[Path], folder: Path, labels: Path | None) -> Path:
    """A folder of links to ``files`` (and the labels table), so a run sees only them."""
    folder.mkdir(parents=True)
    for path in files + ([labels] if labels else []):
        os.symlink(path, folder / path.name)
    return folder


def measure(name: str, files: list[Path], config: str, workers: int, scratch: Path,
            labels: Path | None = None) -> None:
    megabytes = sum(p.stat().st_size for p in files) / 1e6
    _evict(files)
    raw = _timed(lambda: list(ThreadPoolExecutor(workers).map(_read_bytes, files)))
    _evict(files)
    with ProcessPoolExecutor(workers) as pool:
        parse = _timed(lambda: list(pool.map(_parse, files, chunksize=4)))
    quarter = _subset(files[: max(1, len(files) // 4)], scratch / f"{name}-quarter", labels)
    whole = _subset(files, scratch / f"{name}-all", labels)
    _, quarter_peak = _ingest(quarter, config, workers, scratch)
    _evict(files)
    ingest, whole_peak = _ingest(whole, config, workers, scratch)
    n = len(files)
    print(f"\n{name}: {n} files, {megabytes:.0f} MB, {workers} workers, cold page cache")
    for label, seconds in (("raw read", raw), ("parse only", parse), ("vo-ml ingest", ingest)):
        print(f"  {label:13s} {n / seconds:8.1f} spectra/s {megabytes / seconds:8.1f} MB/s "
              f"({seconds:.1f} s)")
    print(f"  ingest / raw read = {raw / ingest:.3f}; ingest / parse only = {parse / ingest:.3f}")
    print(f"  peak RSS of the ingest: {quarter_peak:.0f} MB on {len(files) // 4 or 1} files, "
          f"{whole_peak:.0f} MB on {n} files")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--harps", type=Path, default=HARPS)
    parser.add_argument("--synthetic", type=int, default=2000)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "vo_ml_bench")
    parser.add_argument("--workers", type=int, default=2)
    arguments = parser.parse_args()
    synthetic = arguments.workdir / "synthetic"
    subprocess.run([VO_ML, "synth", "--n", str(arguments.synthetic), "--out", str(synthetic),
                    "--workers", str(arguments.workers)], check=True, stdout=subprocess.DEVNULL)
    scratch = Path(tempfile.mkdtemp(dir=arguments.workdir))
    try:
        measure("HARPS s1d (real)", sorted(arguments.harps.glob("*.fits")), "harps",
                arguments.workers, scratch)
        names = sorted(synthetic.glob("synth_*.fits"))[: arguments.synthetic]
        measure("synthetic HARPS SDP", names, "synthetic", arguments.workers, scratch,
                synthetic / "labels.csv")
    finally:
        shutil.rmtree(scratch)


if __name__ == "__main__":
    main()
