"""Read archive spectra into one common record, whatever the file format.

The format is recognised from the file's content, never from its name: archives rename files, and a
wrong guess would silently give wrong wavelengths. Every failure is a :class:`SpectrumReadError` that
names the file and says what is wrong, so an ingest run can record it and carry on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits

__all__ = ["Spectrum", "SpectrumMeta", "SpectrumReadError", "read_spectrum", "file_checksum"]

FITS_MAGIC = b"SIMPLE  ="

#: Wavelength units that 1-D FITS files write in CUNIT1 or, in ESO pipelines, in CTYPE1.
_WAVELENGTH_UNITS = {
    "angstrom": u.AA, "angstroms": u.AA, "a": u.AA, "aa": u.AA,
    "nm": u.nm, "nanometer": u.nm, "um": u.um, "micron": u.um, "m": u.m,
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
    """SHA-256 of the file, so re-ingesting an unchanged file can be skipped."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_spectrum(path: str | Path) -> Spectrum:
    """Read ``path`` as a spectrum, recognising the format from its first bytes."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(len(FITS_MAGIC))
    except OSError as error:
        raise SpectrumReadError(path, f"cannot open file: {error.strerror}") from error
    if head != FITS_MAGIC:
        raise SpectrumReadError(path, "not a FITS file (it does not start with SIMPLE =)")
    return _read_fits(path)


def _read_fits(path: Path) -> Spectrum:
    try:
        with fits.open(path, memmap=False) as hdus:
            primary = hdus[0]
            if primary.data is not None and primary.header.get("NAXIS") == 1:
                return _read_wcs_image(path, primary.header, np.asarray(primary.data))
    except (OSError, ValueError, TypeError) as error:
        raise SpectrumReadError(path, f"unreadable FITS: {error}") from error
    raise SpectrumReadError(
        path, "no 1-D spectrum found: the primary HDU is not a 1-D image with a wavelength axis"
    )


def _read_wcs_image(path: Path, header: fits.Header, data: np.ndarray) -> Spectrum:
    """A 1-D image whose wavelengths come from the linear or log-linear WCS keywords."""
    wavelength = _wcs_wavelength(path, header, data.size)
    flux = data.astype(np.float64)
    if not np.isfinite(flux).any():
        raise SpectrumReadError(path, "flux is NaN or infinite everywhere")
    mask = ~np.isfinite(flux) | (flux <= 0)
    return Spectrum(
        wavelength=wavelength,
        flux=np.where(mask, np.nan, flux),
        mask=mask,
        meta=_fits_meta(path, header, wavelength),
        medium=_medium(header),
        frame=_frame(header),
    )


def _wcs_wavelength(path: Path, header: fits.Header, n: int) -> u.Quantity:
    if "CRVAL1" not in header:
        raise SpectrumReadError(path, "no wavelength axis: CRVAL1 is missing")
    step = header.get("CDELT1", header.get("CD1_1"))
    if step is None:
        raise SpectrumReadError(path, "no wavelength axis: neither CDELT1 nor CD1_1 is given")
    if not step > 0:
        raise SpectrumReadError(path, f"wavelengths do not increase (CDELT1 = {step})")
    pixel = np.arange(n, dtype=np.float64) + 1.0 - header.get("CRPIX1", 1.0)
    values = header["CRVAL1"] + step * pixel
    if header.get("DC-FLAG", 0) == 1 or str(header.get("CTYPE1", "")).upper().startswith("LOG"):
        values = 10.0 ** values
    return values * _wavelength_unit(path, header)


def _wavelength_unit(path: Path, header: fits.Header) -> u.Unit:
    for key in ("CUNIT1", "CTYPE1"):
        word = str(header.get(key, "")).strip().lower()
        if word in _WAVELENGTH_UNITS:
            return _WAVELENGTH_UNITS[word]
        if key == "CUNIT1" and word:
            raise SpectrumReadError(path, f"unknown wavelength unit CUNIT1 = {word!r}")
    return u.AA


def _medium(header: fits.Header) -> str:
    ctype = str(header.get("CTYPE1", "")).upper()
    return "vacuum" if ctype.startswith(("WAVE", "VWAV")) and "AWAV" not in ctype else "air"


def _frame(header: fits.Header) -> str:
    """HARPS DRS s1d files are barycentric; MILES-style templates carry no observation date."""
    if "HIERARCH ESO DRS BERV" in header:
        return "barycentric"
    if "MJD-OBS" not in header and "DATE-OBS" not in header:
        return "rest"
    return str(header.get("SPECSYS", "topocentric")).lower()


def _fits_meta(path: Path, header: fits.Header, wavelength: u.Quantity) -> SpectrumMeta:
    return SpectrumMeta(
        source=str(path),
        checksum=file_checksum(path),
        target=_text(header.get("OBJECT")),
        ra=_number(header.get("RA")),
        dec=_number(header.get("DEC")),
        mjd=_number(header.get("MJD-OBS")),
        exptime=_number(header.get("EXPTIME")),
        snr=_number(header.get("SNR", header.get("HIERARCH ESO DRS SPE EXT SN50"))),
        instrument=_text(header.get("INSTRUME")),
        resolving_power=_resolving_power(header, wavelength),
    )


def _resolving_power(header: fits.Header, wavelength: u.Quantity) -> float | None:
    """From SPEC_RES, or from a FWHM in Angstrom at the middle of the range (MILES: 2.5 A)."""
    if "SPEC_RES" in header:
        return _number(header["SPEC_RES"])
    fwhm = _number(header.get("FWHM"))
    if not fwhm:
        return None
    centre = wavelength[wavelength.size // 2].to_value(u.AA)
    return round(centre / fwhm, 1)


def _text(value: object) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None


def _number(value: object) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None
