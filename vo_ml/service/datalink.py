"""DataLink 1.1: from a spectrum's publisher DID to everything about it.

``/datalink/links`` is the ``{links}`` endpoint: any number of ``ID`` values (GET or POST), one
VOTable whose rows are, for each ID in the order asked, all its links together:

- ``#this``: the original file (``/ssa/data``), with its MIME type and size;
- ``#preview-plot``: a PNG of the spectrum with the model's reconstruction and masked ranges;
- ``#derivation``: the reconstruction as a Spectrum DM VOTable;
- ``#documentation``: the card of the model that embedded it;
- ``#counterpart``: the ``{links}`` of other spectra of the same target;
- this service's terms ``similar`` and ``why-similar`` (full URIs, explained on
  ``/datalink/terms``), through the service descriptors of :mod:`vo_ml.service.descriptors`.

An unknown ID gets one row whose ``error_message`` starts ``NotFoundFault:``. MAXREC caps the
rows (an OVERFLOW INFO says so); links of a table without a model are the file and its
counterparts. Previews are drawn once per model and kept beside the archive.
"""

from __future__ import annotations

import hashlib
import io
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pyarrow as pa
from astropy.io.votable.tree import Field, Param, Resource, TableElement, VOTableFile
from flask import Blueprint, Response, jsonify

from vo_ml.archive.tap_schema import Column, Table
from vo_ml.files import replacing
from vo_ml.service.context import archive, base_url
from vo_ml.service.dal import maxrec_of, request_parameters, request_part, serve
from vo_ml.service.dali import DaliError, DaliParameters
from vo_ml.service.descriptors import (
    DEFAULT_K,
    LINKS_PATH,
    LINKS_STANDARD,
    MAX_K,
    METRICS,
    TERMS_PATH,
    similar_descriptor,
    why_descriptor,
)
from vo_ml.service.encoding import TableModel, on_grid, spectrum_part, table_model
from vo_ml.service.settings import settings
from vo_ml.service.tap import parse_query
from vo_ml.service.votable import VOTABLE_MIME, stream_votable
from vo_ml.spectra.readers import read_spectrum
from vo_ml.spectra.record import SpectrumReadError

__all__ = ["bp", "LINKS_MIME", "LINK_COLUMNS", "link_rows", "spectrum_file"]

bp = Blueprint("datalink", __name__, url_prefix="/datalink")

LINKS_MIME = "application/x-votable+xml;content=datalink"
#: RESPONSEFORMAT values a links request may give: all mean the DataLink VOTable.
LINKS_FORMATS = (LINKS_MIME, "votable", VOTABLE_MIME, "text/xml")
#: At most this many other spectra of a target are linked as counterparts.
MAX_COUNTERPARTS = 20
PNG_MIME = "image/png"

#: The columns of a links response, DataLink 1.1 section 3.2, with their UCDs.
LINK_COLUMNS = (
    Column("ID", "char", "Identifier the links are for, as given in the request",
           ucd="meta.id;meta.main"),
    Column("access_url", "char", "URL of the linked resource", ucd="meta.ref.url"),
    Column("service_def", "char", "ID of the service descriptor to call", ucd="meta.ref"),
    Column("error_message", "char", "Why there is no link", ucd="meta.code.error"),
    Column("semantics", "char", "What the linked resource is to the ID", ucd="meta.code"),
    Column("description", "char", "The link in words", ucd="meta.note"),
    Column("content_type", "char", "MIME type of the linked resource", ucd="meta.code.mime"),
    Column("content_length", "long", "Size of the linked resource", unit="byte",
           ucd="phys.size;meta.file"),
    Column("content_qualifier", "char", "What the linked resource holds",
           ucd="meta.code.class"),
    Column("local_semantics", "char", "This service's own name for the link", ucd="meta.code"),
    Column("link_auth", "char", "Whether the link needs authentication", ucd="meta.code"),
    Column("link_authorized", "boolean", "Whether the caller may follow the link",
           ucd="meta.code"),
)
_SCHEMA = pa.schema([(c.name, pa.int64() if c.datatype == "long" else
                      pa.bool_() if c.datatype == "boolean" else pa.string())
                     for c in LINK_COLUMNS])


@dataclass(frozen=True)
class Link:
    """One row of a links response; exactly one of access_url, service_def, error_message."""

    id: str
    semantics: str
    description: str
    access_url: str | None = None
    service_def: str | None = None
    error_message: str | None = None
    content_type: str | None = None
    content_length: int | None = None
    local_semantics: str | None = None

    def values(self) -> tuple:
        public = self.error_message is None
        return (self.id, self.access_url, self.service_def, self.error_message, self.semantics,
                self.description, self.content_type, self.content_length, None,
                self.local_semantics, "false" if public else None, True if public else None)


@dataclass(frozen=True)
class _Spectrum:
    """What the links of one DID are made from."""

    did: str
    path: Path
    table: Table
    target: str | None
    content_type: str | None
    model_id: str | None


# --- {links} ----------------------------------------------------------------------------------

@bp.route("/links", methods=["GET", "POST"])
def links() -> Response:
    parameters = request_parameters()
    ids = list(dict.fromkeys(parameters.all("ID")))
    if not ids:
        raise DaliError("UsageFault: give at least one ID, the publisher DID of a spectrum "
                        "(the obs_publisher_did of a TAP or SSA result)")
    wanted = parameters.get("RESPONSEFORMAT")
    if wanted is not None and wanted.replace(" ", "").lower() not in LINKS_FORMATS:
        raise DaliError(f"UsageFault: RESPONSEFORMAT={wanted!r} is not supported: use "
                        f"{LINKS_MIME} (the default)")
    maxrec = maxrec_of(parameters)
    root = base_url()
    rows = [link.values() for link in link_rows(ids, root)]
    overflow = len(rows) > maxrec
    batch = pa.RecordBatch.from_pylist(
        [dict(zip(_SCHEMA.names, row, strict=True)) for row in rows[:maxrec]], schema=_SCHEMA)
    document = stream_votable(_SCHEMA, [batch], LINK_COLUMNS, lambda: overflow, "tabledata",
                              (("standardID", LINKS_STANDARD),),
                              (similar_descriptor("ID").under(root), why_descriptor("ID").under(root)))
    return Response(document, mimetype=LINKS_MIME)


def link_rows(ids: Sequence[str], root: str) -> Iterator[Link]:
    """Every link of each of ``ids``, in the order given, all of one ID together."""
    found = _spectra(ids)
    counterparts = _counterparts(list(found.values()))
    for did in ids:
        spectrum = found.get(did)
        if spectrum is None:
            yield Link(did, "#this", "No spectrum has this ID", error_message=(
                f"NotFoundFault: {did!r} is not the publisher DID of any spectrum here; take IDs "
                "from the obs_publisher_did column of a TAP or SSA result"))
            continue
        yield from _links_of(spectrum, counterparts.get(did, ()), root)


def _links_of(spectrum: _Spectrum, others: Sequence[str], root: str) -> Iterator[Link]:
    did, quoted = spectrum.did, quote(spectrum.did, safe="")
    yield _file_link(spectrum, f"{root}/ssa/data?ID={quoted}")
    if spectrum.model_id is not None:
        yield Link(did, "#preview-plot", "Plot of the spectrum with the model's reconstruction "
                   "and its masked ranges", f"{root}/datalink/preview?ID={quoted}",
                   content_type=PNG_MIME)
        yield Link(did, "#derivation", f"The spectrum as model {spectrum.model_id} reconstructs "
                   "it from its latent vector, on the model's grid",
                   f"{root}/datalink/reconstruction?ID={quoted}", content_type=VOTABLE_MIME)
        yield Link(did, "#documentation", f"Card of model {spectrum.model_id}, which made the "
                   "latent vector", f"{root}/datalink/models/{quote(spectrum.model_id)}",
                   content_type="application/json")
    for other in others:
        yield Link(did, "#counterpart", f"Another spectrum of {spectrum.target}: {other}",
                   f"{root}{LINKS_PATH}?ID={quote(other, safe='')}", content_type=LINKS_MIME)
    if spectrum.model_id is not None:
        yield Link(did, f"{root}{TERMS_PATH}#similar", "The spectra most similar to this one "
                   "in the latent space (inputs K and METRIC)", service_def="similar-spectra",
                   content_type=VOTABLE_MIME, local_semantics="similar")
        yield Link(did, f"{root}{TERMS_PATH}#why-similar", "Why this spectrum and another one "
                   "(input REF) are similar: the wavelength windows that make their distance",
                   service_def="why-similar", content_type=VOTABLE_MIME,
                   local_semantics="why-similar")


def _file_link(spectrum: _Spectrum, url: str) -> Link:
    try:
        size = spectrum.path.stat().st_size
    except OSError:
        return Link(spectrum.did, "#this", "The original file", error_message=(
            "NotFoundFault: the file of this spectrum has been moved or deleted since it was "
            "ingested; the archive operator must restore it"))
    return Link(spectrum.did, "#this", "The spectrum file as it was ingested", url,
                content_type=spectrum.content_type, content_length=size)


def _spectra(ids: Sequence[str]) -> dict[str, _Spectrum]:
    """The published spectra among ``ids``, read with one lookup per table."""
    state = archive()
    sources = state.backend.ingested_sources(ids)
    by_table: dict[str, list[str]] = defaultdict(list)
    for did, (_, table) in sources.items():
        if state.schema.table(table) is not None:
            by_table[table].append(did)
    found = {}
    for name, dids in by_table.items():
        table = state.schema.table(name)
        card = state.backend.current_model(name)
        model_id = card["model_id"] if card else None
        rows = state.backend.lookup(
            f"SELECT obs_publisher_did, target_name, access_format FROM {table.name} "
            "WHERE obs_publisher_did IN (SELECT unnest(?::VARCHAR[]))", [dids])
        for did, target, content_type in rows:
            found[did] = _Spectrum(did, Path(sources[did][0]), table, target, content_type,
                                   model_id)
    return found


def _counterparts(spectra: Sequence[_Spectrum]) -> dict[str, list[str]]:
    """For each DID, up to :data:`MAX_COUNTERPARTS` other spectra of its target and table."""
    targets: dict[str, set[str]] = defaultdict(set)
    for spectrum in spectra:
        if spectrum.target:
            targets[spectrum.table.name].add(spectrum.target)
    by_target: dict[tuple[str, str], list[str]] = {}
    for table, names in targets.items():
        rows = archive().backend.lookup(
            f"SELECT target_name, obs_publisher_did FROM (SELECT target_name, obs_publisher_did, "
            "row_number() OVER (PARTITION BY target_name ORDER BY obs_publisher_did) AS n "
            f"FROM {table} WHERE target_name IN (SELECT unnest(?::VARCHAR[]))) WHERE n <= ? "
            "ORDER BY target_name, obs_publisher_did", [sorted(names), MAX_COUNTERPARTS + 1])
        for target, did in rows:
            by_target.setdefault((table, target), []).append(did)
    return {s.did: [d for d in by_target.get((s.table.name, s.target or ""), []) if d != s.did]
            [:MAX_COUNTERPARTS] for s in spectra}


# --- what the links lead to -------------------------------------------------------------------

def spectrum_file(did: str) -> tuple[Path, str]:
    """(file, table name) of a published spectrum; 404 if unknown, 410 if its file has gone."""
    state = archive()
    source = state.backend.ingested_source(did)
    if source is None or state.schema.table(source[1]) is None:
        raise DaliError(f"NotFoundFault: ID={did!r} is not the publisher DID of any spectrum "
                        "here: take the ID from an SSA or TAP result", 404)
    path = Path(source[0])
    if not path.is_file():
        raise DaliError(f"NotFoundFault: the file of ID={did!r} has been moved or deleted since it "
                        "was ingested; the archive operator must restore it", 410)
    return path, source[1]


@dataclass(frozen=True)
class Reconstruction:
    """A spectrum on the model's sampling, its mask, and the model's reconstruction of it."""

    wavelength: np.ndarray
    flux: np.ndarray
    mask: np.ndarray
    model: np.ndarray


def reconstruction(did: str) -> tuple[Reconstruction, TableModel]:
    """The spectrum ``did`` as its table's model sees and reconstructs it, from its file.

    TensorFlow loads here, at the first request that needs a model, not when the service starts.
    """
    from vo_ml.ml.embedding import reconstruct
    from vo_ml.ml.explain import model_wavelengths

    path, table = spectrum_file(did)
    model = table_model(table)
    flux, mask = _archive_on_grid(path, did, model)
    seen, seen_mask, rebuilt = reconstruct(flux[None], mask[None], model.folder)
    wavelength, _ = model_wavelengths(model.folder)
    return Reconstruction(wavelength[:seen.shape[1]], seen[0], seen_mask[0], rebuilt[0]), model


def _archive_on_grid(path: Path, did: str, model: TableModel, parameter: str = "ID"
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The archive's own file of ``did`` (given as ``parameter``) on the model's grid; a file
    that no longer reads or encodes is the archive's fault (500), said as such."""
    what = f"the file of {parameter}={did!r}"
    try:
        spectrum = read_spectrum(path)
    except (SpectrumReadError, OSError) as error:
        raise DaliError(f"FatalFault: {what} can no longer be read: {error}", 500) from None
    return on_grid(spectrum, model, what, 500)


@bp.route("/preview")
def preview() -> Response:
    """The ``#preview-plot`` PNG, drawn once per spectrum and model and kept beside the archive."""
    did = request_parameters().required("ID")
    path, table = spectrum_file(did)
    card = archive().backend.current_model(table)
    if card is None:
        raise DaliError(f"NotFoundFault: ID={did!r} has no model reconstruction yet: its table "
                        "has no embeddings", 404)
    cached = _preview_cache() / card["model_id"] / f"{hashlib.sha256(did.encode()).hexdigest()}.png"
    if not cached.is_file():
        from vo_ml.ml.figures import preview_png

        spectrum, _ = reconstruction(did)
        cached.parent.mkdir(parents=True, exist_ok=True)
        with replacing(cached) as replacement:
            replacement.path.write_bytes(preview_png(
                spectrum.wavelength, spectrum.flux, spectrum.mask, spectrum.model,
                f"{did} ({path.name}) and model {card['model_id']}"))
    return Response(cached.read_bytes(), mimetype=PNG_MIME)


def _preview_cache() -> Path:
    return Path(settings().jobs_folder).with_suffix(".previews")


@bp.route("/reconstruction")
def reconstruction_votable() -> Response:
    """``#derivation``: the model's reconstruction as a Spectrum DM 1.1 VOTable."""
    did = request_parameters().required("ID")
    spectrum, model = reconstruction(did)
    return _votable_response(
        "reconstruction", "spec:Spectrum",
        {"DataModel": "Spectrum-1.1", "PublisherDID": did, "Model": model.model_id,
         "AIRORVAC": model.preprocessing.grid.medium},
        [(dict(name="wavelength", datatype="double", unit="0.1nm", ucd="em.wl",
                utype="spec:Data.SpectralAxis.Value"),
          "Wavelength at the model's sampling", spectrum.wavelength),
         (dict(name="flux", datatype="double", ucd="phot.flux.density;em.wl",
                utype="spec:Data.FluxAxis.Value"),
          "Normalised flux as the model reconstructs it", spectrum.model),
         (dict(name="observed", datatype="double", ucd="phot.flux.density;em.wl;obs"),
          "Normalised flux as the model reads it", np.where(spectrum.mask, np.nan, spectrum.flux)),
         (dict(name="masked", datatype="boolean", ucd="meta.code.qual"),
          "True where the pixel was not observed", spectrum.mask)])


def _votable_response(name: str, utype: str | None, params: dict[str, str],
                      columns: Sequence[tuple[dict, str, Sequence]]) -> Response:
    """A one-table VOTable: char PARAMs, and columns given as (the FIELD's attributes, its
    description, its values)."""
    votable = VOTableFile(version="1.4")
    resource = Resource(type="results", utype=utype)
    votable.resources.append(resource)
    table = TableElement(votable, name=name)
    resource.tables.append(table)
    for key, value in params.items():
        table.params.append(Param(votable, name=key, datatype="char", arraysize="*", value=value))
    for attributes, description, _ in columns:
        text = {"arraysize": "*"} if attributes["datatype"] == "char" else {}
        field = Field(votable, **attributes, **text)
        field.description = description
        table.fields.append(field)
    table.create_arrays(len(columns[0][2]) if columns else 0)
    for attributes, _, values in columns:
        table.array[attributes["name"]] = values
    buffer = io.BytesIO()
    votable.to_xml(buffer)
    return Response(buffer.getvalue(), mimetype=VOTABLE_MIME)


@bp.route("/models/<model_id>")
def model_card(model_id: str) -> Response:
    """``#documentation``: the card of a model that embedded a published table."""
    state = archive()
    for name in state.schema.tables:
        card = state.backend.current_model(name)
        if card is not None and card["model_id"] == model_id:
            return jsonify(card)
    raise DaliError(f"NotFoundFault: no published table was embedded by model {model_id!r}", 404)


# --- similar ----------------------------------------------------------------------------------

@bp.route("/similar", methods=["GET", "POST"])
def similar() -> Response:
    """The K spectra nearest to ``ID`` in the latent space, as the ADQL query a TOPCAT user
    would write (``TOP K ... ORDER BY ml_distance(embedding, ID)``), run by the TAP service."""
    parameters = request_parameters()
    query = similar_query(parameters)
    tap = DaliParameters([("LANG", "ADQL"), ("QUERY", query),
                          *[(k, v) for k, v in parameters.pairs() if k.upper() == "RESPONSEFORMAT"]])
    return serve(lambda _: parse_query(tap, request_part, settings().query_timeout))


def similar_query(parameters: DaliParameters) -> str:
    """The ADQL of a "similar" request; DaliError names a bad ID, K or METRIC."""
    did = parameters.required("ID")
    _, table_name = spectrum_file(did)
    table = archive().schema.table(table_name)
    text = parameters.get("K", str(DEFAULT_K))
    if not text.strip().isdigit() or not 1 <= int(text) <= MAX_K:
        raise DaliError(f"UsageFault: K={text!r} must be a whole number from 1 to {MAX_K}")
    metric = parameters.get("METRIC", "l2").lower()
    if metric not in METRICS:
        raise DaliError(f"UsageFault: METRIC={metric!r} is not supported: use one of "
                        f"{', '.join(METRICS)}")
    if table.column("embedding") is None:
        raise DaliError(f"NotFoundFault: table {table.name} has no embeddings yet", 404)
    shown = [c.name for c in table.columns if c.principal and not c.is_array]
    literal = did.replace("'", "''")
    return (f"SELECT TOP {int(text)} {', '.join(shown)}, "
            f"{METRICS[metric]}(embedding, '{literal}') AS latent_distance FROM {table.name} "
            f"WHERE obs_publisher_did <> '{literal}' ORDER BY latent_distance")


# --- why similar ------------------------------------------------------------------------------

@bp.route("/why", methods=["GET", "POST"])
def why() -> Response:
    """Why ``ID`` and ``REF`` (a publisher DID, or a spectrum file sent as multipart part
    ``SPECTRUM``) are near in the latent space: the windows table, or with
    ``RESPONSEFORMAT=image/png`` both spectra over the attribution strip."""
    from vo_ml.ml.explain import explain_rows
    from vo_ml.ml.figures import explanation_png

    parameters = request_parameters()
    wanted = (parameters.get("RESPONSEFORMAT") or "votable").replace(" ", "").lower()
    if wanted not in (*LINKS_FORMATS[1:], PNG_MIME):
        raise DaliError(f"UsageFault: RESPONSEFORMAT={wanted!r} is not supported: use votable "
                        f"or {PNG_MIME}")
    did = parameters.required("ID")
    path, table = spectrum_file(did)
    model = table_model(table)
    reference, (ref_flux, ref_mask) = _reference(parameters, table, model)
    flux, mask = _archive_on_grid(path, did, model)
    explanation = explain_rows(model.folder, flux, mask, ref_flux, ref_mask)
    if wanted == PNG_MIME:
        return Response(explanation_png(explanation, (did, reference)), mimetype=PNG_MIME)
    rows = explanation.windows()
    side = {"spectrum": "ID", "reference": "REF", "equal": "equal"}
    return _votable_response(
        "why_similar", None,
        {"ID": did, "REF": reference, "Model": model.model_id,
         "distance": f"{np.sqrt(explanation.distance2):.6g}",
         "completeness_error": f"{explanation.completeness_error:.3g}"},
        [(dict(name="window", datatype="char", ucd="meta.id;spect.line"),
          "Named wavelength window (Lick index, Balmer line, ...) or 'other'",
          [r.name for r in rows]),
         (dict(name="wl_min", datatype="double", unit="0.1nm", ucd="em.wl;stat.min"),
          "Start of the window", [r.start for r in rows]),
         (dict(name="wl_max", datatype="double", unit="0.1nm", ucd="em.wl;stat.max"),
          "End of the window", [r.stop for r in rows]),
         (dict(name="share", datatype="double", ucd="arith.ratio"),
          "Share of the squared latent distance from the window's pixels",
          [r.share for r in rows]),
         (dict(name="deeper", datatype="char", ucd="meta.code"),
          "Which spectrum has the deeper feature in the window: ID, REF or equal",
          [side[r.deeper] for r in rows])])


def _reference(parameters: DaliParameters, table: str, model: TableModel
               ) -> tuple[str, tuple[np.ndarray, np.ndarray]]:
    """The name and grid spectrum of what ``ID`` is compared with: REF or the upload."""
    upload = spectrum_part("SPECTRUM")
    ref = parameters.get("REF")
    if (ref is None) == (upload is None):
        raise DaliError("UsageFault: give exactly one of REF (the publisher DID of a spectrum) "
                        "and SPECTRUM (a spectrum file, FITS or VOTable, sent as multipart)")
    if ref is not None:
        path, ref_table = spectrum_file(ref)
        if ref_table != table:
            raise DaliError(f"UsageFault: REF={ref!r} is in table {ref_table} and ID in {table}, "
                            "whose models differ; compare spectra of one table")
        return ref, _archive_on_grid(path, ref, model, "REF")
    filename, spectrum = upload
    return filename, on_grid(spectrum, model, "SPECTRUM", 400)


# --- the terms of this service ----------------------------------------------------------------

_TERMS = {
    "similar": "The spectra nearest to this one in the latent space of the model that embedded "
               "the table: what a TOPCAT user gets with <code>SELECT TOP k ... ORDER BY "
               "ml_distance(embedding, ID)</code>. Near in the latent space means alike in the "
               "features the model learnt to reconstruct, which mostly follow temperature, "
               "gravity and metallicity; it is not a physical distance.",
    "why-similar": "An explanation of the latent distance between two spectra: its square is "
                   "split over wavelength pixels (integrated gradients from one spectrum to "
                   "the other) and summed in named windows such as the Balmer lines, the Lick "
                   "indices, Ca II H and K or TiO bands, saying which spectrum has the deeper "
                   "feature in each.",
}


@bp.route("/terms")
def terms() -> Response:
    """The page of this service's own DataLink terms, each at its anchor."""
    items = "".join(f'<dt id="{name}"><code>{escape(base_url())}{TERMS_PATH}#{name}</code></dt>\n'
                    f"<dd>{text}</dd>\n" for name, text in _TERMS.items())
    body = (f"<!DOCTYPE html>\n<html><head><title>vo_ml DataLink terms</title></head><body>\n"
            f"<h1>DataLink terms of this service</h1>\n<p>Links with these semantics in "
            f"<code>{escape(base_url())}{LINKS_PATH}</code> answers go through a service "
            f"descriptor of the same name.</p>\n<dl>\n{items}</dl>\n</body></html>\n")
    return Response(body, mimetype="text/html")
