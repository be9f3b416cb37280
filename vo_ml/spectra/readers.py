"""Read archive spectra into one common record, whatever the file format.

The format is recognised from the file's content, never from its name: archives rename files, and a
wrong guess would silently give wrong wavelengths. Every failure is a :class:`SpectrumReadError` that
names the file and says what is wrong, so an ingest run can record it and carry on.

This module holds the dispatch and the 1-D WCS image reader (MILES, HARPS s1d); the record is in
:mod:`~vo_ml.spectra.record`, and the other formats live in :mod:`~vo_ml.spectra.sdp` (ESO Phase 3
spectra and other FITS tables), :mod:`~vo_ml.spectra.lamost`, :mod:`~vo_ml.spectra.sdss` (BOSS/SDSS
coadds and APOGEE visits) and :mod:`~vo_ml.spectra.votable_dm` (IVOA Spectrum DM VOTables).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits

from vo_ml.spectra.lamost import is_lamost, read_lamost
from vo_ml.spectra.record import (
    WAVELENGTH_UNITS,
    Spectrum,
    SpectrumMeta,
    SpectrumReadError,
    file_checksum,
    frame_from_reference,
    header_number,
    meta_from_header,
)
from vo_ml.spectra.sdp import find_spectrum_table, read_table_spectrum
from vo_ml.spectra.sdss import boss_coadd, is_apogee_visit, read_apogee_visit, read_boss
from vo_ml.spectra.votable_dm import read_votable_spectrum

__all__ = ["Spectrum", "SpectrumMeta", "SpectrumReadError", "read_spectrum", "file_checksum"]

FITS_MAGIC = b"SIMPLE  ="
GZIP_MAGIC = b"\x1f\x8b"


def read_spectrum(path: str | Path) -> Spectrum:
    """Read ``path`` as a spectrum, recognising FITS (plain or gzipped) or VOTable from its first bytes."""
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
    try:
        with fits.open(path, memmap=False) as hdus:
            primary = hdus[0]
            if primary.header.get("NAXIS") == 1 and primary.data is not None:
                return _read_wcs_image(path, primary.header, np.asarray(primary.data))
            if is_lamost(primary.header):
                return read_lamost(path, hdus)
            coadd = boss_coadd(hdus)
            if coadd is not None:
                return read_boss(path, hdus, coadd)
            if is_apogee_visit(hdus):
                return read_apogee_visit(path, hdus)
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
        meta=meta_from_header(path, header, _resolving_power(header, wavelength)),
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
        if word in WAVELENGTH_UNITS:
            return WAVELENGTH_UNITS[word]
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



def _resolving_power(header: fits.Header, wavelength: u.Quantity) -> float | None:
    """From SPEC_RES, or from a FWHM in Angstrom at the middle of the range (MILES: 2.5 A)."""
    if "SPEC_RES" in header:
        return header_number(header["SPEC_RES"])
    fwhm = header_number(header.get("FWHM"))
    if not fwhm:
        return None
    centre = wavelength[wavelength.size // 2].to_value(u.AA)
    return round(centre / fwhm, 1)


