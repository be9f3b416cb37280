"""Every file under the shared real-spectra folder is either read or refused with a reason.

Prints one row per file: format, pixel count and wavelength range, or the rejection reason. Files
that are documentation or catalogues (PROVENANCE.md, CSV, the MILES parameter tables) are not offered.
Usage: ``python benchmarks/read_shared.py [folder]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from astropy import units as u

from vo_ml.spectra.readers import Spectrum, SpectrumReadError, read_spectrum

SHARED = Path("/work/shared/data/real_spectra")
NOT_SPECTRA = {".md", ".csv", ".txt", ".db"}


def spectrum_files(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file() and path.suffix not in NOT_SPECTRA)


def describe(spectrum: Spectrum) -> str:
    wavelength = spectrum.wavelength.to_value(u.AA)
    instrument = spectrum.meta.instrument or "-"
    return (f"{instrument:<11} {wavelength.size:>7} px  {wavelength[0]:8.1f}-{wavelength[-1]:8.1f} A  "
            f"{spectrum.medium}/{spectrum.frame}")


def main(root: Path) -> int:
    refused = 0
    files = spectrum_files(root)
    for path in files:
        try:
            line = describe(read_spectrum(path))
        except SpectrumReadError as error:
            refused += 1
            line = f"REFUSED: {error.reason}"
        print(f"{str(path.relative_to(root)):<72} {line}")
    print(f"{len(files)} files: {len(files) - refused} read, {refused} refused with a reason")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else SHARED))
