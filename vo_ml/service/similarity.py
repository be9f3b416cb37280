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

:func:`plan` only decides, from what is known before anything runs (the mode, the index, the
reference vectors); it returns a value: the exact SQL as a :class:`~vo_ml.service.dal.SqlPlan`,
or a :class:`NearestPlan`, :class:`FilteredPlan` or :class:`ConePlan`, whose ``run`` searches
the index and runs the SQL through the DAL pipeline's executor.
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
from vo_ml.archive.backend import ResultStream
from vo_ml.archive.neighbours import NeighbourIndex, description_path
from vo_ml.service.context import archive
from vo_ml.service.dal import Executor, Found, Plan, SqlPlan
from vo_ml.service.dali import DaliError

#: ML_SEARCH values: ``auto`` uses an index when there is an up-to-date one.
SEARCH_MODES = ("auto", "exact")
#: The first candidates are this many times k (at least _FEWEST_CANDIDATES).
_CANDIDATES_PER_ROW = 4
_FEWEST_CANDIDATES = 100
#: Beyond this share of the table's rows, an exact scan is cheaper than more candidates.
_EXACT_SHARE = 0.1
#: Held while an index is looked up, so that the requests of a cold service wait for one load
#: of an index and its fingerprint instead of each computing them.
_LOADING = threading.Lock()


def plan(sql: str, query: NeighbourQuery | None,
         embeddings: dict[tuple[str, str], np.ndarray], tables: dict[str, pa.Table],
         mode: str) -> Plan:
    """How to run a translated query: as it is, or with candidates from a neighbour index.

    ``embeddings`` are those of the rows the query names as references, by (table, name given);
    ``tables`` those registered with the query (its uploads) by the name the SQL uses. Nothing
    runs here: the plan says what to run, and its ``run`` runs it.
    """
    if mode not in SEARCH_MODES:
        raise DaliError(f"ML_SEARCH={mode!r} is not supported: use one of {', '.join(SEARCH_MODES)}")
    if query is None:
        return SqlPlan(sql)
    exact = f"exact: every row of {query.table} with a {query.column} compared"
    if mode == "exact":
        return _exact(sql, exact)
    index = current_index(query.table, query.column, query.metric)
    if index is None:
        return _exact(sql, f"{exact}; no up-to-date {query.metric} neighbour index of "
                           f"{query.table}.{query.column} (build it with 'vo-ml index')")
    vectors = _reference_vectors(query, embeddings, tables, int(index.meta["dimension"]))
    if not len(vectors):
        return _exact(sql, f"{exact} (no uploaded reference has a vector)")
    search = _Search(query, index, vectors,
                     {name: embeddings[row] for name, row in query.parameters.items()},
                     sql, exact)
    if query.radius is not None:
        return ConePlan(search)
    return FilteredPlan(search) if query.filtered else NearestPlan(search)


def _exact(sql: str, description: str) -> SqlPlan:
    return SqlPlan(sql, infos=_named(description))


def _named(description: str) -> tuple[tuple[str, str], ...]:
    """The INFO that names the plan used in the result."""
    return (("vo_ml_plan", description),)


@dataclasses.dataclass(frozen=True)
class _Search:
    """What every plan with an index needs: the query, the index, the reference vectors, the
    SQL parameters (the named references' embeddings), and the exact SQL to fall back on."""

    query: NeighbourQuery
    index: NeighbourIndex
    vectors: np.ndarray
    parameters: dict[str, np.ndarray]
    exact_sql: str
    exact: str

    @property
    def references(self) -> str:
        return "the reference" if len(self.vectors) == 1 else f"{len(self.vectors)} references"

    def fall_back(self, executor: Executor, why: str) -> Found:
        """The exact query's rows, saying why the index did not help."""
        return _exact(self.exact_sql, f"{self.exact} ({why})").run(executor)

    def candidates(self, ids: np.ndarray) -> dict[str, pa.Table]:
        return {CANDIDATES: pa.table({"id": ids})}

    def approximate(self, ids: np.ndarray) -> tuple[tuple[str, str], ...]:
        return _named(f"approximate: {len(ids)} candidates near {self.references} from the HNSW "
                      f"index of {self.query.table}.{self.query.column}, re-ranked by the exact "
                      "distance")

    def first_count(self) -> int:
        return max(_CANDIDATES_PER_ROW * self.query.k, _FEWEST_CANDIDATES)


@dataclasses.dataclass(frozen=True)
class NearestPlan:
    """TOP k nearest rows with nothing that drops any: the candidates near the references,
    re-ranked by the exact distance."""

    search: _Search

    def run(self, executor: Executor) -> Found:
        search = self.search
        ids, _ = search.index.search(search.vectors, search.first_count())
        return Found(executor.open(search.query.candidate_sql, search.parameters,
                                   search.candidates(ids)), search.approximate(ids))


@dataclasses.dataclass(frozen=True)
class FilteredPlan:
    """TOP k nearest rows that meet conditions or joins, which may drop candidates: the ranked
    rows are read, and the candidates widened eightfold until k rows survive and none of them
    is farther than the search reached (the rows read last are the answer); once the
    candidates would be a large share of the table, the query runs exactly instead."""

    search: _Search

    def run(self, executor: Executor) -> Found:
        search, query = self.search, self.search.query
        count = search.first_count()
        while True:
            ids, reach = search.index.search(search.vectors, count)
            candidates = search.candidates(ids)
            if count >= search.index.rows:
                return Found(executor.open(query.candidate_sql, search.parameters, candidates),
                             search.approximate(ids))
            ranked = executor.read(query.ranked_sql, search.parameters, candidates)
            distances = ranked.column(ranked.num_columns - 1)
            if _complete(distances, query.k, reach):
                served = ranked.remove_column(ranked.num_columns - 1)
                return Found(ResultStream(served.schema, iter(served.to_batches())),
                             search.approximate(ids))
            count *= 8
            if count > _EXACT_SHARE * search.index.rows:
                return search.fall_back(executor, "the conditions keep too few of the nearest "
                                                  "rows for the index to help")


@dataclasses.dataclass(frozen=True)
class ConePlan:
    """A latent cone: every row within the radius, found by an exact scan of the index's
    vectors (no graph search), so the result is the exact one."""

    search: _Search

    def run(self, executor: Executor) -> Found:
        search, query = self.search, self.search.query
        ids = search.index.within(search.vectors, query.radius)
        if len(ids) > _EXACT_SHARE * search.index.rows:
            return search.fall_back(executor, f"the cone holds {len(ids)} rows, too many for "
                                              "the index to help")
        return Found(
            executor.open(query.candidate_sql, search.parameters, search.candidates(ids)),
            _named(f"latent cone: the {len(ids)} rows within {query.radius:g} of "
                   f"{search.references} in the stored vectors of the {query.metric} index of "
                   f"{query.table}.{query.column}, checked by the exact distance"))


def reference_embeddings(
        references: list[adql.Reference]) -> dict[tuple[str, str], np.ndarray]:
    """The embedding of every row named as a similarity reference, by (table, name given), from
    the tables' up-to-date L2 indexes or else the archive (:func:`adql.reference_embeddings`)."""
    return adql.reference_embeddings(references, archive().backend, current_index)


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


def _complete(distances: pa.ChunkedArray, k: int, reach: float) -> bool:
    """Whether the candidates held the k nearest rows that meet the conditions, as far as the
    search can tell: k rows do (``distances`` are theirs), and none is farther than the search
    reached (a row it left out is farther still, unless the graph search missed it: the index
    is approximate, and the benchmark measures how often that happens)."""
    farthest = pc.max(distances).as_py()
    return len(distances) >= k and (farthest is None or farthest <= reach)


def current_index(table: str, column: str, metric: str) -> NeighbourIndex | None:
    """The table's index, if one is stored and was built from the embeddings the table holds."""
    path = description_path(archive().backend.path, table, column, metric)
    with _LOADING:
        return _loaded(path, path.stat().st_mtime_ns if path.exists() else 0)


@functools.lru_cache(maxsize=32)
def _loaded(path: Path, version: int) -> NeighbourIndex | None:
    """An index, loaded once per version of its description (the archive is read-only while
    served)."""
    index = NeighbourIndex.load(path) if version else None
    return index if index is not None and index.is_current(archive().backend) else None
