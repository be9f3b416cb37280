"""The service's own ADQL functions, ``ml_*``: each declared once, as DaCHS declares a UDF.

A declaration (:class:`LatentFunction`) holds everything about one function: the expression
node the parser maps its name to, the TAPRegExt form and description VOSI advertises, the check
of its arguments, the SQL each backend generates for it and the metadata of the column it
returns. The parts shared by several functions are defined here too: resolving a latent
distance against the published tables (:func:`resolve_distance`), and finding the embedding of
each row a query names as a reference (:func:`reference_embeddings`) by the one rule of
:mod:`vo_ml.archive.references`, and matching each measure of uploaded spectra (``ml_coverage``,
``ml_encode_error``, ``ml_typicality``) with the ``ml_encode`` of the same columns whose pass
computes it (:func:`resolve_measures`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, ClassVar

import numpy as np
from sqlglot import exp
from sqlglot.generator import Generator

from vo_ml.adql.errors import E06, E08, E11, E12, E15, E16, E17, AdqlError, position
from vo_ml.adql.model import UPLOAD_SCHEMA, Encoding, Reference
from vo_ml.adql.planar import MlInPolygon, check_in_polygon, in_polygon_sql
from vo_ml.archive.backend import Backend, derived_columns
from vo_ml.archive.references import REFERENCE_KEYS, named_row_sql, reference_keys
from vo_ml.archive.tap_schema import Column

if TYPE_CHECKING:  # the checker imports this module: its type is named, never imported, here
    from vo_ml.adql.checker import ResolvedColumn
    from vo_ml.archive.neighbours import NeighbourIndex

__all__ = ["FUNCTIONS", "LatentFunction", "LatentDistance", "MlDistance", "MlCosineDistance",
           "MlVector", "MlEncode", "UploadMeasure", "MlCoverage", "MlEncodeError", "MlTypicality",
           "MlTag", "tag_measure", "tag_name", "missing_tags_error",
           "generator_transforms", "missing_model_error", "missing_distances_error",
           "output_column", "reference_embeddings", "resolve_distance", "resolve_measures",
           "unembedded_reference_error", "unknown_reference_error", "vector_values"]

#: The column a table must have for its rows to be named as references (an ml_distance ``ref``).
REFERENCE_KEY = REFERENCE_KEYS[0]
#: How a tag column's name is written: it becomes part of a column name of the upload.
_TAG_COLUMN = re.compile(r"ml_[a-z0-9_]{1,60}")

SqlGenerator = Callable[[Generator, exp.Expr], str]


class LatentDistance(exp.Expression, exp.Func):
    """A distance in the latent space: ``(embedding, ref)``, the reference a row's publisher DID
    or obs_id, another embedding (a self-join or an upload), ``ml_vector('x1 x2 ...')`` or
    ``ml_encode(wavelength, flux)``.

    The arguments are kept as a list so a wrong count is reported by the check with an ADQL
    message instead of failing inside the parser. :func:`resolve_distance` records the published
    table, column, dimension and reference keys of the embedding in ``meta`` for the generators.
    """

    arg_types = {"expressions": False}
    is_var_len_args = True
    #: The neighbour index metric that ranks by this distance.
    metric: ClassVar[str] = ""


class MlDistance(LatentDistance):
    """``ml_distance``: Euclidean distance."""

    _sql_names = ["ML_DISTANCE"]
    metric = "l2"


class MlCosineDistance(LatentDistance):
    """``ml_cosine_distance``: one minus the cosine of the angle between the vectors."""

    _sql_names = ["ML_COSINE_DISTANCE"]
    metric = "cosine"


class MlVector(exp.Expression, exp.Func):
    """``ml_vector('x1 x2 ...')``: a latent vector written out, as a reference."""

    arg_types = {"expressions": False}
    is_var_len_args = True
    _sql_names = ["ML_VECTOR"]


class MlEncode(exp.Expression, exp.Func):
    """``ml_encode(wavelength, flux)``: a spectrum uploaded with the query, as a reference.

    The service encodes each uploaded row with the model of the embedding it is compared with
    before the SQL runs, into an added column of the upload (``meta["encoded"]``, set by
    :func:`resolve_distance`), which is what the SQL reads.
    """

    arg_types = {"expressions": False}
    is_var_len_args = True
    _sql_names = ["ML_ENCODE"]


class UploadMeasure(exp.Expression, exp.Func):
    """A measure of spectra uploaded with the query, ``(wavelength, flux)`` as their
    ``ml_encode`` names them: how far to trust the answer for each row.

    The service computes it in the pass that encodes the spectra, into an added column of the
    upload (``meta["measured"]``, set by :func:`resolve_measures`), which the SQL reads.
    """

    arg_types = {"expressions": False}
    is_var_len_args = True
    #: Which of :data:`vo_ml.adql.model.MEASURES` it reads.
    measure: ClassVar[str] = ""


class MlCoverage(UploadMeasure):
    """``ml_coverage``: the share of the model's grid pixels the spectrum covers."""

    _sql_names = ["ML_COVERAGE"]
    measure = "coverage"


class MlEncodeError(UploadMeasure):
    """``ml_encode_error``: the spectrum's reconstruction RMS, as ``ml_recon_error``."""

    _sql_names = ["ML_ENCODE_ERROR"]
    measure = "error"


class MlTag(UploadMeasure):
    """``ml_tag(wavelength, flux, 'column')``: what the table's tag column ``column``
    (``ml_teff``, ``ml_teff_lo``..., ``ml_anomaly``) would hold for the uploaded spectrum."""

    _sql_names = ["ML_TAG"]
    measure = "tag"


def tag_measure(column: str) -> str:
    """The measure of uploaded spectra that is the table's tag column ``column``."""
    return f"tag_{column}"


def tag_name(call: MlTag) -> str:
    """The tag column an ``ml_tag`` asks for, lower-cased (its check made sure it names one)."""
    return call.expressions[2].this.lower()


class MlTypicality(UploadMeasure):
    """``ml_typicality``: the spectrum's nearest-neighbour distance as a percentile of the
    archive's own."""

    _sql_names = ["ML_TYPICALITY"]
    measure = "typicality"


@dataclass(frozen=True)
class LatentFunction:
    """One ``ml_*`` function, whole: what TAPRegExt advertises, the parser's node, the check of
    a call's arguments, the SQL each backend runs and the column it returns (None for the
    functions that only make a reference)."""

    name: str
    #: The parameters and return type as TAPRegExt writes them.
    parameters: tuple[str, ...]
    returns: str
    description: str
    node: type[exp.Func]
    check: Callable[[exp.Func], None]
    generators: Mapping[str, SqlGenerator]
    output: Column | None = None

    @property
    def form(self) -> str:
        """The TAPRegExt form: ``name(parameter TYPE, ...) -> TYPE``."""
        return f"{self.name}({', '.join(self.parameters)}) -> {self.returns}"


def vector_values(vector: MlVector) -> tuple[float, ...]:
    """The numbers of an ``ml_vector`` literal; ValueError when it holds anything else. Read
    once and kept with the node: the check, the planner and every generation ask."""
    if "values" not in vector.meta:
        vector.meta["values"] = tuple(
            float(value) for value in vector.expressions[0].this.replace(",", " ").split())
    return vector.meta["values"]


# Checks of the arguments, on the parsed tree (before any table is known).

def _check_latent_distance(call: LatentDistance) -> None:
    name = call.sql_name().lower()
    arguments = call.expressions
    if len(arguments) != 2:
        raise E06(**position(call), function=name,
                  detail=f"takes 2 arguments (embedding, ref), got {len(arguments)}")
    embedding, reference = arguments
    if not isinstance(embedding, exp.Column) or isinstance(embedding.this, exp.Star):
        raise E06(**position(call), function=name,
                  detail="the first argument must be an embedding column, e.g. embedding")
    if isinstance(reference, exp.Literal) and reference.is_string:
        return
    if isinstance(reference, (MlVector, MlEncode)) or (
            isinstance(reference, exp.Column) and not isinstance(reference.this, exp.Star)):
        return
    raise E06(**position(call), function=name,
              detail=f"the second argument must be the {REFERENCE_KEY} or obs_id of a row (a "
                     "string literal), another embedding column, ml_vector('x1 x2 ...') or "
                     "ml_encode(wavelength, flux)")


def _is_reference(call: exp.Func) -> bool:
    """True for the second argument of a latent distance, the only place a reference can be."""
    parent = call.parent
    return isinstance(parent, LatentDistance) and len(parent.expressions) == 2 and (
        parent.expressions[1] is call)


def _check_ml_vector(call: MlVector) -> None:
    arguments = call.expressions
    text = arguments[0] if len(arguments) == 1 else None
    if not (isinstance(text, exp.Literal) and text.is_string and _is_reference(call)):
        raise E06(**position(call), function="ml_vector",
                  detail="write ml_vector('x1 x2 ...') as the second argument of ml_distance or "
                         "ml_cosine_distance")
    try:
        vector_values(call)
    except ValueError:
        raise E06(**position(call), function="ml_vector",
                  detail=f"'{text.this}' is not a list of numbers separated by spaces") from None


def _two_columns(call: exp.Func) -> bool:
    """True when the call's arguments are two columns, as ``(wavelength, flux)`` must be."""
    arguments = call.expressions
    return len(arguments) == 2 and all(
        isinstance(a, exp.Column) and not isinstance(a.this, exp.Star) for a in arguments)


def _check_ml_encode(call: MlEncode) -> None:
    if not (_two_columns(call) and _is_reference(call)):
        raise E06(**position(call), function="ml_encode",
                  detail="write ml_encode(wavelength, flux), with two array columns of an "
                         "uploaded table, as the second argument of ml_distance or "
                         "ml_cosine_distance")


def _check_measure(call: UploadMeasure) -> None:
    if isinstance(call, MlTag):
        _check_tag(call)
    elif not _two_columns(call):
        name = call.sql_name().lower()
        raise E06(**position(call), function=name,
                  detail=f"write {name}(wavelength, flux), with the two columns of an uploaded "
                         "table that an ml_encode(wavelength, flux) of the query encodes")


def _check_tag(call: MlTag) -> None:
    arguments = call.expressions
    named = arguments[2] if len(arguments) == 3 else None
    if not (isinstance(named, exp.Literal) and named.is_string and _two_columns(
            exp.Anonymous(expressions=arguments[:2]))):
        raise E06(**position(call), function="ml_tag",
                  detail="write ml_tag(wavelength, flux, 'ml_teff'): the two columns of an "
                         "uploaded table that an ml_encode(wavelength, flux) of the query "
                         "encodes, and the name of one of the table's tag columns")
    if not (_TAG_COLUMN.fullmatch(named.this.lower()) and derived_columns([named.this.lower()])):
        raise E06(**position(call), function="ml_tag",
                  detail=f"'{named.this}' is not the name of a tag column; give one such as "
                         "'ml_teff', 'ml_teff_lo', 'ml_logg_hi95' or 'ml_anomaly'")


# Resolution against the published tables (after the checker resolved every column).

def resolve_distance(call: LatentDistance, encodings: dict[tuple, Encoding]) -> Reference | None:
    """Record the published table, column, dimension and reference keys behind a latent
    distance for the generators; return the row it names by key, which the service looks up,
    and add the uploaded spectra it encodes to ``encodings``."""
    name = call.sql_name().lower()
    embedding, reference = call.expressions
    resolved: ResolvedColumn | None = embedding.meta.get("resolved")
    if not (resolved and resolved.column and resolved.column.is_array and resolved.table
            and resolved.table.column(REFERENCE_KEY)):
        raise E06(**position(call), function=name,
                  detail=f"'{embedding.sql()}' is not an embedding column of a table with "
                         f"{REFERENCE_KEY}")
    dimension = resolved.column.dimension
    keys = reference_keys(c.name for c in resolved.table.columns)
    call.meta.update(table=resolved.table.name, column=resolved.column.sql_name,
                     dimension=dimension, keys=keys)
    if isinstance(reference, exp.Literal):
        return Reference(resolved.table.name, keys, reference.this, resolved.column.sql_name)
    if isinstance(reference, MlEncode):
        encoding = _encoding(reference, resolved, encodings)
        reference.meta.update(encoded=encoding.column, dimension=dimension)
    else:
        _check_dimension(call, dimension, _reference_dimension(reference))
        reference.meta["dimension"] = dimension
    return None


def _encoding(call: MlEncode, embedding: ResolvedColumn,
              encodings: dict[tuple, Encoding]) -> Encoding:
    """The encoding an ``ml_encode`` asks for: both arguments array columns of one upload."""
    wavelength, flux = (argument.meta.get("resolved") for argument in call.expressions)
    upload = wavelength.table if wavelength else None
    if not (upload and flux and flux.table == upload and upload.name.startswith(f"{UPLOAD_SCHEMA}.")
            and all(c.column and c.column.is_array for c in (wavelength, flux))):
        raise E06(**position(call), function="ml_encode",
                  detail=f"'{call.sql()}': wavelength and flux must be array columns of one "
                         f"{UPLOAD_SCHEMA} table, one spectrum per row")
    key = (upload.name, wavelength.name, flux.name, embedding.table.name)
    if key not in encodings:
        encodings[key] = Encoding(upload.name.partition(".")[2], wavelength.name, flux.name,
                                  wavelength.column.unit, embedding.table.name,
                                  f"vo_ml_encoded_{len(encodings)}", embedding.column.sql_name)
    return encodings[key]


def resolve_measures(tree: exp.Expr, encodings: dict[tuple, Encoding]) -> None:
    """Match every measure of uploaded spectra in ``tree`` with the encoding of the same
    columns (:func:`resolve_distance` found them all first, in any scope) and record the upload
    column it reads; an encoding whose typicality is selected is marked as wanting it."""
    for call in tree.find_all(UploadMeasure):
        name = call.sql_name().lower()
        wavelength, flux = (argument.meta.get("resolved") for argument in call.expressions[:2])
        arguments = ", ".join(argument.sql() for argument in call.expressions[:2])
        named = (wavelength.table.name, wavelength.name, flux.name) if (
            wavelength and flux and wavelength.table) else None
        keys = [key for key in encodings if key[:3] == named]
        if not keys:
            raise E15(**position(call), function=name, arguments=arguments)
        if len(keys) > 1:
            raise E06(**position(call), function=name,
                      detail=f"ml_encode({arguments}) compares these spectra with "
                             f"{' and '.join(key[3] for key in keys)}, each with its own model; "
                             f"measure them in a query that compares them with one table")
        encoding = encodings[keys[0]]
        measure = call.measure
        if isinstance(call, MlTypicality):
            encoding = encodings[keys[0]] = replace(encoding, typicality_wanted=True)
        if isinstance(call, MlTag):
            measure = tag_measure(tag_name(call))
            if tag_name(call) not in encoding.tags_wanted:
                encodings[keys[0]] = replace(
                    encoding, tags_wanted=(*encoding.tags_wanted, tag_name(call)))
        call.meta["measured"] = encoding.measure_column(measure)


def _reference_dimension(reference: exp.Expr) -> int | None:
    if isinstance(reference, MlVector):
        return len(vector_values(reference))
    resolved: ResolvedColumn | None = reference.meta.get("resolved")
    if resolved is None or resolved.column is None or not resolved.column.is_array:
        raise E06(**position(reference), function=reference.parent.sql_name().lower(),
                  detail=f"'{reference.sql()}' is not an embedding (an array column)")
    return resolved.column.dimension


def _check_dimension(call: LatentDistance, dimension: int | None, other: int | None) -> None:
    if dimension is None or other is None or dimension == other:
        return
    raise E06(**position(call), function=call.sql_name().lower(),
              detail=f"dimension mismatch: the embedding has {dimension} dimensions, the "
                     f"reference {other}")


# SQL generation (DuckDB).

def _latent_distance_duckdb(function: str) -> SqlGenerator:
    """The generator of a latent distance that DuckDB computes with ``function``."""

    def generate(generator: Generator, node: exp.Expr) -> str:
        """The array distance to the reference: a row named by key (a scalar subquery, so the
        SQL runs on its own, or a parameter the service sets to the embedding it looked up), a
        vector, or another embedding, cast to the embedding's type so dimensions must agree."""
        embedding, reference = node.expressions
        dimension = node.meta["dimension"]
        if isinstance(reference, exp.Literal):
            if node.meta.get("parameter"):
                other = f"CAST(${node.meta['parameter']} AS FLOAT[{dimension}])"
            else:
                other = "(" + named_row_sql(node.meta["table"], node.meta["column"],
                                            node.meta["keys"], generator.sql(reference),
                                            generator.dialect.ROW_ID) + ")"
        elif isinstance(reference, (MlVector, MlEncode)):
            other = generator.sql(reference)
        else:
            other = f"CAST({generator.sql(reference)} AS FLOAT[{dimension}])"
        return f"{function}({generator.sql(embedding)}, {other})"
    return generate


def _latent_vector_duckdb(generator: Generator, node: exp.Expr) -> str:
    dimension = node.meta["dimension"]
    return f"CAST([{', '.join(map(repr, vector_values(node)))}] AS FLOAT[{dimension}])"


def _measured_duckdb(generator: Generator, node: exp.Expr) -> str:
    """The upload column the encoding pass filled with the measure, qualified as the call's
    columns are."""
    wavelength = node.expressions[0]
    return generator.sql(exp.column(node.meta["measured"], table=wavelength.args.get("table")))


def _encoded_duckdb(generator: Generator, node: exp.Expr) -> str:
    wavelength = node.expressions[0]
    encoded = exp.column(node.meta["encoded"], table=wavelength.args.get("table"))
    return f"CAST({generator.sql(encoded)} AS FLOAT[{node.meta['dimension']}])"


# Reference rows, looked up before the query runs.

#: The up-to-date neighbour index of (table, embedding column, metric), or None.
IndexOf = Callable[[str, str, str], "NeighbourIndex | None"]


def reference_embeddings(references: Sequence[Reference], backend: Backend,
                         index_of: IndexOf) -> dict[tuple[str, str], np.ndarray]:
    """The embedding of every row named as a similarity reference, by (table, name given); each
    row must exist and have one, or the distances would all be NULL. An up-to-date L2 index
    holds them in its key maps; otherwise (or when the row has none) the table is asked. Both
    follow the rule of :mod:`vo_ml.archive.references`."""
    embeddings = {}
    for reference in references:
        index = index_of(reference.table, reference.embedding_column, "l2")
        embedding = None if index is None else index.vector_named(reference.key_columns,
                                                                  reference.value)
        embeddings[reference.table, reference.value] = (
            _looked_up(reference, backend) if embedding is None else embedding)
    return embeddings


def _looked_up(reference: Reference, backend: Backend) -> np.ndarray:
    """The embedding of the row a reference names, read from its table."""
    found = backend.lookup(
        named_row_sql(reference.table, reference.embedding_column, reference.key_columns, "?",
                      backend.row_id), [reference.value] * len(reference.key_columns))
    if not found:
        raise unknown_reference_error(reference)
    if found[0][0] is None:
        raise unembedded_reference_error(reference)
    return np.asarray(found[0][0], np.float32)


def unknown_reference_error(reference: Reference) -> AdqlError:
    """The error for an ml_distance reference that names no row."""
    return E08(table=reference.table, key_columns=" or ".join(reference.key_columns),
               value=reference.value)


def unembedded_reference_error(reference: Reference) -> AdqlError:
    """The error for an ml_distance reference whose row has no embedding yet."""
    return E11(table=reference.table, key_columns=" or ".join(reference.key_columns),
               value=reference.value, column=reference.embedding_column)


def missing_model_error(table: str, reason: str) -> AdqlError:
    """The error for an ml_encode whose table's model is not there to encode with."""
    return E12(table=table, reason=reason)


def missing_tags_error(table: str, reason: str) -> AdqlError:
    """The error for an ml_tag the table's tags cannot answer."""
    return E17(table=table, reason=reason)


def missing_distances_error(table: str, column: str, reason: str) -> AdqlError:
    """The error for an ml_typicality without the archive's nearest-neighbour distances."""
    return E16(table=table, column=column, reason=reason)


# The declarations.

_REFERENCE_FORMS = (f"the {REFERENCE_KEY} or obs_id of a row, another embedding (a self-join or a "
                    "TAP_UPLOAD column), ml_vector('x1 x2 ...') or ml_encode(wavelength, flux) of "
                    "an uploaded spectrum")


def _latent_distance(node: type[LatentDistance], duckdb_function: str, description: str,
                     meaning: str) -> LatentFunction:
    name = node.sql_name().lower()
    return LatentFunction(
        name=name, parameters=("embedding REAL ARRAY", "ref VARCHAR"), returns="DOUBLE",
        description=description, node=node, check=_check_latent_distance,
        generators={"duckdb": _latent_distance_duckdb(duckdb_function)},
        output=Column(name, "double", meaning))


ML_DISTANCE = _latent_distance(MlDistance, "array_distance", (
    "Euclidean distance in the model's latent space between each row's embedding and ref: "
    f"{_REFERENCE_FORMS}. NULL where a row has no embedding. ORDER BY it with TOP k for the "
    "k most similar spectra (a nearest-neighbour search), or compare it with a radius."),
    "Euclidean distance to the reference in the model's latent space")

ML_COSINE_DISTANCE = _latent_distance(MlCosineDistance, "array_cosine_distance", (
    "One minus the cosine similarity of each row's embedding and ref "
    f"({_REFERENCE_FORMS}): 0 for the same direction, 2 for opposite ones; NULL where a row "
    "has no embedding."), "one minus the cosine similarity to the reference in the latent space")

ML_VECTOR = LatentFunction(
    name="ml_vector", parameters=("values VARCHAR",), returns="REAL ARRAY",
    description=(
        "A latent vector written as its numbers separated by spaces, as the ref of "
        "ml_distance or ml_cosine_distance; it must have the embedding's dimension."
    ),
    node=MlVector, check=_check_ml_vector, generators={"duckdb": _latent_vector_duckdb},
)

ML_ENCODE = LatentFunction(
    name="ml_encode", parameters=("wavelength REAL ARRAY", "flux REAL ARRAY"), returns="REAL ARRAY",
    description=(
        "The latent vector of a spectrum uploaded with the query (TAP UPLOAD), as the ref of "
        "ml_distance or ml_cosine_distance: wavelength and flux are array columns of one "
        "uploaded table, one spectrum per row. Wavelengths are in the column's length unit "
        "(Angstrom when it has none), in the archive's medium (air or vacuum) and frame (any "
        "frame when the archive measures every spectrum's velocity). Each spectrum goes through "
        "the archive's own preprocessing onto the model's grid and is encoded with the model "
        "that made the embedding it is compared with."
    ),
    node=MlEncode, check=_check_ml_encode, generators={"duckdb": _encoded_duckdb},
)

_MEASURED = ("It is measured for each spectrum of an uploaded table that the same query encodes "
             "with ml_encode(wavelength, flux) of the same two columns, in the pass that "
             "encodes it")


def _measure(node: type[UploadMeasure], description: str, output: Column) -> LatentFunction:
    return LatentFunction(
        name=node.sql_name().lower(), parameters=("wavelength REAL ARRAY", "flux REAL ARRAY"),
        returns="DOUBLE", description=f"{description} {_MEASURED}.", node=node,
        check=_check_measure, generators={"duckdb": _measured_duckdb}, output=output)


ML_COVERAGE = _measure(MlCoverage, (
    "The share (0 to 1) of the model's wavelength grid (the grid the table was embedded on) "
    "that the uploaded spectrum covers with good pixels after preprocessing; where it is low, "
    "the distances rest on part of the spectrum only."), Column(
    "ml_coverage", "double", "share of the model's wavelength grid the uploaded spectrum "
    "covers with good pixels (0 to 1)", ucd="stat.filling;em.wl"))

ML_ENCODE_ERROR = _measure(MlEncodeError, (
    "The RMS difference, over its good pixels, between the uploaded spectrum as the model "
    "reads it (normalised) and the model's reconstruction of it: computed as the table's "
    "ml_recon_error, so the two compare; far above the archive's values, the model does not "
    "represent the spectrum well."), Column(
    "ml_encode_error", "double", "RMS of the model's reconstruction of the uploaded spectrum "
    "over its good pixels, in normalised flux, as ml_recon_error", ucd="stat.fit.residual"))

ML_TYPICALITY = _measure(MlTypicality, (
    "How typical the uploaded spectrum is, in percent: the share of the archive's spectra "
    "whose own nearest neighbour (another archive spectrum, Euclidean distance in the latent "
    "space) is at least as far as the upload's nearest archive spectrum. About 50 is as "
    "typical as an archive spectrum, near 0 unlike anything in the archive. Needs the "
    "table's neighbour index (vo-ml index), which keeps the archive's distances."), Column(
    "ml_typicality", "double", "percentage (0 to 100) of archive spectra whose nearest "
    "neighbour is at least as far as the uploaded spectrum's nearest archive spectrum",
    ucd="stat.percentile"))

ML_TAG = LatentFunction(
    name="ml_tag", parameters=("wavelength REAL ARRAY", "flux REAL ARRAY", "tag VARCHAR"),
    returns="DOUBLE", description=(
        "What the table's tag column named by tag ('ml_teff', 'ml_teff_lo', 'ml_teff_hi95', "
        "'ml_logg', 'ml_feh', ..., 'ml_anomaly') would hold for the uploaded spectrum: the "
        "same tagger, with the same calibrated intervals, and the same anomaly score, in the "
        f"unit of that column. {_MEASURED}. Needs the table's tags (vo-ml tag)."),
    node=MlTag, check=_check_measure, generators={"duckdb": _measured_duckdb},
    output=Column("ml_tag", "double", "value of the table's tag column named in ml_tag, for "
                  "the uploaded spectrum, in that column's unit"))

ML_IN_POLYGON = LatentFunction(
    name="ml_in_polygon", parameters=("x DOUBLE", "y DOUBLE", "vertices VARCHAR"),
    returns="INTEGER", description=(
        "1 when the point (x, y) lies inside the plane polygon that vertices lists "
        "('x1 y1 x2 y2 x3 y3 ...', a string literal of at least 3 vertices, the last joined "
        "to the first), else 0; NULL when x or y is NULL. Inside follows the even-odd rule, so "
        "a self-crossing lasso alternates; a point on the boundary is inside on a left or "
        "lower edge, outside on a right or upper one. It turns a lasso drawn on the latent "
        "map into a condition: WHERE 1 = ml_in_polygon(ml_x, ml_y, '0 0 1 0 1 1')."),
    node=MlInPolygon, check=check_in_polygon, generators={"duckdb": in_polygon_sql},
    output=Column("ml_in_polygon", "int", "1 when the point is inside the polygon given to "
                  "ml_in_polygon, else 0"))

#: The service's functions by lower-case name: all the parser, generators and TAPRegExt know.
FUNCTIONS: Mapping[str, LatentFunction] = MappingProxyType(
    {f.name: f for f in (ML_DISTANCE, ML_COSINE_DISTANCE, ML_VECTOR, ML_ENCODE, ML_COVERAGE,
                         ML_ENCODE_ERROR, ML_TYPICALITY, ML_TAG, ML_IN_POLYGON)})
_BY_NODE = {f.node: f for f in FUNCTIONS.values()}


def generator_transforms(backend: str) -> dict[type[exp.Expr], SqlGenerator]:
    """The generator TRANSFORMS printing every ``ml_*`` function for ``backend``."""
    return {f.node: f.generators[backend] for f in FUNCTIONS.values() if backend in f.generators}


def output_column(call: exp.Expr, label: str) -> Column | None:
    """The metadata of a result column that is the value of ``call``, labelled ``label``; None
    when ``call`` is no ``ml_*`` function that returns a column."""
    declared = _BY_NODE.get(type(call))
    output = None if declared is None else declared.output
    return None if output is None else replace(output, name=label)
