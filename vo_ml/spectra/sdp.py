"""ESO Phase 3 science data product (SDP) 1-D spectra, and FITS binary tables laid out like them.

ESO SDP puts the whole spectrum in ONE table row whose cells are arrays (``WAVE``, ``FLUX``, ``ERR``,
``QUAL``). Some producers, e.g. the X-shooter Spectral Library, write the same columns one value per
row instead. Both layouts are read here, and give identical records for identical numbers.

Assumptions, since the standard leaves them to the producer:

- Columns are found by name (``WAVE``, ``FLUX``, ``ERR``, ``QUAL``, any case), else by the Spectrum
  DM utype in ``TUTYPn`` or the UCD in ``TUCDn`` (see :func:`vo_ml.spectra.votable_dm.column_role`).
- The wavelength unit must be given in ``TUNITn``; a guess could be off by a factor of ten.
- ``QUAL != 0`` marks a bad pixel. Negative flux is NOT masked: a calibrated spectrum has noise.
- Wavelengths are in air unless a ``VACUUM = T`` card says otherwise. ESO pipelines calibrate in
  air and SDP has no air/vacuum keyword; for XSL X0360 (BD+01 2916) the lines match the air-wavelength
  MILES spectrum of the same star with no shift, where vacuum would put them 1.3 A to the red.
- The frame comes from ``SPECSYS`` (``SOURCE`` = rest, ``BARYCENT``, ``TOPOCENT``...).
- Extension cards win over primary ones (ESO ``INHERIT = T``): both describe the same product.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits

from vo_ml.spectra.record import (
    Spectrum,
    SpectrumReadError,
    checked_spectrum,
    frame_from_reference,
    header_number,
    meta_from_header,
    wavelength_unit,
)
from vo_ml.spectra.votable_dm import column_role

__all__ = ["find_spectrum_table", "read_table_spectrum"]

_ROLE_NAMES = {"WAVE": "wavelength", "FLUX": "flux", "ERR": "error", "QUAL": "quality"}


def find_spectrum_table(hdus: fits.HDUList) -> fits.BinTableHDU | None:
    """The first binary table with a wavelength column, or None when the file has none."""
    for hdu in hdus[1:]:
        if isinstance(hdu, fits.BinTableHDU) and "wavelength" in _roles(hdu):
            return hdu
    return None


def _roles(hdu: fits.BinTableHDU) -> dict[str, str]:
    """Column name of each role: names first (the SDP standard), then utypes and UCDs."""
    roles: dict[str, str] = {}
    for name in hdu.columns.names:
        role = _ROLE_NAMES.get(name.upper())
        if role is not None:
            roles.setdefault(role, name)
    for number, name in enumerate(hdu.columns.names, start=1):
        role = column_role(hdu.header.get(f"TUTYP{number}"), hdu.header.get(f"TUCD{number}"))
        if role is not None:
            roles.setdefault(role, name)
    return roles


def read_table_spectrum(path: Path, primary: fits.Header, hdu: fits.BinTableHDU) -> Spectrum:
    """One spectrum from a one-row array table or a one-value-per-row table."""
    roles = _roles(hdu)
    if "flux" not in roles:
        raise SpectrumReadError(path, f"table {hdu.name} has a wavelength column but no FLUX column")
    header = _MergedHeader(primary, hdu.header)
    wave_column = hdu.columns[roles["wavelength"]]
    wavelength = u.Quantity(_values(path, hdu, roles["wavelength"]), wavelength_unit(path, wave_column.unit),
                            dtype=np.float64)
    bad = _values(path, hdu, roles["quality"]) != 0 if "quality" in roles else np.zeros(wavelength.size, bool)
    error = _values(path, hdu, roles["error"]) if "error" in roles else None
    return checked_spectrum(
        path,
        wavelength=wavelength,
        flux=_values(path, hdu, roles["flux"]),
        bad=bad,
        meta=meta_from_header(path, header, header_number(header.get("SPEC_RES"))),
        medium="vacuum" if header.get("VACUUM") is True else "air",
        frame=frame_from_reference(header.get("SPECSYS")) or "topocentric",
        error=error,
    )


def _values(path: Path, hdu: fits.BinTableHDU, name: str) -> np.ndarray:
    """The column as one 1-D array in its own type, whichever layout; a table of many array rows
    holds many spectra."""
    values = np.asarray(hdu.data[name])
    if values.ndim > 1 and values.shape[0] > 1:
        raise SpectrumReadError(
            path, f"holds {values.shape[0]} spectra (table {hdu.name} has {values.shape[0]} rows of arrays): "
            "not a single 1-D spectrum, split it into one file per spectrum first"
        )
    return values.ravel()


class _MergedHeader:
    """Extension cards over primary ones, looked up one key at a time: SDP headers carry hundreds
    of ESO cards, and parsing them all to read a dozen took a tenth of the ingest time."""

    def __init__(self, primary: fits.Header, extension: fits.Header) -> None:
        self._headers = (extension, primary)

    def get(self, key: str, default: object = None) -> object:
        for header in self._headers:
            if key in header:
                return header[key]
        return default
