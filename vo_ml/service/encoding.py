"""``ml_encode``: spectra uploaded with a query, encoded with the archive's model before it runs.

Each ``ml_encode(wavelength, flux)`` of a query names two array columns of one uploaded table.
Every row is taken through the same steps as the archive's own spectra (the grid and the
preprocessing recorded when the table was embedded, the model that made its embeddings) and the
latent vectors are added to the upload as a column, which the translated SQL reads: the
database never calls the model. Uploaded spectra are used as they are: in the archive's medium
and frame, without a radial-velocity shift (unless the archive measures every spectrum's).

The same pass says how far to trust each answer: it adds the measures the query may select
(``ml_coverage``, ``ml_encode_error``, ``ml_typicality``: see :mod:`vo_ml.adql.latent`) as
columns too, and returns a warning for every row whose coverage or typicality is below the
service's thresholds (``ML_MIN_COVERAGE``, ``ML_MIN_TYPICALITY``), or that the model
reconstructs worse than every spectrum of the archive (its ``ml_recon_error``): a latent space
of few dimensions puts noise among the archive's spectra, where typicality alone cannot tell
it from a star. The tags the query asks with ``ml_tag`` (any tag column of the table,
``ml_anomaly`` included) are computed in the same pass, by the tagging ``vo-ml tag`` kept beside
the archive. A spectrum the model cannot encode is refused (by the rule of
:mod:`vo_ml.spectra.encodable`), naming the upload, its row and why.

A spectrum sent as a file (multipart part ``SPECTRUM`` of DataLink's "why similar" and of the
explorer's "place my spectrum") is read by :func:`spectrum_part`, put on the model's grid by
:func:`on_grid` and encoded and measured by :func:`encode_measured`, which ``ml_encode`` runs
too: every way in gets the same vector and the same trust measures.
"""

from __future__ import annotations

import dataclasses
import functools
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
from astropy import units as u
from flask import request

from vo_ml import adql
from vo_ml.service.context import archive
from vo_ml.service.dal import request_part
from vo_ml.service.dali import DaliError
from vo_ml.service.settings import settings
from vo_ml.service.similarity import current_index
from vo_ml.service.uploads import Upload
from vo_ml.spectra.encodable import encodable, recorded_preprocessing
from vo_ml.spectra.grid import Preprocessing
from vo_ml.spectra.readers import read_spectrum
from vo_ml.spectra.record import Spectrum, SpectrumMeta, SpectrumReadError

if TYPE_CHECKING:  # scikit-learn loads only when a query tags
    from vo_ml.ml.tags import Tagging

__all__ = ["encode_measured", "encode_uploads", "on_grid", "spectrum_part", "trust_warnings",
           "TableModel", "table_model"]

#: One thread loads a tagging at a time; the others wait for it and share it.
_LOADING = threading.Lock()


@dataclasses.dataclass(frozen=True)
class TableModel:
    """What encoding for a table needs: its model's folder, the preprocessing its spectra went
    through and its latent dimension."""

    model_id: str
    folder: Path
    preprocessing: Preprocessing
    dimension: int


def encode_uploads(uploads: Sequence[Upload], encodings: Sequence[adql.Encoding]
                   ) -> tuple[list[Upload], list[str]]:
    """The uploads with the columns of latent vectors and measures added for each encoding the
    query asks for, and the warnings about rows whose answers are uncertain.

    Raises :class:`adql.AdqlError` when the table has no model to encode with (or no
    nearest-neighbour distances for a selected ``ml_typicality``), and :class:`DaliError`
    naming the row for a spectrum that cannot be encoded.
    """
    by_name = {upload.name.lower(): upload for upload in uploads}
    warnings: list[str] = []
    for encoding in encodings:
        upload = by_name[encoding.upload.lower()]
        columns, said = _encoded(upload, encoding)
        rows = upload.rows
        for name, values in columns.items():
            rows = rows.append_column(name, values)
        by_name[encoding.upload.lower()] = dataclasses.replace(upload, rows=rows)
        warnings += said
    return [by_name[upload.name.lower()] for upload in uploads], list(dict.fromkeys(warnings))


def _encoded(upload: Upload, encoding: adql.Encoding) -> tuple[dict[str, pa.Array], list[str]]:
    """The latent vectors and measures of the upload's spectra as columns by name (NULL for a
    row without wavelength or flux), and the warnings about its rows."""
    model = table_model(encoding.table)
    prepared = _prepared_rows(upload, encoding, model.preprocessing)
    rows, count = list(prepared), upload.rows.num_rows
    latent, measures = _measured(encoding, model, prepared)
    vectors: list[list[float] | None] = [None] * count
    for row, vector in zip(rows, latent, strict=True):
        vectors[row] = vector.tolist()
    columns = {encoding.column: pa.array(vectors, type=pa.list_(pa.float32(), model.dimension))}
    for measure, values in measures.items():
        columns[encoding.measure_column(measure)] = _by_row(rows, values, count)
    names = [f"TAP_UPLOAD.{encoding.upload} row {row + 1}" for row in rows]
    return columns, trust_warnings(encoding.table, names, measures, model.preprocessing)


def _prepared_rows(upload: Upload, encoding: adql.Encoding, preprocessing: Preprocessing
                   ) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Every row with a wavelength and a flux, by row number, on the model's grid."""
    unit = _wavelength_unit(upload, encoding)
    wavelengths = _row_values(upload.rows.column(encoding.wavelength))
    fluxes = _row_values(upload.rows.column(encoding.flux))
    return {row: _prepared(upload, encoding, row, wavelength, flux, unit, preprocessing)
            for row, (wavelength, flux) in enumerate(zip(wavelengths, fluxes, strict=True))
            if wavelength is not None and flux is not None}


def _measured(encoding: adql.Encoding, model: TableModel,
              prepared: dict[int, tuple[np.ndarray, np.ndarray]]
              ) -> tuple[np.ndarray, dict[str, np.ndarray | None]]:
    """The latent vectors of the prepared rows, and each of :data:`adql.MEASURES` of them
    (None when unknown: all of them without rows, the typicality without the archive's
    distances)."""
    if not prepared:
        return np.empty((0, model.dimension), np.float32), dict.fromkeys(
            [*adql.MEASURES, *map(adql.tag_measure, encoding.tags_wanted)])
    flux = np.stack([f for f, _ in prepared.values()])
    mask = np.stack([m for _, m in prepared.values()])
    return encode_measured(encoding.table, encoding.embedding, model, flux, mask,
                           typicality_wanted=encoding.typicality_wanted,
                           tags_wanted=encoding.tags_wanted)


def encode_measured(table: str, embedding: str, model: TableModel, flux: np.ndarray,
                    mask: np.ndarray, *, typicality_wanted: bool = False,
                    tags_wanted: Sequence[str] = ()
                    ) -> tuple[np.ndarray, dict[str, np.ndarray | None]]:
    """The latent vectors of spectra on the model's grid (rows of ``flux`` and ``mask``, as
    :func:`on_grid` or ml_encode's rows make them) to compare with ``table``'s ``embedding``,
    each of :data:`adql.MEASURES` of them, and the tags wanted (by tag column name). The
    typicality is None without the archive's nearest-neighbour distances, unless it is
    wanted: then an error says what the operator must do. Every spectrum a user sends, in a
    query or as a file, is encoded and measured here, so all ways in agree."""
    from vo_ml.ml.embedding import encode_rows  # TensorFlow loads only when a query encodes

    measures: dict[str, np.ndarray | None] = dict.fromkeys(
        [*adql.MEASURES, *map(adql.tag_measure, tags_wanted)])
    latent, measures["error"] = encode_rows(flux, mask, model.folder)
    measures["coverage"] = (~mask).mean(axis=1)
    measures["typicality"] = _typicality(table, embedding, latent, typicality_wanted)
    if tags_wanted:
        measures |= _tags(table, embedding, tags_wanted, model, latent, measures["error"], flux,
                          mask)
    return latent, measures


def _tags(table: str, embedding: str, tags_wanted: Sequence[str], model: TableModel,
          latent: np.ndarray, error: np.ndarray, flux: np.ndarray, mask: np.ndarray
          ) -> dict[str, np.ndarray]:
    """The tag columns the query asks of the spectra (``ml_tag``), as ``vo-ml tag`` computed
    the table's: its tagger on the same views, its anomaly scale against the neighbour index
    (the noise of an upload is not known: it counts as the archive's median)."""
    from vo_ml.ml.anomaly import NEIGHBOURS
    from vo_ml.ml.embedding import model_sampled
    from vo_ml.ml.tags import spectra_view

    tagging = _tagging(table, model.model_id)
    wanted = set(tags_wanted)
    values: dict[str, np.ndarray] = {}
    if wanted - {"ml_anomaly"} and tagging.tagger is not None:
        views = {"latent": latent}
        if "spectra" in tagging.tagger.views:
            views["spectra"] = spectra_view(*model_sampled(flux, mask, model.folder))
        values |= tagging.tagger.tag(views)
    if "ml_anomaly" in wanted:
        index = current_index(table, embedding, "l2")
        if index is None:
            raise adql.missing_tags_error(
                table, "has no up-to-date neighbour index to score anomalies against; "
                                "the operator builds it with 'vo-ml index'")
        ids, distances = index.nearest(latent, NEIGHBOURS)
        values["ml_anomaly"] = tagging.anomaly.score(error, np.full(len(error), np.nan), ids,
                                                     distances)
    unknown = sorted(wanted - values.keys())
    if unknown:
        raise adql.missing_tags_error(
            table, f"has no tag column {unknown[0]}; its tag columns are "
                   f"{', '.join(sorted(_tag_columns(tagging)))}")
    return {adql.tag_measure(name): values[name] for name in tags_wanted}


def _tag_columns(tagging: Tagging) -> list[str]:
    """The tag columns a tagging makes."""
    from vo_ml.ml.tags import tag_columns

    labels = tagging.tagger.labels if tagging.tagger is not None else {}
    return ["ml_anomaly", *(name for label in labels for name in tag_columns(label))]


def _tagging(table: str, model_id: str) -> Tagging:
    """The tagging ``vo-ml tag`` kept for ``table``, if it was made from the model that
    embedded the table."""
    from vo_ml.ml.tags import tagging_path

    path = tagging_path(archive().backend.path, table)
    with _LOADING:
        tagging = _loaded_tagging(path, path.stat().st_mtime_ns if path.exists() else 0)
    if tagging is None or tagging.model_id != model_id:
        raise adql.missing_tags_error(
            table, "has no tags from the model that embedded it; the operator makes them with "
                   f"'vo-ml tag --table {table}'")
    return tagging


@functools.lru_cache(maxsize=8)
def _loaded_tagging(path: Path, version: int) -> Tagging | None:
    """A tagging, loaded once per version of its file."""
    from vo_ml.ml.tags import Tagging

    return Tagging.load(path) if version else None


def _by_row(rows: list[int], values: np.ndarray | None, count: int) -> pa.Array:
    """``values`` of ``rows`` as a column of ``count`` rows, NULL elsewhere (or everywhere when
    there are no values)."""
    column: list[float | None] = [None] * count
    if values is not None:
        for row, value in zip(rows, values, strict=True):
            column[row] = float(value)
    return pa.array(column, type=pa.float64())


def _typicality(table: str, embedding: str, latent: np.ndarray, wanted: bool
                ) -> np.ndarray | None:
    """The typicality of each latent vector against the table's own nearest-neighbour
    distances, which its up-to-date L2 index keeps; None when they are not known, unless
    ``wanted`` (a query selects ``ml_typicality``: then an error says what the operator must
    do)."""
    index = current_index(table, embedding, "l2")
    if index is not None and index.knows_typicality:
        return index.typicality(latent)
    if not wanted:
        return None
    reason = ("there is no up-to-date l2 neighbour index of it" if index is None else
              "its neighbour index was built before they were recorded")
    raise adql.missing_distances_error(table, embedding, reason)


def trust_warnings(table: str, names: Sequence[str], measures: dict[str, np.ndarray | None],
                   preprocessing: Preprocessing) -> list[str]:
    """A warning for each spectrum (``names`` says what each is, in the order of the
    measures) that covers too little of the model's range, or is too unlike the archive, for
    its neighbours in ``table`` to be trusted."""
    limits = settings()
    grid = preprocessing.grid
    coverage, typicality, error = (measures[m] for m in ("coverage", "typicality", "error"))
    worst = _largest_recon_error(table) if names else None
    warnings = []
    for number, where in enumerate(names):
        if coverage[number] < limits.ml_min_coverage:
            warnings.append(
                f"{where}: covers {coverage[number]:.0%} of the model's {grid.start:.0f}-"
                f"{grid.stop:.0f} A range (ml_coverage {coverage[number]:.2f}, below "
                f"{limits.ml_min_coverage:g}); its neighbours in {table} are uncertain")
        unlike = []
        if typicality is not None and typicality[number] < limits.ml_min_typicality:
            unlike.append(f"typicality {typicality[number]:.1f}% (ml_typicality, below "
                          f"{limits.ml_min_typicality:g}%): it is farther from its nearest archive "
                          "spectrum than almost every archive spectrum is from its own")
        if worst is not None and error[number] > worst:
            unlike.append(f"the model reconstructs it with an error of {error[number]:.3g} "
                          f"(ml_encode_error), more than any archive spectrum's ml_recon_error "
                          f"(at most {worst:.3g})")
        if unlike:
            warnings.append(f"{where}: unlike anything in {table}: {'; '.join(unlike)}; "
                            "its neighbours may not be alike")
    return warnings


def _largest_recon_error(table: str) -> float | None:
    """The largest reconstruction error of the table's own spectra (None when it has none)."""
    ((largest,),) = archive().backend.lookup(f"SELECT max(ml_recon_error) FROM {table}", ())
    return None if largest is None else float(largest)


def _row_values(column: pa.ChunkedArray) -> list[np.ndarray | None]:
    """Each row's array as float64, NULL elements as NaN; None for a NULL row."""
    lists = column.combine_chunks()
    return [lists[row].values.cast(pa.float64()).to_numpy(zero_copy_only=False)
            if lists[row].is_valid else None for row in range(len(lists))]


def table_model(table: str) -> TableModel:
    """The model that made ``table``'s embeddings, looked for in MODELS_DIR first, then where
    it was when the table was embedded, and how the table's spectra were prepared."""
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
    return TableModel(card["model_id"], found,
                  recorded_preprocessing(card["grid"], card.get("preprocess", {})),
                  int(card["latent_dim"]))


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
        return encodable(spectrum, preprocessing)
    except ValueError as error:
        raise DaliError(str(error)) from None


def spectrum_part(name: str = "SPECTRUM") -> tuple[str, Spectrum] | None:
    """The spectrum file (FITS or VOTable, as :func:`read_spectrum` reads them) sent as
    multipart part ``name`` of the current request, with its file name; None when there is no
    such part. Refused with 413 when larger than the service takes, 400 naming the part when
    it is no spectrum the service reads."""
    limit = settings().upload_limit_bytes
    data = request_part(name, limit)
    if data is None:
        return None
    filename = request.files[name].filename or name
    if len(data) > limit:
        raise DaliError(f"UsageFault: {name} is larger than the service's {limit} bytes", 413)
    with tempfile.NamedTemporaryFile(suffix=".spectrum") as sent:
        sent.write(data)
        sent.flush()
        try:
            return filename, read_spectrum(sent.name)
        except (SpectrumReadError, OSError, ValueError) as error:
            raise DaliError(f"UsageFault: {name} {filename!r} is not a spectrum this service "
                            f"reads (FITS or VOTable): {error}") from None


def on_grid(spectrum: Spectrum, model: TableModel, what: str, status: int = 400
            ) -> tuple[np.ndarray, np.ndarray]:
    """A spectrum on the model's grid, normalised, with its mask, by the rule of ml_encode;
    one the model cannot encode is refused with ``status`` (400 when the client sent it, 500
    when it is the archive's own), naming it as ``what``."""
    try:
        return encodable(spectrum, model.preprocessing)
    except ValueError as error:
        raise DaliError(f"{what} cannot be encoded: {error}", status) from None
