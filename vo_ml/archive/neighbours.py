"""Nearest-neighbour indexes of a table's embeddings, kept beside the archive file.

An index is a faiss HNSW graph over the rows that have an embedding, labelled with the rows'
DuckDB ``rowid``, so a search answers with rows the SQL can select by. It proposes candidates
only: the service re-ranks them with the exact distance in SQL. Beside the graph, the index keeps
the rows' reference keys (:data:`REFERENCE_KEYS`) sorted, so that the service finds the vector of
a row named in a query without asking the database. Each index records a fingerprint of what it
was built from (row count and a hash of every rowid, vector and key); an index whose fingerprint
no longer matches the table is stale and not used, so a re-embedded table is searched exactly
until ``vo-ml index`` (or ``vo-ml embed``, which calls it) builds it again. Service processes map
the files read-only and share them.
"""

from __future__ import annotations

import functools
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from vo_ml.archive.backend import REFERENCE_KEYS, Backend

__all__ = ["METRICS", "NeighbourIndex", "build_index", "fingerprint", "index_path"]

#: Metric name -> the faiss metric of its index (cosine: inner product of unit vectors).
METRICS = {"l2": faiss.METRIC_L2, "cosine": faiss.METRIC_INNER_PRODUCT}
#: HNSW graph degree and build effort: recall@10 above 0.99 up to 1024 dimensions.
_GRAPH_DEGREE = 32
_BUILD_EFFORT = 80
#: Relative slack of the exact range scan: float32 sums may round a distance across the radius.
_ROUNDING = 1e-5


def index_path(db: Path | str, table: str, column: str, metric: str) -> Path:
    """Where the index of ``table.column`` for ``metric`` lives: ``<db>.neighbours/``."""
    return Path(f"{db}.neighbours") / f"{table}.{column}.{metric}.faiss"


def fingerprint(backend: Backend, table: str, column: str) -> list[int]:
    """Rows with an embedding, and a hash of their rowids, vectors and reference keys: changes
    with any of them."""
    hashed = ", ".join(["rowid", column, *_keys(backend, table)])
    found = backend.execute(f"SELECT count({column}), coalesce(sum(hash({hashed})), 0) "
                            f"FROM {table} WHERE {column} IS NOT NULL")
    return [int(found.columns[0][0]), int(found.columns[1][0])]


def _keys(backend: Backend, table: str) -> list[str]:
    """The reference keys the table has."""
    columns = backend.table_columns(table)
    return [key for key in REFERENCE_KEYS if key in columns]


def _prepared(vectors: np.ndarray, metric: str) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if metric == "cosine":
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-30)
    return vectors


def build_index(backend: Backend, db: Path | str, table: str, column: str,
                metric: str = "l2") -> Path:
    """Build and store the index of ``table.column``; written under a temporary name and renamed,
    so a reader never maps half a file."""
    started = time.perf_counter()
    keys = _keys(backend, table)
    rows = backend.execute(f"SELECT rowid, {', '.join([column, *keys])} FROM {table} "
                           f"WHERE {column} IS NOT NULL ORDER BY rowid")
    ids = np.asarray(rows.columns[0], dtype=np.int64)
    vectors = _prepared(np.stack(rows.columns[1]) if len(ids) else np.zeros((0, 1)), metric)
    graph = faiss.IndexHNSWFlat(vectors.shape[1], _GRAPH_DEGREE, METRICS[metric])
    graph.hnsw.efConstruction = _BUILD_EFFORT
    index = faiss.IndexIDMap(graph)
    index.add_with_ids(vectors, ids)
    path = index_path(db, table, column, metric)
    path.parent.mkdir(parents=True, exist_ok=True)
    for key, values in zip(keys, rows.columns[2:], strict=True):
        _write_key_map(path, key, values)
    partial = path.with_suffix(".partial")
    faiss.write_index(index, str(partial))
    meta = {"table": table, "column": column, "metric": metric, "rows": len(ids),
            "dimension": int(vectors.shape[1]), "fingerprint": fingerprint(backend, table, column),
            "build_seconds": round(time.perf_counter() - started, 3)}
    path.with_suffix(".json.partial").write_text(json.dumps(meta))
    os.replace(partial, path)
    os.replace(path.with_suffix(".json.partial"), path.with_suffix(".json"))
    return path


def _key_map_paths(path: Path, key: str) -> tuple[Path, Path]:
    """The sorted values of a key column, and the position in the index of each one's row."""
    return path.with_suffix(f".{key}.values.npy"), path.with_suffix(f".{key}.positions.npy")


def _write_key_map(path: Path, key: str, values: np.ma.MaskedArray) -> None:
    """Store the key of every indexed row, sorted (rows without one left out), for a binary
    search; under temporary names renamed into place, like the index."""
    present = np.flatnonzero(~np.ma.getmaskarray(values))
    encoded = np.char.encode(np.asarray(np.ma.getdata(values)[present], dtype=str), "utf-8")
    order = np.argsort(encoded, kind="stable")
    for target, array in zip(_key_map_paths(path, key), (encoded[order], present[order]),
                             strict=True):
        partial = target.with_suffix(".partial.npy")
        np.save(partial, array)
        os.replace(partial, target)


@dataclass
class NeighbourIndex:
    """A stored index, mapped read-only."""

    path: Path
    meta: dict
    index: faiss.Index
    #: Per reference key: its sorted values, and the position in the index of each one's row.
    _key_maps: dict[str, tuple[np.ndarray, np.ndarray]]

    @classmethod
    def load(cls, path: Path) -> NeighbourIndex | None:
        """The index at ``path``, or None when there is none."""
        meta_path = path.with_suffix(".json")
        if not (path.exists() and meta_path.exists()):
            return None
        index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
        key_maps = {}
        for key in REFERENCE_KEYS:
            paths = _key_map_paths(path, key)
            if all(p.exists() for p in paths):
                key_maps[key] = tuple(np.load(p, mmap_mode="r") for p in paths)
        return cls(path, json.loads(meta_path.read_text()), index, key_maps)

    @property
    def rows(self) -> int:
        return int(self.meta["rows"])

    def search(self, vectors: np.ndarray, count: int) -> tuple[np.ndarray, float]:
        """The rowids of about the ``count`` rows nearest each of ``vectors`` (without repeats,
        nearest first for one vector), and the reach of the search: no row left out is nearer
        to its reference than that (infinite when every row was proposed)."""
        queries = _prepared(np.atleast_2d(vectors), self.meta["metric"])
        parameters = faiss.SearchParametersHNSW(efSearch=max(2 * count, 64))
        found, ids = self.index.search(queries, min(count, self.rows), params=parameters)
        distances = np.where(ids >= 0, self._distance(found), np.nan)
        reach = np.inf if count >= self.rows else float(np.nanmax(distances, axis=1).min())
        proposed = ids[ids >= 0]
        return (proposed if len(queries) == 1 else np.unique(proposed)), reach

    def within(self, vectors: np.ndarray, radius: float) -> np.ndarray:
        """The rowids of every row within ``radius`` of any of ``vectors``: an exact scan of the
        vectors the index stores (a little beyond the radius, so rounding loses no row)."""
        queries = _prepared(np.atleast_2d(vectors), self.meta["metric"])
        if self.meta["metric"] == "cosine":
            threshold = 1.0 - radius - _ROUNDING
        else:
            threshold = (max(radius, 0.0) * (1 + _ROUNDING)) ** 2 + _ROUNDING
        _, _, positions = self._storage.range_search(queries, threshold)
        return np.unique(self._labels[positions])

    def vector_of(self, key: str, value: str) -> np.ndarray | None:
        """The stored vector of a row whose ``key`` column is ``value``, or None when no indexed
        row has it (or the index keeps no such key). Only for an L2 index, which stores the
        vectors as the table holds them (a cosine index stores them normalised)."""
        if self.meta["metric"] != "l2":
            return None
        if key not in self._key_maps:
            return None
        values, positions = self._key_maps[key]
        wanted = value.encode("utf-8")
        found = int(np.searchsorted(values, wanted))
        if found == len(values) or values[found] != wanted:
            return None
        return self._storage.reconstruct(int(positions[found]))

    @functools.cached_property
    def _storage(self) -> faiss.IndexFlat:
        """The vectors of the index, in the order it stores them."""
        return faiss.downcast_index(faiss.downcast_index(self.index.index).storage)

    def _distance(self, found: np.ndarray) -> np.ndarray:
        """The metric's distance from what faiss returns (squared L2, or the cosine)."""
        if self.meta["metric"] == "cosine":
            return 1.0 - found
        return np.sqrt(np.maximum(found, 0.0))

    @functools.cached_property
    def _labels(self) -> np.ndarray:
        """The rowid of each vector, in the order the index stores them."""
        return faiss.vector_to_array(self.index.id_map)
