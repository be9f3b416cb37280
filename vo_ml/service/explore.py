"""``/explore``: the latent map of a published table in the browser.

Every spectrum a model embedded has a 2-D map position (``ml_x``, ``ml_y``); the explorer draws
all of them as a WebGL scatter plot (regl-scatterplot, vendored as one built file under
``static/explore/``, with its licences), coloured by any numeric column. A click on a point asks
the DataLink endpoints for its preview, its nearest neighbours and why they are near; a box or
lasso drawn on the map becomes the ADQL that returns the same rows from ``/tap/sync``.

- ``/explore``: the published tables that have a map, each linked to its page;
- ``/explore/<schema.table>``: the page, with what it needs to know of the table (columns,
  units, tag bounds, the service's root URL) as JSON in the page itself;
- ``/explore/<schema.table>/points``: every mapped row as an Apache Arrow IPC stream.

Why Arrow for the points: the stream pyarrow writes once is the response body, kept on disk and
sent as it is on every later request; it carries its own types, units and descriptions (any
Arrow reader, from pyarrow to apache-arrow in the browser, reads it with no format of ours to
learn), and the browser maps the numeric columns onto typed arrays without copying or parsing,
while the strings (publisher DIDs, target names) are only decoded for the rows shown. Positions
stay float64, so a selection computed by the page is the one the database computes from the
same bounds; the colour columns are float32, enough for a colour, NaN where the value is missing.
Rows come sorted by publisher DID (in code-point order, whatever the database's collation), so
the page finds a DID named by a DataLink answer by binary search.

The stream is kept in ``<archive>.explore/`` (beside the jobs folder, like the DataLink
previews), named by a key of the table's model id, its columns and its mapped row count: a
restart serves it without reading the table, and a new embedding or tagging (new columns under
the same model) makes a new key. A gzip copy is kept beside it for the browsers that ask.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from html import escape
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from flask import Blueprint, Response, current_app, request, send_file, url_for

from vo_ml.archive.tap_schema import Column, Table
from vo_ml.files import replacing
from vo_ml.service.context import archive, base_url
from vo_ml.service.dali import DaliError
from vo_ml.service.settings import settings

__all__ = ["bp", "ARROW_STREAM_MIME", "colour_columns", "mapped_tables", "points_file"]

bp = Blueprint("explore", __name__, url_prefix="/explore", static_folder="static/explore",
               static_url_path="/static")

#: The IANA media type of an Arrow IPC stream.
ARROW_STREAM_MIME = "application/vnd.apache.arrow.stream"
MAP_COLUMNS = ("ml_x", "ml_y")
NUMERIC = frozenset({"unsignedByte", "short", "int", "long", "float", "double"})
#: Suffixes of the interval columns of a tag (``ml_teff_lo`` ...): shown with their tag in the
#: side panel, not offered as colours of their own.
BOUND_SUFFIXES = ("_lo", "_hi", "_lo95", "_hi95")
#: The first of these the table has colours the map when the page opens.
DEFAULT_COLOURS = ("ml_teff", "teff", "ml_anomaly", "snr")
#: gzip effort for the kept copy: level 1 is several times faster than the default and loses
#: little on float columns, which hardly compress anyway; the DIDs compress well at any level.
GZIP_LEVEL = 1


def mapped_tables() -> list[Table]:
    """The published tables with a map position from a model, in TAP_SCHEMA's order."""
    state = archive()
    return [table for table in state.schema.tables.values()
            if {*MAP_COLUMNS, "obs_publisher_did"} <= set(table.column_names)
            and state.backend.current_model(table.name) is not None]


def _mapped_table(name: str) -> Table:
    """The published table ``name`` with a map; a DALI 404 saying which tables have one."""
    for table in mapped_tables():
        if table.name.lower() == name.lower():
            return table
    known = ", ".join(t.name for t in mapped_tables()) or "none yet (run 'vo-ml embed')"
    raise DaliError(f"NotFoundFault: {name!r} is not a published table with a latent map "
                    f"(ml_x, ml_y); tables with one: {known}", 404)


def colour_columns(table: Table) -> list[Column]:
    """The numeric scalar columns the map can be coloured by: all but the map position itself
    and the interval bounds of tags."""
    names = set(table.column_names)
    return [column for column in table.columns
            if column.datatype in NUMERIC and not column.is_array
            and column.name not in MAP_COLUMNS and not _is_bound(column.name, names)]


def _is_bound(name: str, names: set[str]) -> bool:
    return any(name.endswith(suffix) and name[:-len(suffix)] in names for suffix in BOUND_SUFFIXES)


def _tag_bounds(table: Table) -> list[dict[str, str]]:
    """The tags with 68% bounds (``ml_teff`` with ``ml_teff_lo`` and ``ml_teff_hi``)."""
    names = set(table.column_names)
    return [{"name": name, "lo": f"{name}_lo", "hi": f"{name}_hi"}
            for name in table.column_names if {f"{name}_lo", f"{name}_hi"} <= names]


# --- the points -------------------------------------------------------------------------------

def points_file(table: Table) -> Path:
    """The Arrow stream of the table's mapped rows, written on the first request for its key
    and named once per app: the archive is read-only while it is served."""
    known = current_app.extensions.setdefault("vo_ml_explore", {})
    if table.name not in known:
        known[table.name] = _written_points(table)
    return known[table.name]


def _written_points(table: Table) -> Path:
    folder = Path(settings().jobs_folder).with_suffix(".explore")
    key = _points_key(table)
    path = folder / f"{table.name}.{key}.arrow"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        data = _points_stream(table)
        with replacing(f"{path}.gz") as compressed:
            compressed.path.write_bytes(gzip.compress(data, GZIP_LEVEL, mtime=0))
        with replacing(path) as plain:
            plain.path.write_bytes(data)
        for stale in folder.glob(f"{table.name}.*.arrow*"):
            if not stale.name.startswith(path.name):
                stale.unlink(missing_ok=True)
    return path


def _points_key(table: Table) -> str:
    """What the stream depends on: the model, the columns (tags are added later under the same
    model) and how many rows have a position."""
    backend = archive().backend
    card = backend.current_model(table.name)
    x, y = (table.column(name).sql_name for name in MAP_COLUMNS)
    count = backend.execute(f"SELECT count(*) FROM {table.name} "
                            f"WHERE {x} IS NOT NULL AND {y} IS NOT NULL").rows()[0][0]
    described = [card["model_id"], [(c.name, c.datatype) for c in table.columns], int(count)]
    return hashlib.sha256(json.dumps(described).encode()).hexdigest()[:16]


def _points_stream(table: Table) -> bytes:
    """Every mapped row: DID, target (if the table has one), position, colour columns."""
    wanted = [table.column("obs_publisher_did"), table.column("target_name"),
              *(table.column(name) for name in MAP_COLUMNS), *colour_columns(table)]
    columns = [column for column in wanted if column is not None]
    x, y = (table.column(name).sql_name for name in MAP_COLUMNS)
    sql = (f"SELECT {', '.join(c.sql_name for c in columns)} FROM {table.name} "
           f"WHERE {x} IS NOT NULL AND {y} IS NOT NULL")
    with archive().backend.stream(sql) as result:
        rows = pa.Table.from_batches(list(result.batches), schema=result.schema)
    rows = rows.take(pc.sort_indices(rows.column(0)))
    arrays = [_arrow_column(column, rows.column(i)) for i, column in enumerate(columns)]
    schema = pa.schema(
        [pa.field(column.name, array.type, metadata=_field_metadata(column))
         for column, array in zip(columns, arrays, strict=True)],
        metadata={"table": table.name,
                  "model_id": archive().backend.current_model(table.name)["model_id"]})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
    return sink.getvalue().to_pybytes()


def _arrow_column(column: Column, values: pa.ChunkedArray) -> pa.Array:
    """As the page reads it: positions float64, colours float32 with NaN for a missing value,
    target names dictionary-encoded (a target has many spectra), DIDs as they are."""
    values = values.combine_chunks()
    if column.name in MAP_COLUMNS:
        return values.cast(pa.float64())
    if column.datatype in NUMERIC:
        return values.cast(pa.float32()).fill_null(float("nan"))
    if column.name == "target_name":
        return values.cast(pa.string()).dictionary_encode()
    return values.cast(pa.string())


def _field_metadata(column: Column) -> dict[str, str]:
    described = {"unit": column.unit, "ucd": column.ucd, "description": column.description}
    return {key: value for key, value in described.items() if value}


@bp.route("/<name>/points")
def points(name: str) -> Response:
    """The points as an Arrow stream, gzip-compressed for a client that accepts it."""
    path = points_file(_mapped_table(name))
    compressed = "gzip" in request.headers.get("Accept-Encoding", "")
    response = send_file(f"{path}.gz" if compressed else path, mimetype=ARROW_STREAM_MIME,
                         etag=path.stem.rpartition(".")[2], max_age=0)
    if compressed:
        response.headers["Content-Encoding"] = "gzip"
    response.headers["Vary"] = "Accept-Encoding"
    return response


# --- the pages --------------------------------------------------------------------------------

def _html(title: str, body: str, head: str = "") -> Response:
    return Response(f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8"/>\n'
                    '<meta name="viewport" content="width=device-width, initial-scale=1"/>\n'
                    f'<title>{escape(title)}</title>\n<link rel="icon" href="data:,"/>\n'
                    f"{head}</head>\n<body>\n{body}</body>\n</html>\n", mimetype="text/html")


@bp.route("")
@bp.route("/")
def tables() -> Response:
    """The tables with a latent map, for a person to pick one."""
    items = "".join(
        f'<li><a href="{escape(url_for("explore.page", name=t.name))}">{escape(t.name)}</a>: '
        f"{escape(t.description)}</li>\n" for t in mapped_tables())
    body = ("<h1>Latent maps</h1>\n<p>The published tables whose spectra a model has placed on "
            "a 2-D map (columns <code>ml_x</code>, <code>ml_y</code>).</p>\n"
            + (f"<ul>\n{items}</ul>\n" if items else
               "<p>None yet: <code>vo-ml embed</code> writes the map of a table.</p>\n")
            + f'<p><a href="{escape(base_url())}/tap">TAP service</a></p>\n')
    return _html("vo_ml latent maps", body)


@bp.route("/<name>")
def page(name: str) -> Response:
    """The explorer of one table: the map, its controls and the side panel, drawn by the
    bundled script from the configuration embedded here."""
    table = _mapped_table(name)
    colours = colour_columns(table)
    names = [c.name for c in colours]
    config = {
        "table": table.name,
        "root": base_url(),
        "points": url_for("explore.points", name=table.name),
        "place": f"{url_for('explore.page', name=table.name)}/place",
        "hasTarget": table.column("target_name") is not None,
        "columns": [{"name": c.name, "unit": c.unit or "", "description": c.description}
                    for c in colours],
        "colour": next((n for n in DEFAULT_COLOURS if n in names), names[0] if names else None),
        "bounds": _tag_bounds(table),
    }
    # "</" cannot end the script element early once escaped in the JSON text.
    embedded = json.dumps(config).replace("</", "<\\/")
    static = url_for("explore.static", filename="")
    head = (f'<link rel="stylesheet" href="{static}explore.css"/>\n'
            f'<script id="explore-config" type="application/json">{embedded}</script>\n'
            f'<script defer src="{static}explore.js"></script>\n')
    body = (f'<header><h1>Latent map of <code>{escape(table.name)}</code></h1>\n'
            f'<nav><a href="{escape(url_for("explore.tables"))}">All maps</a> · '
            f'<a href="{escape(base_url())}/tap">TAP</a></nav></header>\n'
            '<main id="explore" aria-busy="true"><p id="status" role="status">Loading the '
            "map…</p></main>\n"
            '<noscript><p>The map needs JavaScript and WebGL; the same data is in TAP: '
            f"<code>SELECT obs_publisher_did, ml_x, ml_y FROM {escape(table.name)}</code></p>"
            "</noscript>\n")
    return _html(f"Latent map of {table.name}", body, head)
