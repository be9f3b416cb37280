"""Running similarity queries with the archive's neighbour indexes.

``TOP k ... ORDER BY ml_distance(embedding, ref)`` (see :mod:`vo_ml.adql.planning`) runs on
candidates from the table's HNSW index near each reference, re-ranked with the exact distance
in SQL. With conditions or joins, candidates may be dropped: they are widened eightfold until k
rows survive and none of them is farther than the search reached, and once they would be a
large share of the table the query runs exactly instead. A latent cone (``ml_distance(...) <
r``) takes every row within r of any reference from an exact scan of the vectors the index
stores. Without an up-to-date index, or when the request asks ``ML_SEARCH=exact``, the query
scans every row. The plan used is named in the result (``INFO name="vo_ml_plan"``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vo_ml.adql.planning import CANDIDATES, NeighbourQuery
from vo_ml.archive.neighbours import NeighbourIndex, fingerprint, index_path
from vo_ml.service import archive
from vo_ml.service.dali import DaliError

#: ML_SEARCH values: ``auto`` uses an index when there is an up-to-date one.
SEARCH_MODES = ("auto", "exact")
#: The first candidates are this many times k (at least _FEWEST_CANDIDATES).
_CANDIDATES_PER_ROW = 4
_FEWEST_CANDIDATES = 100
#: Beyond this share of the table's rows, an exact scan is cheaper than more candidates.
_EXACT_SHARE = 0.1


@dataclass(frozen=True)
class Plan:
    """The SQL to run, the tables it reads besides the archive, and what to tell the user."""

    sql: str
    tables: dict[str, pa.Table]
    description: str


def plan(sql: str, query: NeighbourQuery | None, embeddings: dict[str, np.ndarray],
         tables: dict[str, pa.Table], mode: str) -> Plan:
    """How to run a translated query: as it is, or with candidates from a neighbour index.

    ``embeddings`` are those of the rows the query names as references, by the name given;
    ``tables`` those registered with the query (its uploads) by the name the SQL uses.
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
    if query.radius is not None:
        return _cone(query, index, vectors, references, exact)
    count = max(_CANDIDATES_PER_ROW * query.k, _FEWEST_CANDIDATES)
    while True:
        ids, reach = index.search(vectors, count)
        candidates = pa.table({"id": ids})
        if not query.filtered or count >= index.rows or _complete(query, tables | {
                CANDIDATES: candidates}, reach):
            return Plan(query.candidate_sql, {CANDIDATES: candidates},
                        f"approximate: {len(candidates)} candidates near {references} from the "
                        f"HNSW index of {query.table}.{query.column}, re-ranked by the exact "
                        "distance")
        count *= 8
        if count > _EXACT_SHARE * index.rows:
            return Plan(sql, {}, f"{exact.description} (the conditions keep too few of the "
                                 "nearest rows for the index to help)")


def _cone(query: NeighbourQuery, index: NeighbourIndex, vectors: np.ndarray, references: str,
          exact: Plan) -> Plan:
    """A latent cone: every row within the radius, found by an exact scan of the index's vectors
    (no graph search), so the result is the exact one."""
    candidates = pa.table({"id": index.within(vectors, query.radius)})
    if len(candidates) > _EXACT_SHARE * index.rows:
        return Plan(exact.sql, {}, f"{exact.description} (the cone holds {len(candidates)} "
                                   "rows, too many for the index to help)")
    return Plan(query.candidate_sql, {CANDIDATES: candidates},
                f"latent cone: the {len(candidates)} rows within {query.radius:g} of "
                f"{references} in the stored vectors of the {query.metric} index of "
                f"{query.table}.{query.column}, checked by the exact distance")


def _reference_vectors(query: NeighbourQuery, embeddings: dict[str, np.ndarray],
                       tables: dict[str, pa.Table], dimension: int) -> np.ndarray:
    """The reference vectors, one row each: every uploaded one that is not NULL."""
    if query.upload is None:
        vector = embeddings[query.reference] if query.vector is None else query.vector
        return np.asarray(vector, np.float32).reshape(1, -1)
    view, column = query.upload
    given = pc.drop_null(tables[view].column(column)).combine_chunks()
    return np.asarray(given.flatten(), np.float32).reshape(-1, dimension)


def _complete(query: NeighbourQuery, tables: dict[str, pa.Table], reach: float) -> bool:
    """Whether the candidates surely hold the k nearest rows that meet the conditions: k of
    them do, and none is farther than the search reached (a row left out is farther still).
    ``tables`` are those the query reads, the candidates among them."""
    found = archive().backend.execute(query.check_sql, tables=tables)
    rows, farthest = found.columns[0][0], found.columns[1][0]
    return int(rows) >= query.k and (np.ma.is_masked(farthest) or float(farthest) <= reach)


def _current_index(table: str, column: str, metric: str) -> NeighbourIndex | None:
    """The table's index, if one is stored and was built from the embeddings the table holds."""
    path = index_path(archive().backend.path, table, column, metric)
    meta = path.with_suffix(".json")
    return _loaded(path, meta.stat().st_mtime_ns if meta.exists() else 0)


@functools.lru_cache(maxsize=32)
def _loaded(path: Path, version: int) -> NeighbourIndex | None:
    """An index file, loaded once per version (the archive is read-only while served)."""
    index = NeighbourIndex.load(path) if version else None
    # One search is far too small for OpenMP's spinning worker threads, which only fight with
    # the other requests for the cores: every search runs on its request's thread.
    faiss.omp_set_num_threads(1)
    if index is None:
        return None
    current = fingerprint(archive().backend, index.meta["table"], index.meta["column"])
    return index if current == index.meta["fingerprint"] else None
