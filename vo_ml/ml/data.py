"""Stream spectra from the store into models, a window of chunks at a time.

Training never holds the whole store: it reads a window of store chunks (whole spectra, in the
order the store holds them, so each read is one file per chunk), shuffles the rows of the window,
and cuts it into batches. The order of the windows and the rows in them comes from a generator
seeded by (seed, epoch), so an epoch is the same whether training ran through or resumed after a
kill. The last partial batch of a window carries over into the next one. A selection whose model
view fits in one window (all of MILES: 4 MB) is read once and kept.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from vo_ml.ml.framework import keras, tf
from vo_ml.spectra.store import SpectrumStore

__all__ = ["StoreBatches", "WINDOW_BYTES", "partial_coverage"]

#: Flux held at once for shuffling: a few hundred full-resolution HARPS spectra.
WINDOW_BYTES = 256 << 20


#: The share of its range a partially shown spectrum keeps: between these.
KEPT_SHARE = (0.3, 0.8)


def partial_coverage(good: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """``good`` with, for a ``share`` of the rows, all but one stretch of the range masked: its
    blue part, its red part or both ends, keeping 30-80% of the pixels. Spectra from other
    instruments cover part of the archive's range; a model trained to reconstruct the whole
    from a part puts a partial spectrum where its whole counterpart sits."""
    rows, pixels = good.shape
    chosen = np.flatnonzero(rng.random(rows) < share)
    kept = (rng.uniform(*KEPT_SHARE, chosen.size) * pixels).astype(int)
    anywhere = (rng.random(chosen.size) * (pixels - kept)).astype(int)
    starts = np.choose(rng.integers(0, 3, chosen.size), [np.zeros_like(kept), pixels - kept, anywhere])
    positions = np.arange(pixels)
    window = (positions >= starts[:, None]) & (positions < (starts + kept)[:, None])
    seen = good.copy()
    seen[chosen] *= window
    return seen


class StoreBatches:
    """Batches of ``rows`` of a store at the model's sampling, with 0/1 good-pixel weights."""

    def __init__(self, store: SpectrumStore, rows: np.ndarray, batch_size: int,
                 seed: int | None = None, partial_share: float = 0.0) -> None:
        self.store = store
        self.partial_share = partial_share
        self.rows = np.sort(np.asarray(rows, dtype=np.int64))
        self.batch_size = batch_size
        self.seed = seed
        self.pixels = store.grid.pixels
        chunk_rows = store.flux.chunks[0]
        self._chunks = np.unique(self.rows // chunk_rows)
        self._chunk_rows = chunk_rows
        self._window = max(1, WINDOW_BYTES // (chunk_rows * store.grid.pixels * 4))
        self._resident: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.epoch = 0

    def __len__(self) -> int:
        return -(-self.rows.size // self.batch_size)

    def batches(self, epoch: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(store row indices, flux, good) per batch; shuffled when a seed was given."""
        rng = np.random.default_rng([self.seed, epoch]) if self.seed is not None else None
        chunks = rng.permutation(self._chunks) if rng is not None else self._chunks
        carried: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for window in self._windows(chunks):
            if rng is not None:
                order = rng.permutation(window[0].size)
                window = tuple(part[order] for part in window)
            carried.append(window)
            rows, flux, good = (np.concatenate(parts) for parts in zip(*carried, strict=True))
            whole = rows.size - rows.size % self.batch_size
            for begin in range(0, whole, self.batch_size):
                end = begin + self.batch_size
                yield rows[begin:end], flux[begin:end], good[begin:end]
            carried = [(rows[whole:], flux[whole:], good[whole:])]
        rows, flux, good = carried[0] if carried else (np.empty(0),) * 3
        if rows.size:
            yield rows, flux, good

    def _windows(self, chunks: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """The rows of ``chunks``, a window at a time in that order; when every row fits in one
        window, that window is read once and kept from epoch to epoch."""
        if self.rows.size * self.pixels * 4 > WINDOW_BYTES:
            for start in range(0, chunks.size, self._window):
                yield self._read(np.sort(chunks[start:start + self._window]))
            return
        if self._resident is None:
            self._resident = self._read(self._chunks)
        yield self._resident

    def _read(self, chunks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The selected rows of ``chunks``, read a chunk at a time, so reading a sparse selection
        never holds more than one chunk besides the rows kept."""
        parts = []
        for chunk in chunks:
            start = chunk * self._chunk_rows
            wanted = self.rows[(self.rows >= start) & (self.rows < start + self._chunk_rows)]
            flux, mask = self.store.read(int(wanted[0]), int(wanted[-1]) + 1)
            local = wanted - wanted[0]
            flux, mask = flux[local], mask[local]
            parts.append((wanted, flux, (~mask).astype(np.float32)))
        return tuple(np.concatenate(p) for p in zip(*parts, strict=True))

    def dataset(self) -> tf.data.Dataset:
        """A tf.data pipeline of ((flux, good), target) for Keras, one epoch a pass. With a
        ``partial_share``, that share of the spectra is shown to the model with part of its range
        masked (:func:`partial_coverage`) and scored against the whole of it.

        The pass draws the batches of ``self.epoch``, which :meth:`follow_epochs` keeps equal to
        Keras's epoch; it is not counted from the passes, as Keras may start one of its own.
        """
        def generate() -> Iterator:
            rng = np.random.default_rng([self.seed or 0, self.epoch, 1])
            for _, flux, good in self.batches(self.epoch):
                seen = partial_coverage(good, self.partial_share, rng) if self.partial_share else good
                yield (flux, seen), np.stack([flux, good], axis=-1)

        spectra = tf.TensorSpec((None, self.pixels), tf.float32)
        target = tf.TensorSpec((None, self.pixels, 2), tf.float32)
        dataset = tf.data.Dataset.from_generator(generate, output_signature=((spectra, spectra), target))
        return dataset.apply(tf.data.experimental.assert_cardinality(len(self))).prefetch(2)

    def follow_epochs(self) -> keras.callbacks.Callback:
        """A callback that sets ``self.epoch`` as each Keras epoch begins, before its first batch."""
        batches = self

        class FollowEpochs(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
                batches.epoch = epoch

        return FollowEpochs()
