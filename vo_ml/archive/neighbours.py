"""Nearest-neighbour indexes of a table's embeddings, kept beside the archive file.

An index is a faiss HNSW graph over the rows that have an embedding, labelled with the rows'
ids (:attr:`Backend.row_id`), so a search answers with rows the SQL can select by. It proposes
candidates only: the service re-ranks them with the exact distance in SQL. Beside the graph, an
L2 index keeps every row's reference keys sorted, so that the service finds the vector of a row
named in a query without asking the database, by the rule the SQL follows too
(:mod:`vo_ml.archive.references`). Each index records a fingerprint of what it was built from
(row count and a hash of every row id, vector and key); an
index whose fingerprint no longer matches the table is stale and not used, so a re-embedded
table is searched exactly until ``vo-ml index`` (or ``vo-ml embed``, which calls it) builds it
again. Service processes map the files read-only and share them.

Each build also records how far the table's rows are from their own nearest neighbours (another
row of the table), as sorted quantiles in its description: the scale against which
:meth:`NeighbourIndex.typicality` says how typical another spectrum is.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa

from vo_ml.archive.backend import Backend
from vo_ml.archive.references import REFERENCE_KEYS, key_map_order, named_position, reference_keys
from vo_ml.files import replacing
from vo_ml.progress import progress

__all__ = ["METRICS", "NeighbourIndex", "build_index", "description_path", "fingerprint"]

log = logging.getLogger(__name__)

#: Metric name -> the faiss metric of its index (cosine: inner product of unit vectors).
METRICS = {"l2": faiss.METRIC_L2, "cosine": faiss.METRIC_INNER_PRODUCT}
#: HNSW graph degree and build effort: recall@10 above 0.99 up to 1024 dimensions.
_GRAPH_DEGREE = 32
_BUILD_EFFORT = 80
#: Relative slack of the exact range scan: float32 sums may round a distance across the radius.
_ROUNDING = 1e-5
#: The archive's nearest-neighbour distances are kept as this many quantiles at most (all of
#: them, sorted, for a table with fewer rows): typicality to 0.1 percent.
_DISTANCE_QUANTILES = 1000
#: Search effort of the rows' own nearest-neighbour search at build time.
_NEAREST_EFFORT = 64


def description_path(db: Path | str, table: str, column: str, metric: str) -> Path:
    """The description of the index of ``table.column`` for ``metric``, in ``<db>.neighbours/``:
    JSON naming the build whose files hold the graph and the key maps."""
    return Path(f"{db}.neighbours") / f"{table}.{column}.{metric}.json"


def fingerprint(backend: Backend, table: str, column: str, metric: str) -> list[int]:
    """Rows with an embedding, and a hash of every row's id, vector and (for an L2 index,
    which finds references by them) keys: changes with any of them."""
    hashed = [backend.row_id, column, *_reference_keys(backend, table, metric)]
    found = backend.execute(f"SELECT count({column}), {backend.rows_hash(hashed)} FROM {table}")
    return [int(found.columns[0][0]), int(found.columns[1][0])]


def _reference_keys(backend: Backend, table: str, metric: str) -> list[str]:
    """The reference keys an index of the table keeps: those the table has, for L2 only (the
    only index that can hand out the vectors as the table holds them)."""
    columns = backend.table_columns(table)
    return list(reference_keys(columns)) if metric == "l2" else []


def _prepared(vectors: np.ndarray, metric: str) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if metric == "cosine":
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-30)
    return vectors


def build_index(backend: Backend, db: Path | str, table: str, column: str,
                metric: str = "l2") -> Path:
    """Build and store the index of ``table.column``; return its description's path.

    A build's files have names of their own and are on disk before the description naming them
    is renamed into place, so a reader (or a restart after a crash) always finds one whole
    build. Builds older than this one are removed, newer ones (a build running alongside) kept.
    """
    started = time.perf_counter()
    path = description_path(db, table, column, metric)
    path.parent.mkdir(parents=True, exist_ok=True)
    build = f"{time.time_ns():x}"
    current = fingerprint(backend, table, column, metric)
    rows = _read(backend, table, column, _reference_keys(backend, table, metric), current[0])
    index = _graph(rows, metric)
    with replacing(_graph_path(path, build)) as graph:
        faiss.write_index(index, str(graph.path))
    for key, values in rows.keys.items():
        _write_key_map(path, build, key, values, rows)
    meta = {"table": table, "column": column, "metric": metric, "rows": int(index.ntotal),
            "dimension": int(index.d), "fingerprint": current, "build": build,
            "nearest_distances": _nearest_distance_quantiles(index, rows, metric),
            "build_seconds": round(time.perf_counter() - started, 3)}
    with replacing(path) as description:
        description.path.write_text(json.dumps(meta))
    _remove_older_builds(path, build)
    return path


@dataclass
class _Rows:
    """What an index is built from: every row's id, whether it has an embedding, and its
    reference keys; the vectors of the rows that have one, in order."""

    row_ids: np.ndarray
    embedded: np.ndarray
    vectors: np.ndarray
    keys: dict[str, pa.ChunkedArray]

    @property
    def ids(self) -> np.ndarray:
        """The row id of each vector."""
        return self.row_ids[self.embedded]

    @property
    def positions(self) -> np.ndarray:
        """Each row's position among the vectors, -1 for a row without one."""
        return np.where(self.embedded, np.cumsum(self.embedded) - 1, -1)


def _read(backend: Backend, table: str, column: str, keys: list[str], embedded: int) -> _Rows:
    """Every row, batch by batch, the vectors into one array (the build's largest piece of
    memory besides the index's own copy)."""
    vectors = np.empty((embedded, 0), np.float32)
    row_ids, present = [np.empty(0, np.int64)], [np.empty(0, bool)]
    values: dict[str, list[pa.Array]] = {key: [] for key in keys}
    read = 0
    with (backend.stream(f"SELECT {', '.join([backend.row_id, column, *keys])} FROM {table}") as result,
          progress(embedded, f"read {table}.{column}", "row") as bar):
        for batch in result.batches:
            row_ids.append(batch.column(0).to_numpy())
            present.append(batch.column(1).is_valid().to_numpy(zero_copy_only=False))
            count = int(present[-1].sum())
            if count:
                flat = batch.column(1).filter(present[-1]).flatten().to_numpy(
                    zero_copy_only=False)
                if not vectors.shape[1]:
                    vectors = np.empty((embedded, flat.size // count), np.float32)
                vectors[read:read + count] = flat.reshape(count, -1)
            for number, key in enumerate(keys, start=2):
                values[key].append(batch.column(number))
            read += count
            bar.update(count)
    return _Rows(np.concatenate(row_ids), np.concatenate(present), vectors[:read],
                 {key: pa.chunked_array(arrays, pa.string()) for key, arrays in values.items()})


def _graph(rows: _Rows, metric: str) -> faiss.Index:
    """The HNSW graph of the vectors, labelled by row id. They are added at once: faiss links a
    graph built in batches less well (recall@10 fell from 1.0 to 0.93 at 1024-d with batches of
    8192 rows)."""
    graph = faiss.IndexHNSWFlat(max(rows.vectors.shape[1], 1), _GRAPH_DEGREE, METRICS[metric])
    graph.hnsw.efConstruction = _BUILD_EFFORT
    index = faiss.IndexIDMap(graph)
    if len(rows.vectors):
        index.add_with_ids(_prepared(rows.vectors, metric), rows.ids)
    return index


def _nearest_distance_quantiles(index: faiss.Index, rows: _Rows, metric: str) -> list[float]:
    """How far each row is from its nearest other row (the two nearest found by the graph, of
    which one is the row itself unless a tie hides it), as sorted quantiles: every distance
    when the table has at most :data:`_DISTANCE_QUANTILES` rows, else that many, evenly spaced
    in rank. Empty with fewer than two rows."""
    if len(rows.vectors) < 2:
        return []
    parameters = faiss.SearchParametersHNSW(efSearch=_NEAREST_EFFORT)
    found, ids = index.search(_prepared(rows.vectors, metric), 2, params=parameters)
    other = np.where(ids[:, 0] == rows.ids, 1, 0)
    nearest = _metric_distance(found[np.arange(len(found)), other], metric)
    nearest = np.sort(nearest[ids[np.arange(len(ids)), other] >= 0])
    if len(nearest) > _DISTANCE_QUANTILES:
        ranks = (np.arange(_DISTANCE_QUANTILES) + 0.5) / _DISTANCE_QUANTILES
        nearest = np.quantile(nearest, ranks)
    return [float(distance) for distance in nearest]


def _metric_distance(found: np.ndarray, metric: str) -> np.ndarray:
    """The metric's distance from what faiss returns (squared L2, or the cosine)."""
    if metric == "cosine":
        return 1.0 - found
    return np.sqrt(np.maximum(found, 0.0))


def _graph_path(path: Path, build: str) -> Path:
    return path.with_name(f"{path.stem}.{build}.faiss")


def _key_map_paths(path: Path, build: str, key: str) -> tuple[Path, Path]:
    """The sorted values of a key column, and the position in the index of each one's row."""
    return (path.with_name(f"{path.stem}.{build}.{key}.values.npy"),
            path.with_name(f"{path.stem}.{build}.{key}.positions.npy"))


def _write_key_map(path: Path, build: str, key: str, values: pa.ChunkedArray,
                   rows: _Rows) -> None:
    """Store every row's key (rows without one left out) in the reference rule's order, with
    its row's position in the index (-1 when it has no embedding), for a binary search."""
    named = values.is_valid().to_numpy(zero_copy_only=False)
    encoded = np.array(values.drop_null().cast(pa.binary()).to_pylist(), dtype=bytes)
    order = key_map_order(encoded, rows.row_ids[named])
    for target, array in zip(_key_map_paths(path, build, key),
                             (encoded[order], rows.positions[named][order]), strict=True):
        with replacing(target) as new:
            np.save(new.path, array)


def _remove_older_builds(path: Path, build: str) -> None:
    """Remove the files of builds older than ``build`` (and of the layout before builds)."""
    for file in path.parent.glob(f"{path.stem}.*"):
        if file == path:
            continue
        part = file.name[len(path.stem) + 1:].split(".")[0]
        try:
            older = int(part, 16) < int(build, 16)
        except ValueError:
            older = True
        if older:
            file.unlink(missing_ok=True)


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
        """The index described at ``path``, or None when there is none, or it cannot be read
        (a newer build has just replaced it, and the next request finds that one; or a file is
        damaged, which the log says: the table is then searched exactly until a new build)."""
        if not path.exists():
            return None
        try:
            meta = json.loads(path.read_text())
            graph = _graph_path(path, meta["build"])
            index = faiss.read_index(str(graph), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
            key_maps = {}
            for key in REFERENCE_KEYS:
                paths = _key_map_paths(path, meta["build"], key)
                if all(p.exists() for p in paths):
                    key_maps[key] = tuple(np.load(p, mmap_mode="r") for p in paths)
        except (OSError, ValueError, EOFError, KeyError, RuntimeError) as error:
            log.warning("neighbour index %s cannot be read (%s); rebuild it with 'vo-ml index'",
                        path, error)
            return None
        return cls(path, meta, index, key_maps)

    @property
    def rows(self) -> int:
        return int(self.meta["rows"])

    def is_current(self, backend: Backend) -> bool:
        """Whether it was built from the embeddings its table holds now."""
        return fingerprint(backend, self.meta["table"], self.meta["column"],
                           self.meta["metric"]) == self.meta["fingerprint"]

    def search(self, vectors: np.ndarray, count: int) -> tuple[np.ndarray, float]:
        """The row ids of about the ``count`` rows nearest each of ``vectors`` (without repeats,
        nearest first for one vector), and the reach of the search: a row left out is nearer to
        its reference than that only if the graph search missed it (infinite when every row was
        proposed)."""
        queries = _prepared(np.atleast_2d(vectors), self.meta["metric"])
        parameters = faiss.SearchParametersHNSW(efSearch=max(2 * count, 64))
        found, ids = self.index.search(queries, min(count, self.rows), params=parameters)
        distances = np.where(ids >= 0, _metric_distance(found, self.meta["metric"]), np.nan)
        reach = np.inf if count >= self.rows else float(np.nanmax(distances, axis=1).min())
        proposed = ids[ids >= 0]
        return (proposed if len(queries) == 1 else np.unique(proposed)), reach

    def nearest(self, vectors: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        """The row ids and metric distances of the ``count`` rows nearest each of ``vectors``,
        nearest first (a row's own vector among them at 0 when it is one of the table's): how
        alone each vector is, for the anomaly score. Id -1 and distance NaN where the table has
        fewer rows."""
        queries = _prepared(np.atleast_2d(vectors), self.meta["metric"])
        parameters = faiss.SearchParametersHNSW(efSearch=max(2 * count, _NEAREST_EFFORT))
        found, ids = self.index.search(queries, count, params=parameters)
        return ids, np.where(ids >= 0, _metric_distance(found, self.meta["metric"]), np.nan)

    def within(self, vectors: np.ndarray, radius: float) -> np.ndarray:
        """The row ids of every row within ``radius`` of any of ``vectors``: an exact scan of the
        vectors the index stores (a little beyond the radius, so rounding loses no row)."""
        queries = _prepared(np.atleast_2d(vectors), self.meta["metric"])
        if self.meta["metric"] == "cosine":
            threshold = 1.0 - radius - _ROUNDING
        else:
            threshold = (max(radius, 0.0) * (1 + _ROUNDING)) ** 2 + _ROUNDING
        _, _, positions = self._storage.range_search(queries, threshold)
        return np.unique(self._labels[positions])

    def vector_named(self, keys: tuple[str, ...], value: str) -> np.ndarray | None:
        """The vector of the row named ``value`` by the reference rule. None when the index
        cannot tell (the row has no embedding, no row has the name, or the index keeps no such
        key): the table then says which, by the same rule."""
        position = named_position(self._key_maps, keys, value)
        return None if position is None or position < 0 else self._storage.reconstruct(position)

    @functools.cached_property
    def _storage(self) -> faiss.IndexFlat:
        """The vectors of the index, in the order it stores them."""
        return faiss.downcast_index(faiss.downcast_index(self.index.index).storage)

    @property
    def knows_typicality(self) -> bool:
        """Whether the build recorded the rows' own nearest-neighbour distances (builds before
        they were recorded did not)."""
        return bool(self.meta.get("nearest_distances"))

    def typicality(self, vectors: np.ndarray) -> np.ndarray:
        """How typical each of ``vectors`` is, in percent: the share of the table's rows whose
        nearest other row is at least as far as the vector's nearest row. About 50 for a vector
        like the table's own, 0 when it is farther from every row than any row is from its
        nearest. Needs :attr:`knows_typicality`."""
        archive = np.asarray(self.meta["nearest_distances"])
        queries = _prepared(np.atleast_2d(vectors), self.meta["metric"])
        parameters = faiss.SearchParametersHNSW(efSearch=_NEAREST_EFFORT)
        found, _ = self.index.search(queries, 1, params=parameters)
        distances = _metric_distance(found[:, 0], self.meta["metric"])
        nearer = np.searchsorted(archive, distances, side="left")
        return 100.0 * (len(archive) - nearer) / len(archive)

    @functools.cached_property
    def _labels(self) -> np.ndarray:
        """The row id of each vector, in the order the index stores them."""
        return faiss.vector_to_array(self.index.id_map)
