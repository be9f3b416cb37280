"""IVOA Spectrum Data Model 1.x spectra serialised as VOTables, and the column roles they share with FITS.

Columns are found by what they mean, not by their names: first by Spectrum DM utype
(``spec:Data.SpectralAxis.Value``, ``spec:Data.FluxAxis.Value``, ``...FluxAxis.Accuracy.StatError``;
the ``spec:`` prefix and a leading ``Spectrum.`` are optional, case is ignored), then by UCD. The
UCD must be ``em.wl`` exactly for the wavelength: an SSA query response also has ``em.wl;stat.min``
style columns (band limits), which are metadata about spectra, not samples of one.

The Spectrum DM 1.x has no air/vacuum flag, so wavelengths are taken as vacuum (the FITS WCS and
IVOA default for ``WAVE``) unless a PARAM named ``AIRORVAC`` (the SDSS keyword) says ``air``.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io.votable import parse
from astropy.io.votable.tree import Field, Param, TableElement, VOTableFile

from vo_ml.spectra.record import (
    Spectrum,
    SpectrumMeta,
    SpectrumReadError,
    checked_spectrum,
    file_checksum,
    frame_from_reference,
    header_number,
    header_text,
    wavelength_unit,
)

__all__ = ["column_role", "read_votable_spectrum"]

_ROLE_UTYPES = {
    "data.spectralaxis.value": "wavelength",
    "data.fluxaxis.value": "flux",
    "data.fluxaxis.accuracy.staterror": "error",
}

#: Spectrum DM metadata utypes (normalised) -> SpectrumMeta field.
_META_UTYPES = {
    "target.name": "target",
    "char.timeaxis.coverage.location.value": "mjd",
    "char.timeaxis.coverage.support.extent": "exptime",
    "derived.snr": "snr",
    "dataid.instrument": "instrument",
    "char.spectralaxis.respower": "resolving_power",
}

_META_UCDS = {"pos.eq.ra": "ra", "pos.eq.dec": "dec"}

NO_SPECTRAL_AXIS = "VOTable has no spectral axis column (utype spec:Data.SpectralAxis.Value or UCD em.wl)"


def normalised_utype(utype: str | None) -> str:
    """``spec:Spectrum.Data.FluxAxis.Value`` and ``Data.fluxaxis.value`` both give ``data.fluxaxis.value``."""
    text = (utype or "").strip().lower()
    text = text.split(":", 1)[-1]
    return text.removeprefix("spectrum.")


def column_role(utype: str | None, ucd: str | None) -> str | None:
    """``"wavelength"``, ``"flux"`` or ``"error"`` for a spectrum column, from its utype or else its UCD."""
    role = _ROLE_UTYPES.get(normalised_utype(utype))
    if role is not None:
        return role
    atoms = [atom.strip() for atom in (ucd or "").lower().split(";") if atom.strip()]
    if atoms == ["em.wl"]:
        return "wavelength"
    if atoms and atoms[0] == "stat.error" and "phot.flux.density" in atoms:
        return "error"
    if atoms and atoms[0] == "phot.flux.density":
        return "flux"
    return None


def read_votable_spectrum(path: Path) -> Spectrum:
    """The first table of the VOTable that has a spectral axis column, as a spectrum."""
    votable = _parse(path)
    for table in votable.iter_tables():
        roles = _roles(table.fields)
        if "wavelength" in roles:
            return _table_spectrum(path, votable, table, roles)
    raise SpectrumReadError(path, NO_SPECTRAL_AXIS)


def _parse(path: Path) -> VOTableFile:
    """Parse leniently: real services write VOTables that break minor rules, which do not matter here."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return parse(str(path), verify="ignore")
    except Exception as error:  # noqa: BLE001 - the XML parser raises many unrelated types
        raise SpectrumReadError(path, f"unreadable VOTable: {error}") from error


def _roles(fields: list[Field]) -> dict[str, int]:
    """Field index of each role; the first field claiming a role keeps it."""
    roles: dict[str, int] = {}
    for index, field in enumerate(fields):
        role = column_role(field.utype, field.ucd)
        if role is not None:
            roles.setdefault(role, index)
    return roles


def _table_spectrum(path: Path, votable: VOTableFile, table: TableElement, roles: dict[str, int]) -> Spectrum:
    if "flux" not in roles:
        raise SpectrumReadError(path, "VOTable has no flux column (utype spec:Data.FluxAxis.Value "
                                "or UCD phot.flux.density)")
    field = table.fields[roles["wavelength"]]
    wavelength = _column(table, roles["wavelength"]) * wavelength_unit(path, _unit_text(field.unit))
    error = _column(table, roles["error"]) if "error" in roles else None
    params = _params(votable)
    return checked_spectrum(
        path,
        wavelength=wavelength,
        flux=_column(table, roles["flux"]),
        bad=np.zeros(wavelength.size, dtype=bool),
        meta=_meta(path, params),
        medium=_medium(params),
        frame=frame_from_reference(params.get("coordsys.spectralframe.refpos")) or "topocentric",
        error=error,
    )


def _column(table: TableElement, index: int) -> np.ndarray:
    """One column as float64, with masked (null) cells as NaN."""
    values = table.array[table.fields[index].name]
    return np.ma.filled(np.ma.asarray(values, dtype=np.float64), np.nan).ravel()


def _unit_text(unit: u.UnitBase | str | None) -> str | None:
    return None if unit is None else unit.to_string() if isinstance(unit, u.UnitBase) else str(unit)


def _params(votable: VOTableFile) -> dict[str, object]:
    """PARAM values keyed by normalised utype, by UCD and by lower-case name, for the metadata lookups."""
    values: dict[str, object] = {}
    for param in votable.iter_fields_and_params():
        if isinstance(param, Param):
            value = param.value
            first_ucd_atom = (param.ucd or "").lower().split(";")[0]
            for key in (normalised_utype(param.utype), first_ucd_atom, param.name.lower()):
                if key:
                    values.setdefault(key, value)
    return values


def _meta(path: Path, params: dict[str, object]) -> SpectrumMeta:
    fields: dict[str, object] = {}
    for key, name in (_META_UTYPES | _META_UCDS).items():
        if key in params:
            fields[name] = params[key]
    return SpectrumMeta(
        source=str(path),
        checksum=file_checksum(path),
        target=header_text(fields.get("target")),
        instrument=header_text(fields.get("instrument")),
        **{name: header_number(fields.get(name))
           for name in ("ra", "dec", "mjd", "exptime", "snr", "resolving_power")},
    )


def _medium(params: dict[str, object]) -> str:
    return "air" if re.match(r"\s*air", str(params.get("airorvac", "")), re.IGNORECASE) else "vacuum"
