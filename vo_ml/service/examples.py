"""The human side of the TAP service: the DALI examples document and the ``/tap`` landing page.

``/tap/examples`` follows DALI 1.1 section 2.3: an XHTML page whose RDFa marks each example
(``typeof="example"``) with its ``name`` and its ADQL ``query``, so that TOPCAT lists them in its
examples menu and taplint (stage EXA) can run them. The queries are written for the archive
being served: its first published table and one of its real publisher DIDs, so every example
runs as it stands. ``/tap`` shows the same examples beside a query form posting to ``/tap/sync``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

import numpy as np
from flask import Blueprint, Response, current_app

from vo_ml.service.context import archive, base_url
from vo_ml.service.similarity import current_index

__all__ = ["bp", "Example", "examples_for"]

bp = Blueprint("examples", __name__, url_prefix="/tap")

DALI_EXAMPLES = "http://www.ivoa.net/rdf/examples#"


@dataclass(frozen=True)
class Example:
    """One example query: a short name (also its anchor), what it shows, and the ADQL."""

    anchor: str
    name: str
    explanation: str
    query: str


#: The latent cone's radius when the archive's own distance scale is not known.
LATENT_RADIUS = 0.5


def examples_for(table: str | None, reference: str | None,
                 radius: float = LATENT_RADIUS, columns: Sequence[str] = ()) -> list[Example]:
    """The examples for ``table`` and a publisher DID in it (TAP_SCHEMA ones only without),
    with a latent cone of ``radius``, and those of the tag columns among its ``columns``."""
    examples = [Example(
        "tables", "Published tables", "Every table this service publishes, from TAP_SCHEMA.",
        "SELECT table_name, description FROM TAP_SCHEMA.tables ORDER BY table_name")]
    if table is None:
        return examples
    examples.append(Example(
        "columns", "Columns of the spectra table",
        "The columns of the spectra table with their units and UCDs, including the latent "
        "embedding written by the model.",
        f"SELECT column_name, datatype, arraysize, unit, ucd FROM TAP_SCHEMA.columns "
        f"WHERE table_name = '{table}'"))
    if reference is None:
        return examples
    examples += [
        Example(
            "most-similar", "The spectra most like a given one",
            "The 20 spectra nearest to a reference spectrum in the latent space of the model; "
            "ml_distance is 0 for the reference itself.",
            f"SELECT TOP 20 obs_publisher_did, target_name, ml_distance(embedding, '{reference}') AS d "
            f"FROM {table} ORDER BY d"),
        Example(
            "similar-and-good", "Similar spectra with a good signal-to-noise ratio",
            "Latent-space neighbours of a reference spectrum, keeping only spectra with S/N above 50.",
            f"SELECT TOP 20 obs_publisher_did, target_name, snr, ml_distance(embedding, '{reference}') AS d "
            f"FROM {table} WHERE snr > 50 ORDER BY d"),
        Example(
            "latent-cone", "Every spectrum within a latent radius",
            f"All spectra whose latent distance to a reference spectrum is below {radius:g}, "
            "nearest first: a cone in the latent space, answered exactly.",
            f"SELECT obs_publisher_did, target_name, ml_distance(embedding, '{reference}') AS d "
            f"FROM {table} WHERE ml_distance(embedding, '{reference}') < {radius:g} ORDER BY d"),
        Example(
            "similar-by-angle", "Similar spectra by cosine distance",
            "The 20 spectra whose latent vectors point most nearly the same way as the "
            "reference's, whatever their length.",
            f"SELECT TOP 20 obs_publisher_did, target_name, "
            f"ml_cosine_distance(embedding, '{reference}') AS d FROM {table} ORDER BY d"),
        Example(
            "latent-map", "The latent map",
            "The 2-D map position (ml_x, ml_y) and reconstruction error of every spectrum, for a "
            "scatter plot in TOPCAT.",
            f"SELECT obs_publisher_did, ml_x, ml_y, ml_recon_error FROM {table}"),
    ]
    return examples + _tag_examples(table, set(columns))


def _tag_examples(table: str, columns: set[str]) -> list[Example]:
    """Examples of the columns ``vo-ml tag`` writes, those the table has."""
    examples = []
    if {"ml_teff_lo", "ml_teff_hi", "ml_logg_lo"} <= columns:
        examples.append(Example(
            "confident-fgk", "FGK stars by their tags' intervals",
            "Spectra whose predicted Teff lies between 4000 and 7000 K at 68% confidence (the "
            "whole interval inside the bounds), catalogued or not, with their log g.",
            f"SELECT TOP 50 obs_publisher_did, target_name, ml_teff, ml_teff_lo, ml_teff_hi, "
            f"ml_logg, ml_logg_lo, ml_logg_hi FROM {table} WHERE ml_teff_lo > 4000 "
            "AND ml_teff_hi < 7000 ORDER BY ml_teff"))
    if "ml_anomaly" in columns:
        examples.append(Example(
            "oddities", "The oddest spectra",
            "The 20 spectra the model reconstructs worst or that sit most alone in the latent "
            "space, with the score (0 to 1) that ranks them.",
            f"SELECT TOP 20 obs_publisher_did, target_name, ml_anomaly, ml_recon_error "
            f"FROM {table} ORDER BY ml_anomaly DESC"))
    return examples


def _served_examples() -> list[Example]:
    """The examples for the served archive, worked out once per app: it is read-only while
    served, and finding a reference reads the table."""
    extensions = current_app.extensions
    if "vo_ml_examples" not in extensions:
        extensions["vo_ml_examples"] = _examples_of_archive()
    return extensions["vo_ml_examples"]


def _examples_of_archive() -> list[Example]:
    schema = archive().schema
    tables = [t for s in schema.schemas if s.name.upper() not in ("TAP_SCHEMA", "IVOA")
              for t in s.tables]
    embedded = [t for t in tables if {"obs_publisher_did", "embedding"} <= set(t.column_names)]
    chosen = (embedded or tables or [None])[0]
    table = chosen.name if chosen else None
    reference = None
    if embedded:
        rows = archive().backend.execute(
            f"SELECT obs_publisher_did FROM {table} WHERE embedding IS NOT NULL "
            "ORDER BY obs_publisher_did LIMIT 1").rows()
        reference = rows[0][0] if rows else None
    return examples_for(table, reference, _latent_radius(table) if reference else LATENT_RADIUS,
                        chosen.column_names if chosen else ())


def _latent_radius(table: str) -> float:
    """A latent radius on the scale of the table's model: the distance within which 90% of its
    spectra have their nearest neighbour (kept with its L2 index), to two digits; else
    :data:`LATENT_RADIUS`. Each model has its own scale, so no fixed radius suits them all."""
    index = current_index(table, "embedding", "l2")
    if index is None or not index.knows_typicality:
        return LATENT_RADIUS
    return float(f"{np.quantile(index.meta['nearest_distances'], 0.9):.2g}")


def _example_html(example: Example) -> str:
    return (f'<div typeof="example" id="{example.anchor}" resource="#{example.anchor}">\n'
            f'  <h2 property="name">{escape(example.name)}</h2>\n'
            f"  <p>{escape(example.explanation)}</p>\n"
            f'  <pre class="dali-example-query" property="query">{escape(example.query)}</pre>\n'
            "</div>\n")


def _page(title: str, body: str) -> Response:
    html = ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML+RDFa 1.1//EN" '
            '"http://www.w3.org/MarkUp/DTD/xhtml-rdfa-2.dtd">\n'
            f'<html xmlns="http://www.w3.org/1999/xhtml">\n<head><title>{escape(title)}</title>'
            '<meta http-equiv="Content-Type" content="text/html; charset=utf-8"/></head>\n'
            f"<body>\n{body}</body>\n</html>\n")
    return Response(html, mimetype="application/xhtml+xml")


@bp.route("/examples")
def examples() -> Response:
    items = "".join(_example_html(e) for e in _served_examples())
    body = (f'<div vocab="{DALI_EXAMPLES}">\n<h1>Example queries</h1>\n{items}</div>\n')
    return _page("vo_ml TAP examples", body)


@bp.route("")
@bp.route("/")
def landing() -> Response:
    """A page for people: what the service is, a query form, and the examples to start from."""
    root = f"{base_url()}/tap"
    served = _served_examples()
    first = next((e for e in served if e.anchor == "most-similar"), served[0]).query
    items = "".join(
        f'<li><a href="examples#{e.anchor}">{escape(e.name)}</a>: <code>{escape(e.query)}</code></li>\n'
        for e in served)
    body = (
        f"<h1>vo_ml TAP service</h1>\n"
        f"<p>IVOA TAP 1.1 at <code>{escape(root)}</code>, with latent-space similarity in ADQL. "
        "Point TOPCAT (VO &gt; Table Access Protocol) or pyvo at this URL, or type a query here.</p>\n"
        f'<form method="post" action="{escape(root)}/sync">\n'
        '<input type="hidden" name="LANG" value="ADQL"/>\n'
        f'<textarea name="QUERY" rows="6" cols="100">{escape(first)}</textarea><br/>\n'
        '<label>MAXREC <input type="text" name="MAXREC" value="1000" size="8"/></label>\n'
        '<input type="submit" value="Run query"/>\n</form>\n'
        f"<h2>Examples</h2>\n<ul>\n{items}</ul>\n"
        '<p><a href="tables">Tables</a> · <a href="capabilities">Capabilities</a> · '
        '<a href="availability">Availability</a> · '
        f'<a href="{escape(base_url())}/datalink/terms">DataLink</a>: every result row with an '
        "obs_publisher_did leads to its file, a preview, similar spectra and why they are "
        f'similar (<code>{escape(base_url())}/datalink/links?ID=...</code>) · '
        f'<a href="{escape(base_url())}/oai.xml?verb=Identify">Registry</a>: the records '
        "the VO registries harvest (OAI-PMH)</p>\n")
    return _page("vo_ml TAP service", body)
