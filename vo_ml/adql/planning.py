"""Nearest-neighbour queries: ``TOP k ... ORDER BY ml_distance(embedding, ref)``.

Such a query is translated twice. The exact SQL scans every row that has an embedding. The
candidate SQL is the same query restricted to the rows a neighbour index proposes (their
``rowid`` in the upload-like table :data:`CANDIDATES`): the service runs it with candidates from
the index, widening them while filters or joins leave fewer than k rows, and re-ranks exactly
in SQL, so the rows and distances are those of the exact query whenever the true neighbours
are among the candidates. Rows without an embedding are left out of both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlglot import exp

from vo_ml.adql.functions import LatentDistance, MlCosineDistance, MlVector, vector_values

#: The table of candidate rowids the candidate SQL reads (registered with the query).
CANDIDATES = "vo_ml_candidates"


@dataclass(frozen=True)
class NeighbourQuery:
    """What the service needs to run a nearest-neighbour query with an index."""

    table: str
    column: str
    metric: str
    k: int
    #: The reference row's key value, or the vector written in the query.
    reference: str | None
    vector: tuple[float, ...] | None
    candidate_sql: str
    #: True when conditions or joins may drop candidates, so fewer than k could be left.
    filtered: bool


def neighbour_shape(tree: exp.Query) -> tuple[LatentDistance, int] | None:
    """The distance and k of a plannable nearest-neighbour query, else None."""
    if not isinstance(tree, exp.Select) or tree.args.get("distinct") or tree.args.get("group"):
        return None
    limit, order = tree.args.get("limit"), tree.args.get("order")
    if limit is None or order is None or tree.args.get("offset") or tree.find(exp.AggFunc):
        return None
    count = limit.expression
    if not (isinstance(count, exp.Literal) and count.is_int):
        return None
    first = order.expressions[0]
    distance = _ordered_distance(first.this, tree)
    if distance is None or first.args.get("desc"):
        return None
    reference = distance.expressions[1]
    if not (isinstance(reference, (exp.Literal, MlVector))):
        return None
    return distance, int(count.this)


def _ordered_distance(key: exp.Expr, tree: exp.Select) -> LatentDistance | None:
    """The latent distance an ORDER BY key is, directly or through a select alias."""
    if isinstance(key, LatentDistance):
        return key
    if isinstance(key, exp.Column) and not key.table:
        for item in tree.expressions:
            if isinstance(item, exp.Alias) and item.alias == key.name and isinstance(
                    item.this, LatentDistance):
                return item.this
    return None


def plan_neighbours(tree: exp.Query,
                    generate: Callable[[exp.Expr], str]) -> tuple[str, NeighbourQuery | None]:
    """The exact SQL of ``tree`` and, for a nearest-neighbour query, how to run it with an index.

    ``generate`` turns the tree into backend SQL.
    """
    shape = neighbour_shape(tree)
    if shape is None:
        return generate(tree), None
    distance, k = shape
    embedding, reference = distance.expressions
    filtered = bool(tree.args.get("where") or tree.args.get("joins"))
    rows = _qualified(embedding, tree, distance.meta["table"])
    tree.where(exp.Not(this=exp.Is(this=rows(embedding.name), expression=exp.Null())), copy=False)
    exact_sql = generate(tree)
    restriction = exp.In(this=rows("rowid"), query=exp.select("id").from_(CANDIDATES).subquery())
    tree.where(restriction, copy=False)
    candidate_sql = generate(tree)
    return exact_sql, NeighbourQuery(
        table=distance.meta["table"], column=distance.meta["column"],
        metric="cosine" if isinstance(distance, MlCosineDistance) else "l2", k=k,
        reference=reference.this if isinstance(reference, exp.Literal) else None,
        vector=tuple(vector_values(reference)) if isinstance(reference, MlVector) else None,
        candidate_sql=candidate_sql, filtered=filtered)


def _qualified(embedding: exp.Column, select: exp.Select,
               table: str) -> Callable[[str], exp.Column]:
    """A column maker for the embedding's table as the query names it (alias or table)."""
    qualifier = embedding.table or next(
        source.alias_or_name for source in select.find_all(exp.Table)
        if source.meta.get("published") is not None and source.meta["published"].name == table)

    def column(name: str) -> exp.Column:
        return exp.column(name, table=qualifier)
    return column
