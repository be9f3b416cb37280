"""``POST /explore/<schema.table>/place``: where the user's own spectrum falls on the latent map.

The explorer shows the archive on its 2-D map (``ml_x``, ``ml_y``); a user who drops a spectrum
file on it wants to see where it lands, what lies around it and how far to believe that. The
file (multipart part ``SPECTRUM``, FITS or VOTable) is read, prepared and encoded exactly as
``ml_encode`` encodes an uploaded spectrum (:mod:`vo_ml.service.encoding`), placed on the map by
the projection the table's own positions were made with (:func:`vo_ml.ml.projection.map_xy`
with the model's card, as ``vo-ml embed`` does), and its nearest archive spectra are found by
the ADQL a TOPCAT user would write, ``TOP 10 ... ORDER BY ml_distance(embedding,
ml_vector(...))``, run through the TAP pipeline, so the neighbour index serves it when current.
The answer is JSON for the page's script, with the trust measures of ml_encode and its warnings.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pyarrow as pa
from flask import Blueprint, Response, jsonify

from vo_ml import adql
from vo_ml.archive.tap_schema import Table
from vo_ml.service import similarity
from vo_ml.service.context import archive
from vo_ml.service.dal import Executor, query_errors
from vo_ml.service.dali import DaliError
from vo_ml.service.encoding import (
    TableModel,
    encode_measured,
    on_grid,
    spectrum_part,
    table_model,
    trust_warnings,
)
from vo_ml.service.settings import settings

__all__ = ["bp", "NEIGHBOURS", "place"]

bp = Blueprint("explore_place", __name__, url_prefix="/explore")

#: How many archive spectra nearest to the placed one the answer lists.
NEIGHBOURS = 10
#: The embedding column the map and the distances are of.
EMBEDDING = "embedding"


@bp.route("/<table>/place", methods=["POST"])
def place(table: str) -> Response:
    """The map position, nearest archive spectra and trust measures of the spectrum file sent
    as multipart part ``SPECTRUM``."""
    published = _embedded_table(table)
    try:
        model = table_model(published.name)
    except adql.AdqlError as error:  # the model that embedded the table is not where it was
        raise DaliError(f"FatalFault: {error.message}", 500) from None
    sent = spectrum_part("SPECTRUM")
    if sent is None:
        raise DaliError("UsageFault: send the spectrum file (FITS or VOTable) as multipart "
                        "part SPECTRUM")
    filename, spectrum = sent
    flux, mask = on_grid(spectrum, model, f"SPECTRUM {filename!r}")
    latent, measures = encode_measured(published.name, EMBEDDING, model, flux[None], mask[None])
    x, y = _map_position(latent, model)
    warnings = trust_warnings(published.name, [f"SPECTRUM {filename!r}"], measures,
                              model.preprocessing)
    typicality = measures["typicality"]
    if typicality is None:
        warnings.append(f"the typicality is unknown: {published.name} has no up-to-date "
                        "neighbour index with the archive's own distances; the operator builds "
                        f"it with 'vo-ml index --table {published.name}'")
    return jsonify({
        "ml_x": x, "ml_y": y,
        "neighbours": _neighbours(published, latent[0]),
        "coverage": float(measures["coverage"][0]),
        "typicality": None if typicality is None else float(typicality[0]),
        "encode_error": float(measures["error"][0]),
        "warnings": warnings,
    })


def _embedded_table(name: str) -> Table:
    """The published table ``name``, which must have been embedded (its columns alone are
    not enough: TAP_SCHEMA declares them before ``vo-ml embed`` fills them)."""
    state = archive()
    table = state.schema.table(name)
    if table is None:
        raise DaliError(f"NotFoundFault: {name!r} is not a published table; give a table of "
                        "TAP_SCHEMA, such as the one the explorer shows", 404)
    if any(table.column(c) is None for c in (EMBEDDING, "ml_x", "ml_y")) or (
            state.backend.current_model(table.name) is None):
        raise DaliError(f"NotFoundFault: table {table.name} has no embeddings to place a "
                        "spectrum among; the operator makes them with 'vo-ml embed'", 404)
    return table


def _map_position(latent: np.ndarray, model: TableModel) -> tuple[float, float]:
    """Where the latent vector falls on the table's map: the projection its card names, as
    ``vo-ml embed`` placed the archive's own spectra."""
    from vo_ml.ml.cards import load_card
    from vo_ml.ml.projection import map_xy

    x, y = map_xy(latent, load_card(model.folder), model.folder)[0]
    return float(x), float(y)


def _neighbours(table: Table, vector: np.ndarray) -> list[dict]:
    """The archive spectra nearest to ``vector`` by ml_distance, nearest first, found by the
    ADQL a TOPCAT user would write, planned and run as a TAP query is."""
    shown = ["obs_publisher_did", *(["target_name"] if table.column("target_name") else [])]
    values = " ".join(repr(float(value)) for value in vector)
    query = (f"SELECT TOP {NEIGHBOURS} {', '.join(shown)}, "
             f"ml_distance({EMBEDDING}, ml_vector('{values}')) AS d FROM {table.name} "
             "ORDER BY d")
    timeout = settings().query_timeout
    try:
        translation = adql.translate(query, archive().schema)
    except adql.AdqlError as error:
        raise DaliError(str(error), 500) from None
    chosen = similarity.plan(translation.sql, translation.neighbours, {}, {}, "auto")
    with contextlib.ExitStack() as stack, query_errors(timeout):
        found = chosen.run(Executor(stack, NEIGHBOURS, timeout))
        rows = pa.Table.from_batches(list(found.stream.batches), schema=found.stream.schema)
    return [{"obs_publisher_did": row["obs_publisher_did"],
             "target_name": row.get("target_name"), "distance": row["d"]}
            for row in rows.slice(0, NEIGHBOURS).to_pylist() if row["d"] is not None]
