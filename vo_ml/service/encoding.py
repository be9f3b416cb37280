"""``ml_encode``: spectra uploaded with a query, encoded with the archive's model before it runs.

Each ``ml_encode(wavelength, flux)`` of a query names two array columns of one uploaded table.
Every row is taken through the same steps as the archive's own spectra (the grid and the
preprocessing recorded when the table was embedded, the model that made its embeddings) and the
latent vectors are added to the upload as a column, which the translated SQL reads: the
database never calls the model. Uploaded spectra are used as they are: in the archive's medium
and frame, without a radial-velocity shift.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
from astropy import units as u

from vo_ml import adql
from vo_ml.service.context import archive
from vo_ml.service.dali import DaliError
from vo_ml.service.settings import settings
from vo_ml.service.uploads import Upload
from vo_ml.spectra.grid import Preprocessing
from vo_ml.spectra.record import Spectrum, SpectrumMeta

__all__ = ["encode_uploads"]


def encode_uploads(uploads: Sequence[Upload], encodings: Sequence[adql.Encoding]) -> list[Upload]:
    """The uploads with a column of latent vectors added for each encoding the query asks for.

    Raises :class:`adql.AdqlError` when the table has no model to encode with, and
    :class:`DaliError` naming the row for a spectrum that cannot be encoded.
    """
    by_name = {upload.name.lower(): upload for upload in uploads}
    for encoding in encodings:
        upload = by_name[encoding.upload.lower()]
        vectors = _encoded(upload, encoding)
        by_name[encoding.upload.lower()] = dataclasses.replace(
            upload, rows=upload.rows.append_column(encoding.column, vectors))
    return [by_name[upload.name.lower()] for upload in uploads]


def _encoded(upload: Upload, encoding: adql.Encoding) -> pa.Array:
    """The latent vectors of the upload's spectra; NULL for a row without wavelength or flux."""
    from vo_ml.ml.embedding import latent_vectors  # TensorFlow loads only when a query encodes

    model_dir, preprocessing, dimension = _model(encoding.table)
    unit = _wavelength_unit(upload, encoding)
    wavelengths = _row_values(upload.rows.column(encoding.wavelength))
    fluxes = _row_values(upload.rows.column(encoding.flux))
    prepared = {row: _prepared(upload, encoding, row, wavelength, flux, unit, preprocessing)
                for row, (wavelength, flux) in enumerate(zip(wavelengths, fluxes, strict=True))
                if wavelength is not None and flux is not None}
    vectors: list[list[float] | None] = [None] * len(wavelengths)
    if prepared:
        flux = np.stack([f for f, _ in prepared.values()])
        mask = np.stack([m for _, m in prepared.values()])
        for row, vector in zip(prepared, latent_vectors(flux, mask, model_dir), strict=True):
            vectors[row] = vector.tolist()
    return pa.array(vectors, type=pa.list_(pa.float32(), dimension))


def _row_values(column: pa.ChunkedArray) -> list[np.ndarray | None]:
    """Each row's array as float64, NULL elements as NaN; None for a NULL row."""
    lists = column.combine_chunks()
    return [lists[row].values.cast(pa.float64()).to_numpy(zero_copy_only=False)
            if lists[row].is_valid else None for row in range(len(lists))]


def _model(table: str) -> tuple[Path, Preprocessing, int]:
    """The folder of the model that made ``table``'s embeddings, how its spectra were prepared
    and its latent dimension; the model is looked for in MODELS_DIR first, then where it was
    when the table was embedded."""
    card = archive().backend.current_model(table)
    if card is None:
        raise adql.missing_model_error(
            table, "it has no embeddings yet; the operator makes them with 'vo-ml embed'")
    models_dir = settings().models_dir
    places = [Path(models_dir) / card["model_id"]] if models_dir else []
    if card.get("location"):
        places.append(Path(card["location"]))
    found = next((place for place in places if (place / "encoder.keras").is_file()), None)
    if found is None:
        looked = " or ".join(str(place) for place in places) or "nowhere (no location recorded)"
        raise adql.missing_model_error(
            table, f"model {card['model_id']} made its embeddings, but it is not in {looked}; "
                   "the operator must copy the model folder there or set MODELS_DIR")
    preprocessing = Preprocessing.from_config({"grid": card["grid"],
                                               "preprocess": card.get("preprocess", {})})
    return found, dataclasses.replace(preprocessing, frame="as-is"), int(card["latent_dim"])


def _wavelength_unit(upload: Upload, encoding: adql.Encoding) -> u.UnitBase:
    written = encoding.wavelength_unit
    try:
        unit = u.Unit(written) if written else u.AA
        unit.to(u.AA)
    except (ValueError, u.UnitsError):
        raise DaliError(f"ml_encode: column {encoding.wavelength} of UPLOAD {upload.name} has "
                        f"unit {written!r}, which is not a length; give wavelengths in Angstrom, "
                        "nm or another length unit") from None
    return unit


def _prepared(upload: Upload, encoding: adql.Encoding, row: int, wavelength: np.ndarray,
              flux: np.ndarray, unit: u.UnitBase,
              preprocessing: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """One uploaded spectrum on the model's grid, normalised, with its mask."""
    where = f"ml_encode: UPLOAD {upload.name} row {row + 1}"
    if len(wavelength) != len(flux):
        raise DaliError(f"{where}: {encoding.wavelength} has {len(wavelength)} values but "
                        f"{encoding.flux} has {len(flux)}; give one flux per wavelength")
    if not np.isfinite(wavelength).all() or np.any(np.diff(wavelength) <= 0):
        raise DaliError(f"{where}: the wavelengths must be finite and strictly increasing")
    spectrum = Spectrum(wavelength * unit, flux, ~np.isfinite(flux), SpectrumMeta(where, ""),
                        medium=preprocessing.grid.medium, frame="rest")
    try:
        return preprocessing.apply(spectrum)
    except ValueError as error:
        raise DaliError(str(error)) from None
