"""SDSS spectra: BOSS/SDSS coadds (``spec-*.fits``) and APOGEE visit spectra (``apVisit-*.fits``).

Layouts, from the SDSS data model:

- BOSS and SDSS optical spectra (DR8 on, full and "lite" files): HDU ``COADD`` is a binary table
  of ``flux`` (1e-17 erg/s/cm2/A), ``loglam`` (log10 of the vacuum wavelength in A), ``ivar``,
  ``and_mask``, ``or_mask``, ``wdisp``...; HDU 2 (``SPALL``, or ``SPECOBJ`` for SDSS-I/II) is the
  catalogue row of the spectrum. Wavelengths are heliocentric, which the record calls barycentric.
- APOGEE ``apVisit``: HDUs 1-4 are (chip, pixel) images of flux (1e-17 erg/s/cm2/A), error, pixel
  mask and vacuum wavelength (A), one row per detector chip; chips and the pixels within each
  chip run from red to blue. Wavelengths are those observed (not shifted to any rest frame).

Choices:

- Both return ONE spectrum. APOGEE's three chips are joined in wavelength order with a masked
  sample beyond each chip's end, so that the gaps between chips read as masked.
- BOSS: a pixel is bad where ``ivar`` is 0 or ``and_mask`` is set (flagged in every exposure), as
  for LAMOST, whose pipeline derives from this one; the error is ``1/sqrt(ivar)``.
- APOGEE: a pixel is bad where its error is not positive or its mask has a bit of APOGEE's "bad
  pixel" set (``BADPIX``, ``CRPIX``, ``SATPIX``, ``UNFIXABLE``, ``BADDARK``, ``BADFLAT``,
  ``BADERR``, ``NOSKY``: bits 0-7); the warning bits (persistence, sky and telluric lines...) are not.
- BOSS position: ``PLUG_RA``/``PLUG_DEC``, the fibre's (``RA``/``DEC`` are the plate centre's). The
  target is the ``OBJECT`` card if any, else the SDSS designation ``SDSS JHHMMSS.ss+DDMMSS.s``
  (truncated, as SDSS writes it). MJD is the integer ``MJD`` card; S/N is the catalogue row's
  ``SN_MEDIAN_ALL``; the resolving power is worked out from the median ``wdisp`` (the line-spread
  sigma in pixels) of the good pixels, about 1800 for BOSS.
- APOGEE: target ``OBJID`` (the 2MASS name), MJD from ``JD-MID`` (the middle of the visit),
  exposure ``EXPTIME``, S/N ``SNR`` (median of the middle chip), resolving power the nominal 22,500.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import Angle
from astropy.io import fits

from vo_ml.spectra.record import (
    Spectrum,
    SpectrumMeta,
    checked_spectrum,
    error_from_ivar,
    file_checksum,
    header_number,
    header_text,
    joined_bands,
)

__all__ = ["boss_coadd", "read_boss", "is_apogee_visit", "read_apogee_visit"]

BOSS_COLUMNS = ("loglam", "flux", "ivar")
#: Gaussian sigma to FWHM.
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
APOGEE_RESOLVING_POWER = 22500.0
#: APOGEE_PIXMASK bits 0-7: BADPIX, CRPIX, SATPIX, UNFIXABLE, BADDARK, BADFLAT, BADERR, NOSKY.
APOGEE_BAD_BITS = 0xFF
JD_TO_MJD = 2400000.5
#: APOGEE's detectors a, b, c: the rows of each apVisit image. Files of other row counts (apPlate:
#: 300 fibres of one chip) are not one spectrum.
APOGEE_CHIPS = 3


def boss_coadd(hdus: fits.HDUList) -> fits.BinTableHDU | None:
    """The coadd table of a BOSS/SDSS spec file (``loglam``, ``flux``, ``ivar`` columns), or None."""
    tables = [hdu for hdu in hdus[1:] if isinstance(hdu, fits.BinTableHDU)
              and set(BOSS_COLUMNS) <= {name.lower() for name in hdu.columns.names}]
    named = [hdu for hdu in tables if hdu.name.upper() == "COADD"]
    return (named or tables or [None])[0]


def read_boss(path: Path, hdus: fits.HDUList, coadd: fits.BinTableHDU) -> Spectrum:
    """The coadded spectrum and the metadata of the primary header and the catalogue row."""
    table = coadd.data
    loglam, ivar = (np.asarray(table[name], dtype=np.float64) for name in ("loglam", "ivar"))
    and_mask = _column(coadd, "and_mask")
    bad = (ivar <= 0) | (and_mask != 0 if and_mask is not None else False)
    header = hdus[0].header
    ra, dec = header_number(header.get("PLUG_RA")), header_number(header.get("PLUG_DEC"))
    meta = SpectrumMeta(
        source=str(path),
        checksum=file_checksum(path),
        target=header_text(header.get("OBJECT")) or _sdss_designation(ra, dec),
        ra=ra,
        dec=dec,
        mjd=header_number(header.get("MJD")),
        exptime=header_number(header.get("EXPTIME")),
        snr=_catalogue_value(hdus, "SN_MEDIAN_ALL"),
        instrument="BOSS" if "BOSSVER" in header else "SDSS",
        resolving_power=_boss_resolving_power(_column(coadd, "wdisp"), loglam, bad),
    )
    return checked_spectrum(
        path, wavelength=(10.0 ** loglam) * u.AA, flux=table["flux"], bad=bad, meta=meta,
        medium="air" if header.get("VACUUM") is False else "vacuum", frame="barycentric",
        error=error_from_ivar(ivar),
    )


def _sdss_designation(ra: float | None, dec: float | None) -> str | None:
    """``SDSS JHHMMSS.ss+DDMMSS.s``, digits truncated as in SDSS object names."""
    if ra is None or dec is None:
        return None
    hours, minutes, seconds = Angle(ra, u.deg).hms
    sign = "-" if dec < 0 else "+"
    degrees, arcmin, arcsec = Angle(abs(dec), u.deg).dms
    ra_text = f"{int(hours):02d}{int(minutes):02d}{int(seconds * 100) / 100:05.2f}"
    dec_text = f"{int(degrees):02d}{int(arcmin):02d}{int(arcsec * 10) / 10:04.1f}"
    return f"SDSS J{ra_text}{sign}{dec_text}"


def _column(hdu: fits.BinTableHDU, name: str) -> np.ndarray | None:
    """A table column by name in any case (SDSS-V writes them in capitals), or None."""
    names = {column.lower(): column for column in hdu.columns.names}
    return np.ravel(hdu.data[names[name.lower()]]) if name.lower() in names else None


def _catalogue_value(hdus: fits.HDUList, column: str) -> float | None:
    """A value of the spectrum's catalogue row (HDU 2, ``SPALL`` or ``SPECOBJ``), when the file has it."""
    values = _column(hdus[2], column) if len(hdus) > 2 and isinstance(hdus[2], fits.BinTableHDU) else None
    return header_number(values[0]) if values is not None and values.size else None


def _boss_resolving_power(wdisp: np.ndarray | None, loglam: np.ndarray, bad: np.ndarray) -> float | None:
    """lambda / FWHM from ``wdisp``, the line-spread sigma in pixels of the log10 grid."""
    if wdisp is None or bad.all():
        return None
    sigma_pixels = float(np.median(np.asarray(wdisp, dtype=np.float64)[~bad]))
    step = float(np.median(np.diff(loglam)))
    if not sigma_pixels > 0 or not step > 0:
        return None
    return round(float(1.0 / (FWHM_PER_SIGMA * sigma_pixels * step * np.log(10.0))), 1)


def is_apogee_visit(hdus: fits.HDUList) -> bool:
    """HDUs 1-4 are images of one shape (3 chips, pixels), the fourth the wavelengths (by name or unit)."""
    if len(hdus) < 5 or not all(isinstance(hdu, fits.ImageHDU) for hdu in hdus[1:5]):
        return False
    shapes = {tuple(hdu.header.get(key) for key in ("NAXIS", "NAXIS1", "NAXIS2")) for hdu in hdus[1:5]}
    wavelengths = hdus[4]
    return len(shapes) == 1 and shapes.pop()[::2] == (2, APOGEE_CHIPS) and (
        wavelengths.name.upper() == "WAVELENGTH"
        or str(wavelengths.header.get("BUNIT", "")).strip().lower().startswith("wavelength")
    )


def read_apogee_visit(path: Path, hdus: fits.HDUList) -> Spectrum:
    """The visit's chips joined into one spectrum in rising wavelength."""
    flux, error, mask, wavelength = (np.asarray(hdus[index].data) for index in range(1, 5))
    bad = ~(error > 0) | ((mask.astype(np.int64) & APOGEE_BAD_BITS) != 0)
    chips = []
    for chip in range(flux.shape[0]):
        order = np.argsort(wavelength[chip])
        chips.append([np.asarray(image[chip][order], dtype=np.float64) for image in (wavelength, flux, error)]
                     + [bad[chip][order]])
    joined_wavelength, joined_flux, joined_error, joined_bad = joined_bands(chips, (np.nan, np.nan, True))
    return checked_spectrum(
        path, wavelength=joined_wavelength * u.AA, flux=joined_flux, bad=joined_bad,
        meta=_apogee_meta(path, hdus[0].header), medium="vacuum", frame="topocentric", error=joined_error,
    )


def _apogee_meta(path: Path, header: fits.Header) -> SpectrumMeta:
    jd = header_number(header.get("JD-MID"))
    telescope = str(header.get("TELESCOP", "")).strip().lower()
    return SpectrumMeta(
        source=str(path),
        checksum=file_checksum(path),
        target=header_text(header.get("OBJID")),
        ra=header_number(header.get("RA")),
        dec=header_number(header.get("DEC")),
        mjd=jd - JD_TO_MJD if jd is not None else header_number(header.get("MJD5")),
        exptime=header_number(header.get("EXPTIME")),
        snr=header_number(header.get("SNR")),
        instrument="APOGEE-S" if telescope.startswith("lco") else "APOGEE-N",
        resolving_power=APOGEE_RESOLVING_POWER,
    )
