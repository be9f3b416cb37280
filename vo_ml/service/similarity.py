"""Running similarity queries with the archive's neighbour indexes.

``TOP k ... ORDER BY ml_distance(embedding, ref)`` (see :mod:`vo_ml.adql.planning`) runs on
candidates from the table's HNSW index near each reference, re-ranked with the exact distance
in SQL. With conditions or joins, candidates may be dropped: the ranked rows are read, and the
candidates widened eightfold until k rows survive and none of them is farther than the search
reached (the rows read last are the answer); once the candidates would be a large share of the
table the query runs exactly instead. Rows named as references are found in the index's key
maps, and in the table when the index does not have them. A latent cone (``ml_distance(...) <
r``) takes every row within r of any reference from an exact scan of the vectors the index
stores. Without an up-to-date index, or when the request asks ``ML_SEARCH=exact``, the query
scans every row. The plan used is named in the result (``INFO name="vo_ml_plan"``).
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vo_ml import adql
from vo_ml.adql.planning import CANDIDATES, NeighbourQuery
from vo_ml.archive.neighbours import NeighbourIndex, description_path, fingerprint
from vo_ml.service import archive
from vo_ml.service.dali import DaliError

#: ML_SEARCH values: ``auto`` uses an index when there is an up-to-date one.
SEARCH_MODES = ("auto", "exact")
#: The first candidates are this many times k (at least _FEWEST_CANDIDATES).
_CANDIDATES_PER_ROW = 4
_FEWEST_CANDIDATES = 100
#: Beyond this share of the table's rows, an exact scan is cheaper than more candidates.
_EXACT_SHARE = 0.1


@dataclasses.dataclass(frozen=True)
class Plan:
    """The SQL to run, the tables it reads besides the archive, and what to tell the user."""

    sql: str
    tables: dict[str, pa.Table]
    description: str
    parameters: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    #: The result itself when planning had to read it (a filtered nearest-neighbour search,
    #: checked to be complete); ``sql`` is then what gave it.
    rows: pa.Table | None = None


def plan(sql: str, query: NeighbourQuery | None,
         embeddings: dict[tuple[str, str], np.ndarray], tables: dict[str, pa.Table],
         mode: str, timeout: float | None = None, stop: threading.Event | None = None) -> Plan:
    """How to run a translated query: as it is, or with candidates from a neighbour index.

    ``embeddings`` are those of the rows the query names as references, by (table, name given);
    ``tables`` those registered with the query (its uploads) by the name the SQL uses. A query
    planning runs (the ranked rows of a filtered search) is stopped after ``timeout`` seconds
    or when ``stop`` is set, as the query itself would be.
    """
    if mode not in SEARCH_MODES:
        raise DaliError(f"ML_SEARCH={mode!r} is not supported: use one of {', '.join(SEARCH_MODES)}")
    if query is None:
        return Plan(sql, {}, "")
    exact = Plan(sql, {}, f"exact: every row of {query.table} with a {query.column} compared")
    if mode == "exact":
        return exact
    index = _current_index(query.table, query.column, query.metric)
    if index is None:
        return Plan(sql, {}, f"{exact.description}; no up-to-date {query.metric} neighbour "
                             f"index of {query.table}.{query.column} (build it with 'vo-ml index')")
    vectors = _reference_vectors(query, embeddings, tables, int(index.meta["dimension"]))
    if not len(vectors):
        return Plan(sql, {}, f"{exact.description} (no uploaded reference has a vector)")
    references = "the reference" if len(vectors) == 1 else f"{len(vectors)} references"
    parameters = {name: embeddings[row] for name, row in query.parameters.items()}
    if query.radius is not None:
        return _cone(query, index, vectors, references, exact, parameters)
    count = max(_CANDIDATES_PER_ROW * query.k, _FEWEST_CANDIDATES)
    while True:
        ids, reach = index.search(vectors, count)
        candidates = {CANDIDATES: pa.table({"id": ids})}
        description = (f"approximate: {len(ids)} candidates near {references} from the HNSW "
                       f"index of {query.table}.{query.column}, re-ranked by the exact distance")
        if not query.filtered or count >= index.rows:
            return Plan(query.candidate_sql, candidates, description, parameters)
        ranked = _ranked(query, tables | candidates, parameters, timeout, stop)
        distances = ranked.column(ranked.num_columns - 1)
        if _complete(distances, query.k, reach):
            return Plan(query.ranked_sql, candidates, description, parameters,
                        ranked.remove_column(ranked.num_columns - 1))
        count *= 8
        if count > _EXACT_SHARE * index.rows:
            return Plan(sql, {}, f"{exact.description} (the conditions keep too few of the "
                                 "nearest rows for the index to help)")


def _cone(query: NeighbourQuery, index: NeighbourIndex, vectors: np.ndarray, references: str,
          exact: Plan, parameters: dict[str, np.ndarray]) -> Plan:
    """A latent cone: every row within the radius, found by an exact scan of the index's vectors
    (no graph search), so the result is the exact one."""
    ids = index.within(vectors, query.radius)
    if len(ids) > _EXACT_SHARE * index.rows:
        return Plan(exact.sql, {}, f"{exact.description} (the cone holds {len(ids)} "
                                   "rows, too many for the index to help)")
    return Plan(query.candidate_sql, {CANDIDATES: pa.table({"id": ids})},
                f"latent cone: the {len(ids)} rows within {query.radius:g} of "
                f"{references} in the stored vectors of the {query.metric} index of "
                f"{query.table}.{query.column}, checked by the exact distance", parameters)


def reference_embeddings(
        references: list[adql.Reference]) -> dict[tuple[str, str], np.ndarray]:
    """The embedding of every row named as a similarity reference, by (table, name given); each
    row must exist and have one, or the distances would all be NULL. An up-to-date L2 index
    holds them, keyed as the rows are named; otherwise the table is asked."""
    embeddings = {}
    for reference in references:
        index = _current_index(reference.table, reference.embedding_column, "l2")
        embedding = None if index is None else index.vector_named(reference.key_columns,
                                                                  reference.value)
        embeddings[reference.table, reference.value] = (
            _looked_up(reference) if embedding is None else embedding)
    return embeddings


def _looked_up(reference: adql.Reference) -> np.ndarray:
    """The embedding of the row a reference names, looked up in its table by one key column
    after the other (each an index lookup), the lowest rowid first: the rule of the SQL."""
    for key in reference.key_columns:
        found = archive().backend.lookup(
            f"SELECT {reference.embedding_column} FROM {reference.table} WHERE {key} = ? "
            "ORDER BY rowid LIMIT 1", [reference.value])
        if found and found[0][0] is None:
            raise adql.unembedded_reference_error(reference)
        if found:
            return np.asarray(found[0][0], np.float32)
    raise adql.unknown_reference_error(reference)


def _reference_vectors(query: NeighbourQuery, embeddings: dict[tuple[str, str], np.ndarray],
                       tables: dict[str, pa.Table], dimension: int) -> np.ndarray:
    """The reference vectors, one row each: every uploaded one that is not NULL."""
    if query.upload is None:
        vector = (embeddings[query.table, query.reference] if query.vector is None
                  else query.vector)
        return np.asarray(vector, np.float32).reshape(1, -1)
    view, column = query.upload
    given = pc.drop_null(tables[view].column(column)).combine_chunks()
    return np.asarray(given.flatten(), np.float32).reshape(-1, dimension)


def _ranked(query: NeighbourQuery, tables: dict[str, pa.Table], parameters: dict[str, np.ndarray],
            timeout: float | None, stop: threading.Event | None) -> pa.Table:
    """The rows the candidates give (k at most), with their distance as the last column (by
    position: a select item may have its name). ``tables`` are those the query reads, the
    candidates among them."""
    with archive().backend.stream(query.ranked_sql, parameters, timeout=timeout, stop=stop,
                                  tables=tables) as result:
        return pa.Table.from_batches(list(result.batches), schema=result.schema)


def _complete(distances: pa.ChunkedArray, k: int, reach: float) -> bool:
    """Whether the candidates held the k nearest rows that meet the conditions, as far as the
    search can tell: k rows do (``distances`` are theirs), and none is farther than the search
    reached (a row it left out is farther still, unless the graph search missed it: the index
    is approximate, and the benchmark measures how often that happens)."""
    farthest = pc.max(distances).as_py()
    return len(distances) >= k and (farthest is None or farthest <= reach)


def _current_index(table: str, column: str, metric: str) -> NeighbourIndex | None:
    """The table's index, if one is stored and was built from the embeddings the table holds."""
    path = description_path(archive().backend.path, table, column, metric)
    return _loaded(path, path.stat().st_mtime_ns if path.exists() else 0)


@functools.lru_cache(maxsize=32)
def _loaded(path: Path, version: int) -> NeighbourIndex | None:
    """An index, loaded once per version of its description (the archive is read-only while
    served)."""
    index = NeighbourIndex.load(path) if version else None
    if index is None:
        return None
    current = fingerprint(archive().backend, index.meta["table"], index.meta["column"],
                          index.meta["metric"])
    return index if current == index.meta["fingerprint"] else None
