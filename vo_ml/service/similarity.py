"""Running nearest-neighbour queries with the archive's neighbour indexes.

``TOP k ... ORDER BY ml_distance(embedding, ref)`` (see :mod:`vo_ml.adql.planning`) runs on
candidates from the table's index, re-ranked with the exact distance in SQL. With conditions or
joins, too few candidates may survive: the candidates are widened eightfold until k rows do, and
once they would be a large share of the table the query runs exactly instead. Without an
up-to-date index, or when the request asks ``ML_SEARCH=exact``, the query scans every row. The
plan used is named in the result (``INFO name="vo_ml_plan"``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

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
         mode: str) -> Plan:
    """How to run a translated query: as it is, or with candidates from a neighbour index.

    ``embeddings`` are those of the rows the query names as references, by the name given.
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
    vector = np.asarray(embeddings[query.reference] if query.vector is None else query.vector,
                        np.float32)
    count = max(_CANDIDATES_PER_ROW * query.k, _FEWEST_CANDIDATES)
    while True:
        candidates = pa.table({"id": index.search(vector, count)})
        if not query.filtered or count >= index.rows or _enough(query, candidates):
            return Plan(query.candidate_sql, {CANDIDATES: candidates},
                        f"approximate: {len(candidates)} candidates from the HNSW index of "
                        f"{query.table}.{query.column}, re-ranked by the exact distance")
        count *= 8
        if count > _EXACT_SHARE * index.rows:
            return Plan(sql, {}, f"{exact.description} (the conditions keep too few of the "
                                 "nearest rows for the index to help)")


def _enough(query: NeighbourQuery, candidates: pa.Table) -> bool:
    found = archive().backend.execute(f"SELECT count(*) FROM ({query.candidate_sql})",
                                      tables={CANDIDATES: candidates})
    return int(found.columns[0][0]) >= query.k


def _current_index(table: str, column: str, metric: str) -> NeighbourIndex | None:
    """The table's index, if one is stored and was built from the embeddings the table holds."""
    path = index_path(archive().backend.path, table, column, metric)
    meta = path.with_suffix(".json")
    return _loaded(path, meta.stat().st_mtime_ns if meta.exists() else 0)


@functools.lru_cache(maxsize=32)
def _loaded(path: Path, version: int) -> NeighbourIndex | None:
    """An index file, loaded once per version (the archive is read-only while served)."""
    index = NeighbourIndex.load(path) if version else None
    if index is None:
        return None
    current = fingerprint(archive().backend, index.meta["table"], index.meta["column"])
    return index if current == index.meta["fingerprint"] else None
