"""The DataLink services a row of spectra leads to, as service descriptors in results.

A TAP, SSA or ObsCore result that holds a publisher DID ends with three ``RESOURCE type="meta"
utype="adhoc:service"`` descriptors whose ``ID`` input is bound to that column: ``{links}``
(pyvo's ``iter_datalinks``, TOPCAT's DataLink window), "similar spectra" and "why similar".
The same "similar" and "why similar" descriptors are in every ``{links}`` answer, bound there
to its ID column. Their URLs are relative to the service root until a response is written
(:meth:`~vo_ml.service.votable.ServiceDescriptor.under`).
"""

from __future__ import annotations

from collections.abc import Sequence

from vo_ml.archive.tap_schema import Column
from vo_ml.service.votable import InputParam, ServiceDescriptor

__all__ = ["LINKS_STANDARD", "LINKS_PATH", "SIMILAR_PATH", "WHY_PATH", "TERMS_PATH",
           "METRICS", "DEFAULT_K", "MAX_K", "is_publisher_did", "links_descriptor",
           "similar_descriptor", "why_descriptor", "result_descriptors"]

LINKS_STANDARD = "ivo://ivoa.net/std/DataLink#links-1.1"
LINKS_PATH = "/datalink/links"
SIMILAR_PATH = "/datalink/similar"
WHY_PATH = "/datalink/why"
#: The page of this service's own DataLink terms; each term is an anchor on it.
TERMS_PATH = "/datalink/terms"
#: METRIC values of "similar" and the ADQL distance each one ranks by.
METRICS = {"l2": "ml_distance", "cosine": "ml_cosine_distance"}
DEFAULT_K = 10
MAX_K = 1000


def is_publisher_did(column: Column | None) -> bool:
    """True for a column of publisher DIDs (ObsCore's or SSA's ``Curation.PublisherDID``)."""
    return column is not None and (column.utype or "").lower().endswith("curation.publisherdid")


def _id_input(ref: str) -> InputParam:
    return InputParam("ID", "Publisher DID of the spectrum", ref=ref, ucd="meta.id;meta.main")


def links_descriptor(ref: str) -> ServiceDescriptor:
    return ServiceDescriptor(
        "datalink-links", "DataLink of the spectrum",
        "Everything about the spectrum of this row: its file, a preview plot, its model "
        "reconstruction, the model's card, other spectra of the same target, and the "
        "services that find similar spectra and explain a similarity.",
        LINKS_PATH, (_id_input(ref),), LINKS_STANDARD)


def similar_descriptor(ref: str) -> ServiceDescriptor:
    return ServiceDescriptor(
        "similar-spectra", "Similar spectra",
        "The K spectra of the archive nearest to this one in the model's latent space, "
        "nearest first, with their distance (Euclidean, or cosine with METRIC=cosine).",
        SIMILAR_PATH,
        (_id_input(ref),
         InputParam("K", "How many similar spectra to return", datatype="int",
                    value=str(DEFAULT_K), minimum="1", maximum=str(MAX_K)),
         InputParam("METRIC", "Latent distance to rank by", value="l2",
                    options=tuple(METRICS))))


def why_descriptor(ref: str) -> ServiceDescriptor:
    return ServiceDescriptor(
        "why-similar", "Why similar",
        "Which wavelength windows (Balmer lines, Lick indices, Ca II H and K, TiO bands...) make "
        "up the latent distance between this spectrum and the spectrum REF, as a table or, with "
        "RESPONSEFORMAT=image/png, a plot.",
        WHY_PATH,
        (_id_input(ref),
         InputParam("REF", "Publisher DID of the spectrum to compare with"),
         InputParam("RESPONSEFORMAT", "votable for the table, image/png for the plot",
                    value="votable", options=("votable", "image/png"))))


def result_descriptors(columns: Sequence[Column | None],
                       names: Sequence[str]) -> tuple[ServiceDescriptor, ...]:
    """The descriptors of a result whose columns are ``columns`` (published metadata) named
    ``names``: none without a publisher DID column, else the three bound to the first."""
    did = next((name for name, column in zip(names, columns, strict=True)
                if is_publisher_did(column)), None)
    if did is None:
        return ()
    return links_descriptor(did), similar_descriptor(did), why_descriptor(did)
