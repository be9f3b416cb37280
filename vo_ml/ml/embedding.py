"""Batch encoding of the spectrum store with Dask.

The store's flux and mask become Dask arrays chunked by rows; every chunk is encoded by
``map_blocks`` into one row per spectrum holding the latent vector and the reconstruction error.
``dtype``, ``chunks`` and ``meta`` are always given to ``map_blocks``, so Dask never calls the
Keras model on placeholder input to guess them. Each worker loads the model once and keeps it for
every chunk it encodes (see :func:`_load_model`). The same code runs on the local threaded
scheduler or on a ``dask.distributed`` cluster: pass ``scheduler="tcp://host:port"``.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dask
import dask.array as da
import numpy as np
from dask.diagnostics import ProgressBar

from vo_ml.ml.training import load_card
from vo_ml.spectra.grid import downsample
from vo_ml.spectra.store import SpectrumStore

__all__ = ["Embeddings", "embed_store", "encode"]


@dataclass
class Embeddings:
    """Latent vectors and reconstruction errors, row for row with ``dids``."""

    model_id: str
    dids: np.ndarray
    latent: np.ndarray
    recon_error: np.ndarray
    card: dict

    @property
    def map_xy(self) -> np.ndarray:
        """The 2-D map position: the latent itself for a 2-D model."""
        if self.latent.shape[1] != 2:
            raise NotImplementedError(
                f"model {self.model_id} has {self.latent.shape[1]} latent dimensions; the 2-D map "
                "needs a projection, which only 2-D models provide so far"
            )
        return self.latent


@functools.lru_cache(maxsize=4)
def _load_model(model_dir: str) -> tuple:
    """Encoder, decoder and card of a saved model, loaded once per process."""
    import keras

    from vo_ml.ml.models import masked_mse  # noqa: F401  (registers the loss for deserialising)

    encoder = keras.models.load_model(Path(model_dir) / "encoder.keras", compile=False)
    decoder = keras.models.load_model(Path(model_dir) / "decoder.keras", compile=False)
    return encoder, decoder, load_card(Path(model_dir))


def encode(flux: np.ndarray, mask: np.ndarray, model_dir: str | Path) -> np.ndarray:
    """Latent vectors and RMS reconstruction error of store rows: shape (rows, latent_dim + 1).

    The error is measured over good pixels only, in units of the median-normalised flux.
    """
    encoder, decoder, card = _load_model(str(model_dir))
    model_flux, model_mask = downsample(flux, mask, int(card["config"]["input"]["downsample"]))
    good = (~model_mask).astype(np.float32)
    latent = encoder([model_flux, good], training=False).numpy()
    reconstructed = decoder(latent, training=False).numpy()
    squared = np.square(reconstructed - model_flux) * good
    rms = np.sqrt(squared.sum(axis=1) / np.maximum(good.sum(axis=1), 1.0))
    return np.concatenate([latent, rms[:, None]], axis=1).astype(np.float32)


def embed_store(
    store: SpectrumStore,
    model_dir: str | Path,
    rows_per_chunk: int = 512,
    scheduler: str | None = None,
) -> Embeddings:
    """Encode every spectrum of ``store`` with the model in ``model_dir``."""
    card = load_card(Path(model_dir))
    latent_dim = int(card["latent_dim"])
    rows = len(store)
    flux = da.from_zarr(store.flux)[:rows].rechunk((rows_per_chunk, -1))
    mask = da.from_zarr(store.mask)[:rows].rechunk((rows_per_chunk, -1))
    encoded = da.map_blocks(
        encode, flux, mask, model_dir=str(Path(model_dir).resolve()),
        dtype=np.float32,
        chunks=(flux.chunks[0], (latent_dim + 1,)),
        meta=np.empty((0, latent_dim + 1), dtype=np.float32),
    )
    with _scheduler(scheduler) as progress:
        with progress:
            values = encoded.compute()
    return Embeddings(card["model_id"], store.dids[:rows], values[:, :latent_dim],
                      values[:, latent_dim].astype(np.float64), card)


@contextlib.contextmanager
def _scheduler(address: str | None) -> Iterator[contextlib.AbstractContextManager]:
    """The local threaded scheduler with a progress bar, or a distributed client at ``address``."""
    if address is None:
        with dask.config.set(scheduler="threads"):
            yield ProgressBar(dt=0.5)
        return
    from dask.distributed import Client

    with Client(address) as client, dask.config.set(scheduler=client.get):
        yield contextlib.nullcontext()
