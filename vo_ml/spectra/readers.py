"""Read archive spectra into one common record, whatever the file format.

The format is recognised from the file's content, never from its name: archives rename files, and a
wrong guess would silently give wrong wavelengths. Every failure is a :class:`SpectrumReadError` that
names the file and says what is wrong, so an ingest run can record it and carry on.

This module holds the record, the dispatch and the 1-D WCS image reader (MILES, HARPS s1d); the
other formats live in :mod:`~vo_ml.spectra.sdp` (ESO Phase 3 spectra and other FITS tables),
:mod:`~vo_ml.spectra.lamost` and :mod:`~vo_ml.spectra.votable_dm` (IVOA Spectrum DM VOTables).
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits

__all__ = [
    "Spectrum", "SpectrumMeta", "SpectrumReadError", "read_spectrum", "file_checksum",
    "checked_spectrum", "wavelength_unit", "frame_from_reference", "header_text", "header_number",
]

FITS_MAGIC = b"SIMPLE  ="
GZIP_MAGIC = b"\x1f\x8b"

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
    """Read ``path`` as a spectrum, recognising FITS (plain or gzipped) or VOTable from its first bytes."""
    from vo_ml.spectra.votable_dm import read_votable_spectrum

    path = Path(path)
    head = _first_bytes(path)
    if head.startswith(FITS_MAGIC):
        return _read_fits(path)
    if head.lstrip().startswith((b"<?xml", b"<VOTABLE")):
        return read_votable_spectrum(path)
    raise SpectrumReadError(
        path, "not a FITS file (it does not start with SIMPLE =) nor a VOTable (it does not start with <)"
    )


def _first_bytes(path: Path, n: int = 64) -> bytes:
    """The first bytes of the content, looking inside gzip: archives serve ``.fits.gz`` as often as not."""
    try:
        with open(path, "rb") as f:
            head = f.read(n)
        if head.startswith(GZIP_MAGIC):
            with gzip.open(path, "rb") as f:
                head = f.read(n)
    except (OSError, EOFError) as error:
        raise SpectrumReadError(path, f"cannot open file: {error}") from error
    return head


def _read_fits(path: Path) -> Spectrum:
    """Try each FITS layout in turn; the first whose structure matches reads the file."""
    from vo_ml.spectra.lamost import is_lamost, read_lamost
    from vo_ml.spectra.sdp import find_spectrum_table, read_table_spectrum

    try:
        with fits.open(path, memmap=False) as hdus:
            primary = hdus[0]
            if primary.header.get("NAXIS") == 1 and primary.data is not None:
                return _read_wcs_image(path, primary.header, np.asarray(primary.data))
            if is_lamost(primary.header):
                return read_lamost(path, hdus)
            table = find_spectrum_table(hdus)
            if table is not None:
                return read_table_spectrum(path, primary.header, table)
            _refuse_multi_spectrum_image(path, hdus)
    except SpectrumReadError:
        raise
    except (OSError, EOFError, ValueError, TypeError, KeyError, IndexError) as error:
        raise SpectrumReadError(path, f"unreadable FITS: {error}") from error
    raise SpectrumReadError(
        path, "no 1-D spectrum found: no 1-D image with a wavelength axis, no table with a wavelength column"
    )


def _refuse_multi_spectrum_image(path: Path, hdus: fits.HDUList) -> None:
    """Files that stack many spectra (MaNGA test sets, IFU cubes) need a choice this reader cannot make."""
    for index, hdu in enumerate(hdus):
        if isinstance(hdu, fits.PrimaryHDU | fits.ImageHDU) and hdu.header.get("NAXIS", 0) >= 2:
            shape = hdu.data.shape
            name = hdu.name or f"#{index}"
            count = int(np.prod(shape[:-1]))
            raise SpectrumReadError(
                path, f"holds {count} spectra (HDU {name} has shape {shape}): not a single 1-D spectrum, "
                "split it into one file per spectrum first"
            )


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


def wavelength_unit(path: Path, text: str | None) -> u.Unit:
    """The unit a table column or VOTable field declares, which must be a length."""
    word = (text or "").strip()
    if not word:
        raise SpectrumReadError(path, "unknown wavelength unit: the wavelength column declares none")
    if word.lower() in _WAVELENGTH_UNITS:
        return _WAVELENGTH_UNITS[word.lower()]
    try:
        unit = u.Unit(word)
    except ValueError as error:
        raise SpectrumReadError(path, f"unknown wavelength unit {word!r}") from error
    if not unit.is_equivalent(u.m):
        raise SpectrumReadError(path, f"unknown wavelength unit {word!r}: not a length")
    return unit


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
    return frame_from_reference(header.get("SPECSYS")) or "topocentric"


#: FITS WCS ``SPECSYS`` values and IVOA ``RefPos`` values, mapped to the record's three frames.
#: Heliocentric and barycentric differ by under 15 m/s, far below the resolution of these spectra.
_FRAMES = {
    "source": "rest", "rest": "rest",
    "barycent": "barycentric", "barycenter": "barycentric", "barycentric": "barycentric",
    "heliocen": "barycentric", "heliocenter": "barycentric", "heliocentric": "barycentric",
    "topocent": "topocentric", "topocenter": "topocentric", "topocentric": "topocentric",
}


def frame_from_reference(value: object) -> str | None:
    """The frame a ``SPECSYS`` card or a Spectrum DM ``RefPos`` names, or None when it names none we know."""
    return _FRAMES.get(str(value).strip().lower()) if value is not None else None


def _fits_meta(path: Path, header: fits.Header, wavelength: u.Quantity) -> SpectrumMeta:
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
        resolving_power=_resolving_power(header, wavelength),
    )


def _resolving_power(header: fits.Header, wavelength: u.Quantity) -> float | None:
    """From SPEC_RES, or from a FWHM in Angstrom at the middle of the range (MILES: 2.5 A)."""
    if "SPEC_RES" in header:
        return header_number(header["SPEC_RES"])
    fwhm = header_number(header.get("FWHM"))
    if not fwhm:
        return None
    centre = wavelength[wavelength.size // 2].to_value(u.AA)
    return round(centre / fwhm, 1)


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
