"""LAMOST low-resolution (LRS, ``spec-*``) and medium-resolution (MRS, ``med-*``) spectra.

Layouts, as found in DR6/DR7 files:

- LRS: the primary image has 5 rows: flux, inverse variance, wavelength (A), andmask, ormask.
  Later releases (DR8 on) put the same five arrays in one row of a binary table (``WAVELENGTH``...).
- MRS: binary tables ``COADD_B`` (about 4900-5380 A) and ``COADD_R`` (about 6290-6850 A) with
  ``FLUX``, ``IVAR``, ``LOGLAM`` (log10 A), ``ANDMASK``, ``ORMASK``; the other HDUs are the single
  exposures, which are not read.

Choices:

- MRS returns ONE spectrum, the two coadded bands joined in wavelength order. The bands do not
  overlap; one masked sample is put one pixel beyond the end of each band, so that a resampler
  sees the gap as masked instead of stretching the edge pixels across 900 A.
- A pixel is bad where ``IVAR`` is 0 or ``ANDMASK`` is set (bad in every exposure). ``ORMASK``
  (bad in at least one exposure) is not used: the coadd is still good there.
- The error is ``1/sqrt(IVAR)``, NaN where IVAR is 0.
- Wavelengths are vacuum (header ``VACUUM = T``) and heliocentric (``HELIO = T``), which the record
  calls barycentric (they differ by under 15 m/s).
- The MJD is that of ``DATE-OBS``, the middle of the observation in UTC; the ``MJD`` card is only
  the integer day. The resolving power is the nominal one (LRS 1800, MRS 7500): headers lack it.
- The S/N is ``SNRR`` for LRS (the r band sits mid-spectrum) and the lower of the two coadds' ``SNR``
  for MRS.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.time import Time

from vo_ml.spectra.record import (
    Spectrum,
    SpectrumMeta,
    SpectrumReadError,
    checked_spectrum,
    error_from_ivar,
    file_checksum,
    header_number,
    header_text,
    joined_bands,
)

__all__ = ["is_lamost", "read_lamost"]

LRS_RESOLVING_POWER = 1800.0
MRS_RESOLVING_POWER = 7500.0
MRS_BANDS = ("COADD_B", "COADD_R")


def is_lamost(primary: fits.Header) -> bool:
    """LAMOST products say so in TELESCOP and ORIGIN."""
    return str(primary.get("TELESCOP", "")).strip().upper().startswith("LAMOST") or (
        str(primary.get("ORIGIN", "")).strip().upper() == "NAOC-LAMOST"
    )


def read_lamost(path: Path, hdus: fits.HDUList) -> Spectrum:
    """An LRS image, an LRS one-row table, or the two MRS coadds, whichever the file holds."""
    names = {hdu.name.upper() for hdu in hdus}
    if all(band in names for band in MRS_BANDS):
        return _read_mrs(path, hdus)
    primary = hdus[0]
    if primary.data is not None and primary.data.ndim == 2 and primary.data.shape[0] >= 5:
        rows = np.asarray(primary.data, dtype=np.float64)
        return _lrs_spectrum(path, primary.header, rows[2], rows[0], rows[1], rows[3])
    if len(hdus) > 1 and isinstance(hdus[1], fits.BinTableHDU) and "WAVELENGTH" in hdus[1].columns.names:
        table = hdus[1].data
        columns = [np.asarray(table[name], dtype=np.float64).ravel()
                   for name in ("WAVELENGTH", "FLUX", "IVAR", "ANDMASK")]
        return _lrs_spectrum(path, primary.header, *columns)
    raise SpectrumReadError(
        path, "LAMOST file of unknown layout: no 5-row LRS image, no WAVELENGTH table, no COADD_B/COADD_R"
    )


def _lrs_spectrum(
    path: Path, header: fits.Header, wavelength: np.ndarray, flux: np.ndarray, ivar: np.ndarray,
    andmask: np.ndarray,
) -> Spectrum:
    meta = _meta(path, header, "LAMOST LRS", LRS_RESOLVING_POWER,
                 snr=header_number(header.get("SNRR")), exptime=header_number(header.get("EXPTIME")))
    return _spectrum(path, header, wavelength, flux, ivar, andmask, meta)


def _spectrum(
    path: Path, header: fits.Header, wavelength: np.ndarray, flux: np.ndarray, ivar: np.ndarray,
    andmask: np.ndarray, meta: SpectrumMeta,
) -> Spectrum:
    """The record of either LAMOST layout: bad where IVAR <= 0 or ANDMASK is set."""
    return checked_spectrum(
        path,
        wavelength=wavelength * u.AA,
        flux=flux,
        bad=(ivar <= 0) | (andmask != 0),
        meta=meta,
        medium=_medium(header),
        frame=_frame(header),
        error=error_from_ivar(ivar),
    )


def _read_mrs(path: Path, hdus: fits.HDUList) -> Spectrum:
    bands = [_mrs_band(hdus[name]) for name in MRS_BANDS]
    wavelength, flux, ivar, andmask = joined_bands(bands, fills=(np.nan, 0.0, 0.0))
    band_snrs = (header_number(hdus[name].header.get("SNR")) for name in MRS_BANDS)
    snrs = [snr for snr in band_snrs if snr is not None]
    header = hdus[0].header
    meta = _meta(path, header, "LAMOST MRS", MRS_RESOLVING_POWER,
                 snr=min(snrs) if snrs else None, exptime=_mrs_exposure_time(hdus))
    return _spectrum(path, header, wavelength, flux, ivar, andmask, meta)


def _mrs_band(hdu: fits.BinTableHDU) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Wavelength (A), flux, inverse variance and andmask of one coadded band."""
    table = hdu.data
    return (
        10.0 ** np.asarray(table["LOGLAM"], dtype=np.float64),
        np.asarray(table["FLUX"], dtype=np.float64),
        np.asarray(table["IVAR"], dtype=np.float64),
        np.asarray(table["ANDMASK"], dtype=np.float64),
    )


def _mrs_exposure_time(hdus: fits.HDUList) -> float | None:
    """The sum over the blue single exposures that went into the coadd; the primary header has none."""
    times = [header_number(hdu.header.get("EXPTIME")) for hdu in hdus if hdu.name.upper().startswith("B-")]
    known = [time for time in times if time is not None]
    return float(sum(known)) if known else None


def _medium(header: fits.Header) -> str:
    return "air" if header.get("VACUUM") is False else "vacuum"


def _frame(header: fits.Header) -> str:
    return "barycentric" if header.get("HELIO") is True else "topocentric"


def _meta(
    path: Path, header: fits.Header, instrument: str, resolving_power: float,
    snr: float | None, exptime: float | None,
) -> SpectrumMeta:
    return SpectrumMeta(
        source=str(path),
        checksum=file_checksum(path),
        target=header_text(header.get("DESIG")) or header_text(header.get("OBJNAME")),
        ra=header_number(header.get("RA")),
        dec=header_number(header.get("DEC")),
        mjd=_mjd(header),
        exptime=exptime,
        snr=snr,
        instrument=instrument,
        resolving_power=resolving_power,
    )


def _mjd(header: fits.Header) -> float | None:
    try:
        return float(Time(str(header["DATE-OBS"]), scale="utc").mjd)
    except (KeyError, ValueError):
        return header_number(header.get("MJD"))
