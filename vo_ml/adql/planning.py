"""Similarity queries a neighbour index can speed up: nearest neighbours and latent cones.

Two shapes are planned:

- ``TOP k ... ORDER BY ml_distance(embedding, ref)``: the k rows nearest the reference;
- a latent cone, ``ml_distance(embedding, ref) < r`` (or ``<=``) among the conditions every
  row must meet (the WHERE clause, or the ON clause of an inner join): every row within r.

``ref`` must be known before the query runs: a row named by key, ``ml_vector``, or references
uploaded with the query (an embedding column of a TAP_UPLOAD table, or ``ml_encode``), in which
case every uploaded row is a reference.

Such a query is translated twice. The exact SQL scans every row that has an embedding. The
candidate SQL is the same query restricted to the rows a neighbour index proposes (their row
ids, :attr:`vo_ml.archive.backend.Backend.row_id`, in the upload-like table :data:`CANDIDATES`),
so the rows and distances are those of the exact query whenever the true answer is among the
candidates; the service makes sure it is (see :mod:`vo_ml.service.similarity`), with
:attr:`NeighbourQuery.ranked_sql` for the nearest neighbours. Rows without an embedding are left
out of both. The service has looked up the rows named as references before it searches the
index, so the candidate SQL takes their embeddings as parameters
(:attr:`NeighbourQuery.parameters`) instead of looking them up again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlglot import exp

from vo_ml.adql.latent import LatentDistance, MlEncode, MlVector, vector_values
from vo_ml.adql.model import UPLOAD_SCHEMA, upload_view

#: The table of candidate row ids the candidate SQL reads (registered with the query).
CANDIDATES = "vo_ml_candidates"
#: The label of the distance :attr:`NeighbourQuery.ranked_sql` adds to the select list (the
#: service reads it by position, as a select item may have the same name).
RANKED_DISTANCE = "vo_ml_distance"


@dataclass(frozen=True)
class NeighbourQuery:
    """What the service needs to run a similarity query with an index."""

    table: str
    column: str
    metric: str
    #: TOP k of a nearest-neighbour query; None for a latent cone.
    k: int | None
    #: The radius of a latent cone; None for a nearest-neighbour query.
    radius: float | None
    #: The reference row's key value, the vector written in the query, or the uploaded table
    #: (as the backend knows it) and column whose rows are the references: one of the three.
    reference: str | None
    vector: tuple[float, ...] | None
    upload: tuple[str, str] | None
    candidate_sql: str
    #: The candidate SQL with the distance that ranks the rows as one more, last, column
    #: (:data:`RANKED_DISTANCE`): its rows tell whether the candidates held the k nearest rows
    #: (filtered nearest-neighbour queries only: otherwise the candidates are complete as they
    #: are).
    ranked_sql: str | None
    #: True when conditions or joins may drop candidates, so fewer than k could be left.
    filtered: bool
    #: The named parameters of the candidate and ranked SQL: the embedding of the row each names,
    #: by (table, key value).
    parameters: dict[str, tuple[str, str]]


def plan_neighbours(tree: exp.Query, generate: Callable[[exp.Expr], str],
                    row_id: str) -> tuple[str, NeighbourQuery | None]:
    """The exact SQL of ``tree`` and, for a plannable similarity query, how to run it with an
    index. ``generate`` turns a tree into backend SQL, whose rows have ids ``row_id``."""
    shape = _cone(tree) or _nearest(tree)
    if shape is None:
        return generate(tree), None
    distance, k, radius = shape
    embedding, reference = distance.expressions
    filtered = bool(tree.args.get("where") or tree.args.get("joins"))
    rows = _qualified(embedding, tree, distance.meta["table"])
    tree.where(exp.Not(this=exp.Is(this=rows(embedding.name), expression=exp.Null())), copy=False)
    exact_sql = generate(tree)
    restriction = exp.In(this=rows(row_id), query=exp.select("id").from_(CANDIDATES).subquery())
    tree.where(restriction, copy=False)
    parameters = _reference_parameters(tree)
    candidate_sql = generate(tree)
    return exact_sql, NeighbourQuery(
        table=distance.meta["table"], column=distance.meta["column"],
        metric=distance.metric, k=k, radius=radius,
        reference=reference.this if isinstance(reference, exp.Literal) else None,
        vector=vector_values(reference) if isinstance(reference, MlVector) else None,
        upload=_uploaded_references(reference), candidate_sql=candidate_sql,
        ranked_sql=_ranked_sql(tree, distance, generate) if k is not None and filtered else None,
        filtered=filtered, parameters=parameters)


def _reference_parameters(tree: exp.Query) -> dict[str, tuple[str, str]]:
    """Make every row named as a reference a parameter of the SQL generated from now on; return
    the parameters, each with the (table, key value) of its row."""
    parameters = {}
    for distance in tree.find_all(LatentDistance):
        reference = distance.expressions[1]
        if isinstance(reference, exp.Literal):
            name = f"vo_ml_reference_{len(parameters)}"
            distance.meta["parameter"] = name
            parameters[name] = (distance.meta["table"], reference.this)
    return parameters


def _ranked_sql(tree: exp.Select, distance: LatentDistance,
                generate: Callable[[exp.Expr], str]) -> str:
    """The candidate SQL with the ranking distance as its last column. The distance is added to
    the select list for this SQL only: copying the tree would copy the published tables its
    columns refer to."""
    tree.expressions.append(exp.alias_(exp.Var(this=generate(distance)), RANKED_DISTANCE))
    try:
        return generate(tree)
    finally:
        tree.expressions.pop()


def _nearest(tree: exp.Query) -> tuple[LatentDistance, int, None] | None:
    """The distance and k of ``TOP k ... ORDER BY <latent distance>``, else None."""
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
    if distance is None or first.args.get("desc") or not _known_before(distance):
        return None
    return distance, int(count.this), None


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


def _cone(tree: exp.Query) -> tuple[LatentDistance, None, float] | None:
    """The distance and radius of a latent cone every row of the result must lie in, else None."""
    if not isinstance(tree, exp.Select):
        return None
    conditions = [tree.args["where"].this] if tree.args.get("where") else []
    for join in tree.args.get("joins") or []:
        if join.args.get("on") and not join.side and join.kind in ("", "INNER"):
            conditions.append(join.args["on"])
    for condition in (c for written in conditions for c in _conjuncts(written)):
        if isinstance(condition, (exp.LT, exp.LTE)):
            distance, radius = condition.this.unnest(), condition.expression.unnest()
        elif isinstance(condition, (exp.GT, exp.GTE)):
            distance, radius = condition.expression.unnest(), condition.this.unnest()
        else:
            continue
        if isinstance(distance, LatentDistance) and _known_before(distance) and isinstance(
                radius, exp.Literal) and radius.is_number:
            return distance, None, float(radius.this)
    return None


def _conjuncts(condition: exp.Expr) -> list[exp.Expr]:
    """The conditions ``condition`` ANDs together, in order (without recursion: a long chain of
    ANDs is a tree as deep as it is long)."""
    conjuncts, pending = [], [condition]
    while pending:
        condition = pending.pop().unnest()
        if isinstance(condition, exp.And):
            pending += [condition.expression, condition.this]
        else:
            conjuncts.append(condition)
    return conjuncts


def _known_before(distance: LatentDistance) -> bool:
    """Whether the reference's vectors are known before the query runs (none is another row of
    an archive table)."""
    reference = distance.expressions[1]
    return isinstance(reference, (exp.Literal, MlVector)) or _uploaded_references(
        reference) is not None


def _uploaded_references(reference: exp.Expr) -> tuple[str, str] | None:
    """The upload (as the backend knows it) and column whose rows are the references."""
    if isinstance(reference, MlEncode):
        wavelength = reference.expressions[0].meta["resolved"]
        return upload_view(wavelength.table.name.partition(".")[2]), reference.meta["encoded"]
    resolved = reference.meta.get("resolved") if isinstance(reference, exp.Column) else None
    if resolved is None or resolved.table is None:
        return None
    schema, _, name = resolved.table.name.partition(".")
    return (upload_view(name), resolved.name) if schema == UPLOAD_SCHEMA else None


def _qualified(embedding: exp.Column, select: exp.Select,
               table: str) -> Callable[[str], exp.Column]:
    """A column maker for the embedding's table as the query names it (alias or table)."""
    qualifier = embedding.table or next(
        source.alias_or_name for source in select.find_all(exp.Table)
        if source.meta.get("published") is not None and source.meta["published"].name == table)

    def column(name: str) -> exp.Column:
        return exp.column(name, table=qualifier)
    return column
