"""ADQL in, backend SQL out: parse, check against TAP_SCHEMA, label outputs, generate."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

from vo_ml.adql import geometry
from vo_ml.adql.checker import label_outputs, parse, resolve
from vo_ml.adql.dialect import BACKENDS
from vo_ml.adql.errors import E14
from vo_ml.adql.functions import declared_functions
from vo_ml.adql.model import Translation
from vo_ml.adql.planning import plan_neighbours
from vo_ml.archive.tap_schema import TapSchema


def translate(adql: str, schema: TapSchema, backend: str = "duckdb") -> Translation:
    """The SQL ``backend`` runs for ``adql``; raises :class:`AdqlError` for invalid queries.

    The references are not looked up here (that needs the database): the caller finds their
    embeddings with :func:`vo_ml.adql.latent.reference_embeddings`.
    """
    if backend not in BACKENDS:
        raise ValueError(f"no ADQL generator for backend {backend!r} (known: {', '.join(BACKENDS)})")
    with _not_too_deep():
        tree = parse(adql)
        geometry.prepare(tree)
        label_outputs(tree)
        resolution = resolve(tree, schema)
        geometry.convert_units(tree)
        # The tree is ours alone: generating from it without sqlglot's defensive deep copy
        # saves most of the translation time (its meta holds whole published tables).
        target = BACKENDS[backend]
        sql, neighbours = plan_neighbours(
            tree, lambda node: node.sql(dialect=target, copy=False), target.ROW_ID)
    return Translation(sql, resolution.references, resolution.encodings, resolution.outputs,
                       neighbours)


def check(adql: str, schema: TapSchema | None = None, udfs: Iterable[str] = ()) -> None:
    """Raise :class:`AdqlError` if ``adql`` is invalid.

    Without a schema only syntax, statement kind and function names are checked, so queries can be
    validated without a database; with one, tables and columns are checked too. ``udfs`` declares
    another service's user-defined functions by their TAPRegExt forms
    (``ivo_healpix_index(order INTEGER, ra DOUBLE, dec DOUBLE) -> BIGINT``): a check accepts calls
    to them, :func:`translate` never does, so they cannot reach the backend.
    """
    with _not_too_deep():
        tree = parse(adql, declared_functions(udfs))
        if schema is not None:
            resolve(tree, schema)


@contextlib.contextmanager
def _not_too_deep() -> Iterator[None]:
    """A query the parser or a walk over its tree recursed too deeply into is refused as the
    query's fault (E14). Nesting is refused before parsing (E13); this catches what nests
    without brackets (NOT NOT ..., - - ...), whatever part of the translation it reaches."""
    try:
        yield
    except RecursionError:
        raise E14() from None
