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
import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

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
    """The description of the index of ``table.column`` for ``metric``, in ``<db>.neighbours/``:
    JSON naming the build whose files hold the graph and the key maps."""
    return Path(f"{db}.neighbours") / f"{table}.{column}.{metric}.json"


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
    """Build and store the index of ``table.column``, reading the embeddings batch by batch (the
    memory is the index's own). A build's files have names of their own; the description naming
    them is written last and renamed into place, so a reader always finds one whole build."""
    started = time.perf_counter()
    path = index_path(db, table, column, metric)
    path.parent.mkdir(parents=True, exist_ok=True)
    build = f"{time.time_ns():x}"
    current = fingerprint(backend, table, column)
    index, keys = _indexed(backend, table, column, metric, current[0])
    faiss.write_index(index, str(_graph_path(path, build)))
    for key, values in keys.items():
        _write_key_map(path, build, key, values)
    meta = {"table": table, "column": column, "metric": metric, "rows": int(index.ntotal),
            "dimension": int(index.d), "fingerprint": current, "build": build,
            "build_seconds": round(time.perf_counter() - started, 3)}
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(meta))
    os.replace(partial, path)
    for stale in path.parent.glob(f"{path.stem}.*"):
        if stale != path and not stale.name.startswith(f"{path.stem}.{build}."):
            stale.unlink(missing_ok=True)
    return path


def _indexed(backend: Backend, table: str, column: str, metric: str,
             rows: int) -> tuple[faiss.Index, dict[str, pa.ChunkedArray]]:
    """The HNSW index of the rows with an embedding, labelled by rowid, and their reference
    keys in the order the index holds them. The vectors are read batch by batch into one array
    and added at once: faiss links the nodes of a graph built in small batches less well (at
    16-d, recall@10 fell from 1.0 to 0.98 with batches of 8192 rows)."""
    keys = _keys(backend, table)
    ids = np.empty(rows, np.int64)
    vectors = None
    values: dict[str, list[pa.Array]] = {key: [] for key in keys}
    query = f"SELECT rowid, {', '.join([column, *keys])} FROM {table} WHERE {column} IS NOT NULL"
    read = 0
    with (backend.stream(query) as result,
          tqdm(total=rows, desc=f"read {table}.{column}", unit="row") as bar):
        for batch in (b for b in result.batches if b.num_rows):
            flat = batch.column(1).flatten().to_numpy(zero_copy_only=False)
            if vectors is None:
                vectors = np.empty((rows, flat.size // batch.num_rows), np.float32)
            vectors[read:read + batch.num_rows] = flat.reshape(batch.num_rows, -1)
            ids[read:read + batch.num_rows] = batch.column(0).to_numpy()
            for number, key in enumerate(keys, start=2):
                values[key].append(batch.column(number))
            read += batch.num_rows
            bar.update(batch.num_rows)
    graph = faiss.IndexHNSWFlat(1 if vectors is None else vectors.shape[1], _GRAPH_DEGREE,
                                METRICS[metric])
    graph.hnsw.efConstruction = _BUILD_EFFORT
    index = faiss.IndexIDMap(graph)
    if vectors is not None:
        index.add_with_ids(_prepared(vectors[:read], metric), ids[:read])
    return index, {key: pa.chunked_array(arrays, pa.string()) for key, arrays in values.items()}


def _graph_path(path: Path, build: str) -> Path:
    return path.with_name(f"{path.stem}.{build}.faiss")


def _key_map_paths(path: Path, build: str, key: str) -> tuple[Path, Path]:
    """The sorted values of a key column, and the position in the index of each one's row."""
    return (path.with_name(f"{path.stem}.{build}.{key}.values.npy"),
            path.with_name(f"{path.stem}.{build}.{key}.positions.npy"))


def _write_key_map(path: Path, build: str, key: str, values: pa.ChunkedArray) -> None:
    """Store the key of every indexed row, sorted (rows without one left out), for a binary
    search."""
    present = np.flatnonzero(pc.is_valid(values).to_numpy(zero_copy_only=False))
    encoded = np.array(values.drop_null().cast(pa.binary()).to_pylist(), dtype=bytes)
    order = np.argsort(encoded, kind="stable")
    for target, array in zip(_key_map_paths(path, build, key), (encoded[order], present[order]),
                             strict=True):
        np.save(target, array)


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
        """The index described at ``path``, or None when there is none (or a newer build has
        just replaced it: the next request finds that one)."""
        try:
            meta = json.loads(path.read_text())
            graph = _graph_path(path, meta["build"])
            index = faiss.read_index(str(graph), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
            key_maps = {}
            for key in REFERENCE_KEYS:
                paths = _key_map_paths(path, meta["build"], key)
                if all(p.exists() for p in paths):
                    key_maps[key] = tuple(np.load(p, mmap_mode="r") for p in paths)
        except (FileNotFoundError, KeyError, RuntimeError):
            return None
        return cls(path, meta, index, key_maps)

    @property
    def rows(self) -> int:
        return int(self.meta["rows"])

    def search(self, vectors: np.ndarray, count: int) -> tuple[np.ndarray, float]:
        """The rowids of about the ``count`` rows nearest each of ``vectors`` (without repeats,
        nearest first for one vector), and the reach of the search: a row left out is nearer to
        its reference than that only if the graph search missed it (infinite when every row was
        proposed)."""
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

    def vector_named(self, keys: tuple[str, ...], value: str) -> np.ndarray | None:
        """The stored vector of a row whose first key column among ``keys`` to have it is
        ``value``, or None when no indexed row has it (or the index keeps none of the keys).
        Only for an L2 index, which stores the vectors as the table holds them (a cosine index
        stores them normalised)."""
        if self.meta["metric"] != "l2":
            return None
        wanted = value.encode("utf-8")
        for key in (k for k in keys if k in self._key_maps):
            values, positions = self._key_maps[key]
            found = int(np.searchsorted(values, wanted))
            if found < len(values) and values[found] == wanted:
                return self._storage.reconstruct(int(positions[found]))
        return None

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
