"""ADQL in, backend SQL out: parse, check against TAP_SCHEMA, label outputs, generate."""

from __future__ import annotations

from collections.abc import Iterable

from sqlglot import exp

from vo_ml.adql.calls import geometry_of
from vo_ml.adql.checker import label_outputs, parse, resolve
from vo_ml.adql.dialect import BACKENDS, CAST_TYPE_META_KEY
from vo_ml.adql.errors import E08, E10, AdqlError, position
from vo_ml.adql.functions import AdqlFunction, declared_functions
from vo_ml.adql.model import Reference, Translation
from vo_ml.archive.tap_schema import TapSchema


def translate(adql: str, schema: TapSchema, backend: str = "duckdb") -> Translation:
    """The SQL ``backend`` runs for ``adql``; raises :class:`AdqlError` for invalid queries.

    The references are not looked up here (that needs the database): the caller checks each one
    and reports a missing row with :func:`unknown_reference_error`.
    """
    if backend not in BACKENDS:
        raise ValueError(f"no ADQL generator for backend {backend!r} (known: {', '.join(BACKENDS)})")
    tree = parse(adql)
    _refuse_what_backend_lacks(tree, backend)
    label_outputs(tree)
    output_columns, references = resolve(tree, schema)
    # The tree is ours alone: generating from it without sqlglot's defensive deep copy saves
    # most of the translation time (its meta holds whole published tables).
    return Translation(tree.sql(dialect=BACKENDS[backend], copy=False), references, output_columns)


def _refuse_what_backend_lacks(tree: exp.Query, backend: str) -> None:
    """Standard functions and types the backend's generator has no SQL for stop here (E10)."""
    transforms = BACKENDS[backend].Generator.TRANSFORMS
    for call in tree.find_all(AdqlFunction):
        if type(call) not in transforms:
            raise E10(**position(call), feature=call.sql_name(), backend=backend)
    for cast in tree.find_all(exp.Cast):
        if geometry_of(cast):
            raise E10(**position(cast), feature=f"CAST to {cast.meta[CAST_TYPE_META_KEY]}",
                      backend=backend)


def check(adql: str, schema: TapSchema | None = None, udfs: Iterable[str] = ()) -> None:
    """Raise :class:`AdqlError` if ``adql`` is invalid.

    Without a schema only syntax, statement kind and function names are checked, so queries can be
    validated without a database; with one, tables and columns are checked too. ``udfs`` declares
    another service's user-defined functions by their TAPRegExt forms
    (``ivo_healpix_index(order INTEGER, ra DOUBLE, dec DOUBLE) -> BIGINT``): a check accepts calls
    to them, :func:`translate` never does, so they cannot reach the backend.
    """
    tree = parse(adql, declared_functions(udfs))
    if schema is not None:
        resolve(tree, schema)


def unknown_reference_error(reference: Reference) -> AdqlError:
    """The error for an ml_distance reference that names no row (found by the caller)."""
    return E08(table=reference.table, key_column=reference.key_column, value=reference.value)
