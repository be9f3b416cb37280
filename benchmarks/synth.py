"""How fast synthetic HARPS archives are made: spectra/s and MB/s, against pure numpy generation.

    python benchmarks/synth.py --n 200 --out DIR [--workers 2] [--scheduler processes] [--seed 0]

The baseline is `synthesize` alone (physics and noise, no FITS writing) in this process, timed on
a few of the same stars; the full run is `generate_archive` into a fresh folder under DIR, so
nothing is skipped and the numbers are for real writes.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from vo_ml.spectra import synthetic as syn


def numpy_baseline(seed: int, count: int) -> float:
    """Seconds per spectrum for generation only, after one warm-up for the line list and caches."""
    syn.synthesize(syn.draw_parameters(seed, 0), syn.noise_seed(seed, 0))
    start = time.perf_counter()
    for i in range(count):
        syn.synthesize(syn.draw_parameters(seed, i), syn.noise_seed(seed, i))
    return (time.perf_counter() - start) / count


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=200, help="spectra to write")
    parser.add_argument("--out", type=Path, required=True, help="folder for the run's own subfolder")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--scheduler", choices=("processes", "threads"), default="processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baseline", type=int, default=20, help="spectra timed for the numpy baseline")
    args = parser.parse_args()

    per_spectrum = numpy_baseline(args.seed, min(args.baseline, args.n))
    args.out.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="synth-", dir=args.out))
    start = time.perf_counter()
    syn.generate_archive(run_dir, args.n, args.seed, workers=args.workers, scheduler=args.scheduler)
    elapsed = time.perf_counter() - start
    megabytes = sum(p.stat().st_size for p in run_dir.glob("*.fits")) / 1e6

    print(f"folder:            {run_dir}")
    print(f"numpy baseline:    {per_spectrum * 1e3:.1f} ms/spectrum  ({1 / per_spectrum:.1f} spectra/s, "
          f"1 process, no writing)")
    print(f"generate_archive:  {args.n} spectra, {megabytes:.0f} MB in {elapsed:.2f} s "
          f"({args.workers} workers, {args.scheduler})")
    print(f"                   {args.n / elapsed:.1f} spectra/s, {megabytes / elapsed:.1f} MB/s, "
          f"{elapsed / args.n * 1e3:.1f} ms/spectrum wall, "
          f"{elapsed * args.workers / args.n * 1e3:.1f} ms/spectrum per worker")


if __name__ == "__main__":
    main()
