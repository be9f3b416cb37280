"""Batch encoding of the spectrum store with Dask.

The store's flux and mask become Dask arrays chunked by rows; every chunk is encoded by
``map_blocks`` into one row per spectrum holding the latent vector and the reconstruction error.
``dtype``, ``chunks`` and ``meta`` are always given to ``map_blocks``, so Dask never calls the
Keras model on placeholder input to guess them. Each worker loads the model once and keeps it for
every chunk it encodes (see :func:`load_model`), and runs TensorFlow on as many threads as the
worker has, so that N single-threaded workers use N cores. The same code runs on the local
threaded scheduler, on a local cluster of worker processes (``workers=N``) or on a
``dask.distributed`` cluster (``scheduler="tcp://host:port"``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dask.array as da
import numpy as np

from vo_ml.ml.cards import load_card
from vo_ml.ml.models import downsampling
from vo_ml.ml.projection import map_xy
from vo_ml.progress import DaskProgress, progress
from vo_ml.spectra.grid import downsample
from vo_ml.spectra.store import SpectrumStore

__all__ = ["Embeddings", "embed_store", "encode", "encode_batch", "encode_rows", "latent_vectors",
           "load_model", "model_sampled", "reconstruct"]


@dataclass
class Embeddings:
    """Latent vectors and reconstruction errors, row for row with ``dids``."""

    model_id: str
    dids: np.ndarray
    latent: np.ndarray
    recon_error: np.ndarray
    card: dict
    model_dir: Path

    @property
    def map_xy(self) -> np.ndarray:
        """The 2-D map position of each row (:mod:`vo_ml.ml.projection`)."""
        return map_xy(self.latent, self.card, self.model_dir)


log = logging.getLogger(__name__)

#: Flux bytes per Dask task: a few dozen full-resolution HARPS spectra, all of MILES.
TASK_BYTES = 64 << 20


_LOADING = threading.Lock()


def load_model(model_dir: str) -> tuple:
    """Encoder, decoder and card of a saved model, loaded once per process, however many
    threads ask at once."""
    with _LOADING:
        return _load_model_once(str(Path(model_dir).resolve()))


@functools.lru_cache(maxsize=8)
def _load_model_once(model_dir: str) -> tuple:
    from vo_ml.ml.framework import keras

    _match_worker_threads()
    encoder = keras.models.load_model(Path(model_dir) / "encoder.keras", compile=False)
    decoder = keras.models.load_model(Path(model_dir) / "decoder.keras", compile=False)
    return encoder, decoder, load_card(Path(model_dir))


def _match_worker_threads() -> None:
    """In a dask.distributed worker, let TensorFlow use the worker's threads and no more."""
    try:
        from distributed import get_worker

        threads = get_worker().state.nthreads
    except (ImportError, ValueError):
        return
    from vo_ml.ml.framework import tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        return  # TensorFlow had already started in this process


def encode(flux: np.ndarray, mask: np.ndarray, model_dir: str | Path) -> np.ndarray:
    """Latent vectors and RMS reconstruction error of rows at the model's sampling (from
    :meth:`SpectrumStore.coarsened`): shape (rows, latent_dim + 1).

    The error is measured over good pixels only, in units of the normalised flux (as the store
    holds it). Rows go through the model in batches of the training batch size, which bounds
    the activations.
    """
    encoder, decoder, card = load_model(str(model_dir))
    batch = int(card["config"]["training"]["batch_size"])
    parts = [encode_batch(encoder, decoder, flux[i:i + batch], mask[i:i + batch])
             for i in range(0, len(flux), batch)]
    return np.concatenate(parts) if parts else np.empty((0, int(card["latent_dim"]) + 1), np.float32)


def encode_batch(encoder: object, decoder: object, flux: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Latent vectors and RMS reconstruction error of one batch (see :func:`encode`)."""
    good = (~mask).astype(np.float32)
    latent = _latent(encoder, flux, good)
    residual = decoder(latent, training=False).numpy()
    residual -= flux
    np.square(residual, out=residual)
    residual *= good
    rms = np.sqrt(residual.sum(axis=1) / np.maximum(good.sum(axis=1), 1.0))
    return np.concatenate([latent, rms[:, None]], axis=1).astype(np.float32)


def embed_store(
    store: SpectrumStore,
    model_dir: str | Path,
    scheduler: str | None = None,
    workers: int | None = None,
) -> Embeddings:
    """Encode every spectrum of ``store`` with the model in ``model_dir``, on the scheduler at
    ``scheduler``, on a local cluster of ``workers`` processes, or else on local threads."""
    card = load_card(Path(model_dir))
    latent_dim = int(card["latent_dim"])
    rows = len(store)
    dids = store.dids[:rows]
    store = store.coarsened(downsampling(card["config"]))
    with _scheduler(scheduler, workers) as (compute, slots):
        per_task = _rows_per_task(store, rows, slots)
        flux = da.from_zarr(store.flux, chunks=(per_task, -1))[:rows]
        mask = da.from_zarr(store.mask, chunks=(per_task, -1))[:rows]
        encoded = da.map_blocks(
            encode, flux, mask, model_dir=str(Path(model_dir).resolve()),
            dtype=np.float32,
            chunks=(flux.chunks[0], (latent_dim + 1,)),
            meta=np.empty((0, latent_dim + 1), dtype=np.float32),
        )
        values = compute(encoded)
    return Embeddings(card["model_id"], dids, values[:, :latent_dim],
                      values[:, latent_dim].astype(np.float64), card, Path(model_dir))


def _rows_per_task(store: SpectrumStore, rows: int, slots: int) -> int:
    """Rows per Dask task: at most TASK_BYTES of flux and at least four tasks per worker thread
    (``slots``), so every worker gets work and a slow one does not hold up the end; in whole
    store chunks when tasks are that large, so that no chunk is read by two tasks."""
    chunk = store.flux.chunks[0]
    by_bytes = max(1, TASK_BYTES // (4 * store.grid.pixels))
    per_task = max(1, min(by_bytes, -(-rows // (4 * slots))))
    return per_task // chunk * chunk if per_task >= chunk else per_task


@contextlib.contextmanager
def _scheduler(address: str | None, workers: int | None
               ) -> Iterator[tuple[Callable[[da.Array], np.ndarray], int]]:
    """A compute function with a progress bar, and how many tasks it runs at once: on a client of
    the cluster at ``address``, on a local cluster of ``workers`` processes on 127.0.0.1 (sharing
    the cores), or on threads."""
    if address is None and workers is None:
        def on_threads(array: da.Array) -> np.ndarray:
            with progress(None, "encode", "task") as bar, DaskProgress(bar):
                return array.compute(scheduler="threads")
        yield on_threads, os.cpu_count() or 1
        return
    from dask.distributed import Client, LocalCluster, as_completed

    cluster: contextlib.AbstractContextManager = contextlib.nullcontext()
    if address is None:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=max(1, (os.cpu_count() or 1) // workers),
                               processes=True, host="127.0.0.1", dashboard_address=None)

    with cluster as local, Client(address or local) as client:
        workers_now = len(client.scheduler_info(n_workers=-1)["workers"])
        log.info("encoding on %s: %d Dask workers", client.scheduler.address, workers_now)

        def on_cluster(array: da.Array) -> np.ndarray:
            """The array's row blocks computed on the cluster, followed as each one comes."""
            blocks = client.compute(list(array.to_delayed().ravel()))
            with progress(len(blocks), "encode", "block") as bar:
                for _ in as_completed(blocks):
                    bar.update(1)
            return np.concatenate(client.gather(blocks)) if blocks else np.empty(array.shape, array.dtype)
        yield on_cluster, max(1, sum(client.nthreads().values()))


def latent_vectors(flux: np.ndarray, mask: np.ndarray, model_dir: str | Path) -> np.ndarray:
    """Latent vectors of spectra on the store's grid (as :meth:`Preprocessing.apply` leaves
    them), sampled and encoded exactly as the archive's own were, in batches of the training
    batch size; the encoder alone runs (no reconstruction error is wanted here)."""
    encoder, _, card = load_model(str(model_dir))
    model_flux, model_mask = _model_input(flux, mask, card)
    batch = int(card["config"]["training"]["batch_size"])
    parts = [_latent(encoder, model_flux[i:i + batch], (~model_mask[i:i + batch]).astype(np.float32))
             for i in range(0, len(model_flux), batch)]
    return np.concatenate(parts) if parts else np.empty((0, int(card["latent_dim"])), np.float32)


def encode_rows(flux: np.ndarray, mask: np.ndarray, model_dir: str | Path
                ) -> tuple[np.ndarray, np.ndarray]:
    """Latent vectors and reconstruction errors of spectra on the store's grid (as
    :meth:`Preprocessing.apply` leaves them), sampled and computed by :func:`encode`, as the
    archive's own were: an error here compares with the table's ``ml_recon_error``."""
    _, _, card = load_model(str(model_dir))
    encoded = encode(*_model_input(flux, mask, card), model_dir)
    return encoded[:, :-1], encoded[:, -1].astype(np.float64)


def reconstruct(flux: np.ndarray, mask: np.ndarray, model_dir: str | Path
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Store rows as the model sees them (flux, mask) and the model's reconstruction of them."""
    encoder, decoder, card = load_model(str(model_dir))
    model_flux, model_mask = _model_input(flux, mask, card)
    latent = _latent(encoder, model_flux, (~model_mask).astype(np.float32))
    return model_flux, model_mask, decoder(latent, training=False).numpy()


def model_sampled(flux: np.ndarray, mask: np.ndarray, model_dir: str | Path
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Store rows (flux, mask) at the sampling the model reads them at."""
    return _model_input(flux, mask, load_card(Path(model_dir)))


def _model_input(flux: np.ndarray, mask: np.ndarray, card: dict) -> tuple[np.ndarray, np.ndarray]:
    """Store rows at the model's sampling."""
    return downsample(flux, mask, downsampling(card["config"]))


def _latent(encoder: object, flux: np.ndarray, good: np.ndarray) -> np.ndarray:
    """The encoder's latent vectors of rows at the model's sampling (``good``: 1 where the
    pixel counts)."""
    return encoder([flux, good], training=False).numpy()
