"""The common spectrum record every reader returns, and the checks and header helpers they share.

It sits apart from the readers so that each format module can import it while
:mod:`vo_ml.spectra.readers` imports the format modules: imports flow one way.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy import units as u

__all__ = [
    "Spectrum", "SpectrumMeta", "SpectrumReadError", "file_checksum", "checked_spectrum",
    "wavelength_unit", "frame_from_reference", "header_text", "header_number", "WAVELENGTH_UNITS",
    "meta_from_header", "error_from_ivar", "joined_bands", "der_snr",
]

#: Wavelength units that 1-D FITS files write in CUNIT1 or, in ESO pipelines, in CTYPE1.
WAVELENGTH_UNITS = {
    "angstrom": u.AA, "angstroms": u.AA, "a": u.AA, "aa": u.AA,
    "nm": u.nm, "nanometer": u.nm, "um": u.um, "micron": u.um, "m": u.m,
}


#: FITS WCS ``SPECSYS`` values and IVOA ``RefPos`` values, mapped to the record's three frames.
#: Heliocentric and barycentric differ by under 15 m/s, far below the resolution of these spectra.
_FRAMES = {
    "source": "rest", "rest": "rest",
    "barycent": "barycentric", "barycenter": "barycentric", "barycentric": "barycentric",
    "heliocen": "barycentric", "heliocenter": "barycentric", "heliocentric": "barycentric",
    "topocent": "topocentric", "topocenter": "topocentric", "topocentric": "topocentric",
}


class SpectrumReadError(ValueError):
    """A file that cannot be read as a spectrum; ``reason`` is short enough for a report table."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass
class SpectrumMeta:
    """What the file tells about the observation; ``None`` where it does not say."""

    source: str
    checksum: str
    target: str | None = None
    ra: float | None = None
    dec: float | None = None
    mjd: float | None = None
    exptime: float | None = None
    snr: float | None = None
    instrument: str | None = None
    resolving_power: float | None = None


@dataclass
class Spectrum:
    """One observed 1-D spectrum.

    ``mask`` is True where a pixel must not be used. ``medium`` is ``"air"`` or ``"vacuum"``;
    ``frame`` is ``"rest"``, ``"barycentric"`` or ``"topocentric"``.
    """

    wavelength: u.Quantity
    flux: np.ndarray
    mask: np.ndarray
    meta: SpectrumMeta
    medium: str = "air"
    frame: str = "topocentric"
    error: np.ndarray | None = None


def file_checksum(path: str | Path) -> str:
    """SHA-256 of the file, so re-ingesting an unchanged file can be skipped.

    Remembered per (path, size, modification time): ingest asks before reading a file and the
    reader asks again for the record, and a changed file gets a new checksum.
    """
    status = Path(path).stat()
    return _checksum(str(path), status.st_size, status.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _checksum(path: str, size: int, modified_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checked_spectrum(
    path: Path,
    wavelength: u.Quantity,
    flux: np.ndarray,
    bad: np.ndarray,
    meta: SpectrumMeta,
    medium: str,
    frame: str,
    error: np.ndarray | None = None,
) -> Spectrum:
    """The record, after the checks every format needs: finite, increasing wavelengths and some flux.

    ``bad`` is the format's own quality mask; non-finite flux is added to it, and masked flux is set
    to NaN so that no reader lets a flagged value through by accident.
    """
    _check_wavelengths(path, wavelength.value)
    flux = np.asarray(flux, dtype=np.float64)
    if not np.isfinite(flux).any():
        raise SpectrumReadError(path, "flux is NaN or infinite everywhere")
    mask = np.asarray(bad, dtype=bool) | ~np.isfinite(flux)
    return Spectrum(
        wavelength=wavelength,
        flux=np.where(mask, np.nan, flux),
        mask=mask,
        meta=meta,
        medium=medium,
        frame=frame,
        error=None if error is None else np.asarray(error, dtype=np.float64),
    )


def _check_wavelengths(path: Path, values: np.ndarray) -> None:
    if values.size < 2:
        raise SpectrumReadError(path, f"no wavelength axis: only {values.size} sample(s)")
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        raise SpectrumReadError(path, f"wavelength is NaN or infinite at {bad} pixels")
    steps = np.diff(values)
    if not (steps > 0).all():
        first = int(np.argmax(steps <= 0)) + 1
        raise SpectrumReadError(
            path, f"wavelengths are not monotonic: pixel {first} ({values[first]:g}) "
            f"does not follow {values[first - 1]:g}"
        )


def error_from_ivar(ivar: np.ndarray) -> np.ndarray:
    """``1/sqrt(ivar)``, NaN where the inverse variance is 0: SDSS and LAMOST give no error there."""
    ivar = np.asarray(ivar, dtype=np.float64)
    error = np.full(ivar.shape, np.nan)
    good = ivar > 0
    error[good] = ivar[good] ** -0.5
    return error


def joined_bands(bands: Sequence[Sequence[np.ndarray]], fills: Sequence[object]) -> list[np.ndarray]:
    """Bands of one spectrum, each a rising wavelength array followed by its per-pixel columns,
    joined in wavelength order into one array per column.

    Each band gets one sample a pixel step beyond each end, whose columns take ``fills`` (values
    that mark the sample bad): a resampler then sees the gap between two bands as masked instead
    of stretching the edge pixels across it.
    """
    padded = []
    for wavelength, *columns in sorted(bands, key=lambda band: band[0][0]):
        ends = [wavelength[0] ** 2 / wavelength[1], wavelength[-1] ** 2 / wavelength[-2]]
        padded.append([np.concatenate(([ends[0]], wavelength, [ends[1]]))] + [
            np.concatenate(([fill], column, [fill])) for column, fill in zip(columns, fills, strict=True)
        ])
    return [np.concatenate(parts) for parts in zip(*padded, strict=True)]


#: DER_SNR's noise scale: 1.482602 (a median absolute deviation as a Gaussian sigma) divided by
#: sqrt(6) (the noise of 2 f_i - f_(i-2) - f_(i+2) is sqrt(6) times that of one pixel).
_DER_SNR_SCALE = 0.6052697


def der_snr(flux: np.ndarray) -> float | None:
    """The signal-to-noise ratio per pixel estimated from the flux alone, by DER_SNR (Stoehr et
    al. 2008, ASP Conf. Ser. 394, 505): the median flux over a noise that is the scaled median
    of |2 f_i - f_(i-2) - f_(i+2)|, for files that state no S/N (MILES gives none).

    The second difference over pixels two apart cancels any flux that is a straight line over
    five pixels, so what remains is noise, provided the spectrum is sampled more finely than it
    is resolved; it is uncorrelated noise that DER_SNR measures. As in the authors' code,
    pixels with no flux (zero, here also NaN: masked) are left out. None when fewer than five
    pixels remain or none of them differs from the straight line through its neighbours.
    """
    values = np.asarray(flux, dtype=np.float64)
    values = values[np.isfinite(values) & (values != 0)]
    if values.size < 5:
        return None
    noise = _DER_SNR_SCALE * np.median(np.abs(2.0 * values[2:-2] - values[:-4] - values[4:]))
    return float(np.median(values) / noise) if noise > 0 else None


def wavelength_unit(path: Path, text: str | None) -> u.Unit:
    """The unit a table column or VOTable field declares, which must be a length."""
    word = (text or "").strip()
    if not word:
        raise SpectrumReadError(path, "unknown wavelength unit: the wavelength column declares none")
    if word.lower() in WAVELENGTH_UNITS:
        return WAVELENGTH_UNITS[word.lower()]
    try:
        unit = u.Unit(word)
    except ValueError as error:
        raise SpectrumReadError(path, f"unknown wavelength unit {word!r}") from error
    if not unit.is_equivalent(u.m):
        raise SpectrumReadError(path, f"unknown wavelength unit {word!r}: not a length")
    return unit


def frame_from_reference(value: object) -> str | None:
    """The frame a ``SPECSYS`` card or a Spectrum DM ``RefPos`` names, or None when it names none we know."""
    return _FRAMES.get(str(value).strip().lower()) if value is not None else None


def header_text(value: object) -> str | None:
    """A header string, or None when it is blank, so empty cards do not become empty names."""
    text = str(value).strip() if value is not None else ""
    return text or None


def header_number(value: object) -> float | None:
    """A header value as a finite float, or None: headers write numbers as strings and NaN as text."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def meta_from_header(path: Path, header: object, resolving_power: float | None) -> SpectrumMeta:
    """The metadata ESO-style headers give (primary and extension cards merged by the caller).

    S/N is the Phase 3 ``SNR`` card, or for HARPS DRS files the order-50 value near 550 nm.
    """
    return SpectrumMeta(
        source=str(path),
        checksum=file_checksum(path),
        target=header_text(header.get("OBJECT")),
        ra=header_number(header.get("RA")),
        dec=header_number(header.get("DEC")),
        mjd=header_number(header.get("MJD-OBS")),
        exptime=header_number(header.get("EXPTIME")),
        snr=header_number(header.get("SNR", header.get("HIERARCH ESO DRS SPE EXT SN50"))),
        instrument=header_text(header.get("INSTRUME")),
        resolving_power=resolving_power,
    )
