"""What a translation hands back to the service: the SQL, the references to check, the outputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vo_ml.archive.tap_schema import Column

if TYPE_CHECKING:  # planning imports this module: its type is named, never imported, here
    from vo_ml.adql.planning import NeighbourQuery

#: The schema of tables uploaded with a query (TAP 1.1 section 4.3.1).
UPLOAD_SCHEMA = "TAP_UPLOAD"


def upload_view(name: str) -> str:
    """The name the backend knows ``TAP_UPLOAD.name`` by, for the one query it comes with."""
    return f"tap_upload_{name.lower()}"


@dataclass(frozen=True)
class Reference:
    """A row named by value in the query (an ml_distance ``ref``): the row of ``table`` whose
    ``key_columns`` (any of them) equal ``value`` must exist, with an ``embedding_column`` value,
    before the query runs."""

    table: str
    key_columns: tuple[str, ...]
    value: str
    embedding_column: str


#: What the service measures of every spectrum it encodes, to say how far to trust the answer:
#: the share of the model's grid it covers, its reconstruction error and its typicality.
MEASURES = ("coverage", "error", "typicality")


@dataclass(frozen=True)
class Encoding:
    """Uploaded spectra named by ``ml_encode(wavelength, flux)``: before the query runs, the
    service encodes every row of ``upload`` (its TAP_UPLOAD name) with the model of ``table``'s
    embeddings and adds the vectors to the upload as column ``column``, which the SQL reads,
    and each of :data:`MEASURES` as column :meth:`measure_column`."""

    upload: str
    wavelength: str
    flux: str
    #: The wavelength column's unit as uploaded, None when it has none.
    wavelength_unit: str | None
    table: str
    column: str
    #: The embedding column of ``table`` the spectra are compared with.
    embedding: str = "embedding"
    #: True when the query selects ``ml_typicality`` of these spectra: then the archive's own
    #: nearest-neighbour distances must be known, else it is left NULL.
    typicality_wanted: bool = False
    #: The tag columns of ``table`` (``ml_teff``, ``ml_anomaly``...) the query asks of these
    #: spectra with ``ml_tag``: each is the measure ``tag_<column>``.
    tags_wanted: tuple[str, ...] = ()

    def measure_column(self, measure: str) -> str:
        """The upload column holding ``measure`` (one of :data:`MEASURES`) of every row."""
        return f"{self.column}_{measure}"


@dataclass(frozen=True)
class OutputColumn:
    """One result column: its label exactly as the SQL result names it, and its metadata.

    ``column`` is the published column when the select item is a plain (possibly aliased) column
    reference; ``datatype_hint`` gives the VOTable datatype of computed values whose type is known.
    """

    name: str
    column: Column | None = None
    datatype_hint: str | None = None


@dataclass
class Translation:
    """ADQL turned into backend SQL that reads only published tables."""

    sql: str
    references: list[Reference] = field(default_factory=list)
    encodings: list[Encoding] = field(default_factory=list)
    output_columns: list[OutputColumn] = field(default_factory=list)
    #: Set for ``TOP k ... ORDER BY ml_distance(...)`` and latent cones: how to run it with a
    #: neighbour index; ``sql`` is then the exact search.
    neighbours: NeighbourQuery | None = None
