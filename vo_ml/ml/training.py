"""Train an autoencoder on the spectrum store and save it with its model card.

A model's id names its config and training data (:mod:`vo_ml.ml.cards`), so a second run of the
same config on the same data reuses the saved model instead of training again. Validation
spectra are chosen by star, never by spectrum: several spectra of one star on both sides would
flatter the validation loss.

Spectra stream from the store (:mod:`vo_ml.ml.data`). The new model is anchored on the training
spectra's PCA (:mod:`vo_ml.ml.models`) and counts as epoch 0: when no epoch does better on the
validation stars, PCA is what is saved. Training works in ``<id>.partial/``: after an epoch,
every ``checkpoint_seconds`` and at the end, the whole autoencoder with its optimizer state, the
best weights so far and the early-stopping state are written there, each file complete before
the state that names it. A run killed at any point and started again continues from the last
written epoch and ends with the same model as a run that was never interrupted, as batches are
drawn by (seed, epoch) and TensorFlow runs deterministic kernels. Only a finished model is
renamed to ``<id>/``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vo_ml.files import replacing, sync
from vo_ml.ml.cards import is_trained, model_id_for, write_card
from vo_ml.ml.data import StoreBatches
from vo_ml.ml.framework import keras, tf
from vo_ml.ml.models import FAMILIES, Anchor, MaskedHuber, downsampling
from vo_ml.ml.projection import IDENTITY, save_projection
from vo_ml.ml.report import plot_training_curve
from vo_ml.progress import progress
from vo_ml.spectra.store import SpectrumStore

__all__ = ["train", "split_by_star", "fit_projection", "val_loss_peak", "EarlyStopping", "DIVERGENCE"]

log = logging.getLogger(__name__)

METRICS_NAME = "metrics.json"
CURVE_NAME = "training_curve.png"
STATE_NAME = "state.json"


def split_by_star(targets: Sequence[str | None], fraction: float, salt: str = "") -> np.ndarray:
    """True for the rows of a ``fraction`` of the stars, picked by a stable hash of the target
    name (with ``salt``, so that several splits of one archive are independent)."""
    def bucket(target: str | None, row: int) -> float:
        key = salt + (target if target else f"row-{row}")
        return int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF
    return np.array([bucket(t, i) < fraction for i, t in enumerate(targets)], dtype=bool)


def train(
    store: SpectrumStore,
    config: dict,
    targets: Sequence[str | None],
    data_checksum: str,
    models_dir: Path,
    rows: np.ndarray | None = None,
) -> Path:
    """Train ``config`` on the spectra of ``store`` (all, or the ``rows`` given); return the
    saved model's folder.

    ``targets`` gives the star of every store row, for the validation split. ``data_checksum``
    names the data, and so the model id: with ``rows``, it must name the selection too. An
    existing model with the same id is returned as it is; an unfinished one is resumed.
    """
    model_id = model_id_for(config, data_checksum)
    final = Path(models_dir) / model_id
    if is_trained(final):
        shutil.rmtree(final / "checkpoints", ignore_errors=True)
        return final
    Path(models_dir).mkdir(parents=True, exist_ok=True)
    lock = final.with_name(final.name + ".lock")
    with _exclusive(lock):
        trained = _train(store, config, targets, data_checksum, final, rows)
    lock.unlink(missing_ok=True)
    return trained


@contextlib.contextmanager
def _exclusive(lock: Path) -> Iterator[None]:
    """Hold ``lock`` for the whole training: two runs of one model would mix their checkpoints."""
    with open(lock, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"model {lock.stem} is being trained by another process "
                               f"(it holds {lock}); wait for it to finish") from None
        yield


def _train(store: SpectrumStore, config: dict, targets: Sequence[str | None], data_checksum: str,
           final: Path, rows: np.ndarray | None) -> Path:
    if is_trained(final):
        return final
    model_id = final.name
    work = final.with_name(final.name + ".partial")
    training = config["training"]
    seed = int(training["seed"])
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()

    pool = np.arange(len(store)) if rows is None else np.asarray(rows)
    validation = split_by_star([targets[i] for i in pool], float(training["validation_fraction"]))
    batch_size = int(training["batch_size"])
    if not (~validation).any():
        raise ValueError(f"no spectra to train on: {pool.size} rows given, all of them in the "
                         "validation share; ingest more stars or lower training.validation_fraction")
    sampled = store.coarsened(downsampling(config))
    train_batches = StoreBatches(sampled, pool[~validation], batch_size, seed,
                                 float(training.get("partial_share", 0.0)))
    check_batches = StoreBatches(sampled, pool[validation], batch_size)
    checkpoint = _Checkpoint(work, float(training.get("checkpoint_seconds", 30)))
    autoencoder = checkpoint.model()
    if autoencoder is None:
        anchor_batches = StoreBatches(sampled, pool, batch_size, seed)
        autoencoder = _new_model(config, train_batches, anchor_batches, training)
        checkpoint.start_from(autoencoder, check_batches)
    epochs, patience = int(training["epochs"]), int(training["patience"])
    stopping = EarlyStopping(patience, int(training.get("warmup_epochs", 5)),
                             float(training.get("divergence", DIVERGENCE)))
    if not checkpoint.finished:
        autoencoder.fit(
            train_batches.dataset(),
            validation_data=check_batches.dataset() if check_batches.rows.size else None,
            epochs=epochs, initial_epoch=checkpoint.epoch, verbose=0, shuffle=False,
            callbacks=[train_batches.follow_epochs(), checkpoint.callback(stopping),
                       _EpochBar(epochs, checkpoint.epoch, model_id)])
    if checkpoint.best_weights is None:
        raise ValueError(f"model {model_id} finished no epoch: set training.epochs to 1 or more")
    log.info("training %s %s", model_id, checkpoint.outcome(epochs))
    autoencoder.set_weights(checkpoint.best_weights)
    encoder, decoder = autoencoder.get_layer("encoder"), autoencoder.get_layer("decoder")
    card = {
        "model_id": model_id,
        "config": config,
        "latent_dim": int(config["latent_dim"]),
        "grid": store.grid.as_dict(),
        "data_checksum": data_checksum,
        "spectra": {"train": int((~validation).sum()), "validation": int(validation.sum())},
        "metrics": {**checkpoint.metrics(),
                    "val_loss_peak": val_loss_peak(checkpoint.history["val_loss"], stopping.warmup,
                                                   checkpoint.initial)},
        "vo_ml_version": _version(),
    }
    card["projection"] = fit_projection(encoder, train_batches, work)
    return _finish(work, final, encoder, decoder, card, checkpoint.history)


#: Training rows the anchor's principal components are fitted on, at most: enough for a few
#: hundred components, and a bounded SVD at any archive size.
ANCHOR_ROWS = 4096
#: Components the anchor keeps, at least, however small the latent vector: the masked projection
#: solves on them all (a partial spectrum's estimate uses how they covary) and the latent vector
#: keeps the leading ones. The cost grows as their square; on MILES (three passes, latent 16) the
#: red half of the range landed 1.34 archive nearest-neighbour distances from its whole with 64,
#: 1.28 with 96 and 1.24 with 128, but with 96 the demo's training took 185 s, over its three
#: minutes.
SOLVED_COMPONENTS = 64
#: Components the anchor keeps, at most, whatever the latent size: beyond them the latent
#: correction alone carries the extra dimensions.
ANCHOR_COMPONENTS = 256


#: Training stops once the validation loss, after warm-up, is this many times its lowest so far
#: (the untrained model's included): the model is overfitting, and the best weights are kept.
#: At latent 128 on MILES, where PCA is nearly lossless, it rose steadily from the first epoch
#: (1.7 times by epoch 56), and training on would only spend time.
DIVERGENCE = 1.25


@dataclass(frozen=True)
class EarlyStopping:
    """When training stops: ``patience`` epochs without a new lowest validation loss, or, after
    ``warmup`` epochs, a validation loss above ``divergence`` times the lowest so far."""

    patience: int
    warmup: int
    divergence: float = DIVERGENCE

    def reason(self, epoch: int, loss: float, best: float, wait: int) -> str | None:
        """Why training stops after ``epoch`` (None: it goes on)."""
        if wait >= self.patience:
            return f"the validation loss had not improved for {self.patience} epochs"
        if epoch > self.warmup and loss > self.divergence * best:
            return (f"the validation loss rose to {loss / best:.2f} times its lowest (limit "
                    f"{self.divergence:g}): the model was overfitting")
        return None


def val_loss_peak(val_loss: Sequence[float], warmup_epochs: int, initial: float | None = None
                  ) -> float | None:
    """How far the validation loss ever rose after warm-up: the largest ratio of an epoch's
    loss to the lowest one so far, from ``initial`` (the untrained model's) on (1.0: it never
    rose); None without epochs after warm-up."""
    start = [] if initial is None else [initial]
    losses = np.asarray(start + list(val_loss), dtype=np.float64)
    ratios = (losses / np.minimum.accumulate(losses))[len(start) + warmup_epochs:]
    return float(np.max(ratios)) if ratios.size else None


def _new_model(config: dict, batches: StoreBatches, anchor_batches: StoreBatches,
               training: dict) -> keras.Model:
    """The model of ``config`` anchored on the PCA of ``anchor_batches``, compiled with AdamW
    for the training ``batches``: a linear warm-up to the learning rate, cosine decay to zero
    over the epochs, clipped gradients and a masked Huber loss.

    The anchor is the PCA of every spectrum the model is given, validation stars included, as a
    PCA of the same spectra would be: fitted on the training share alone, it started 1% worse
    than that PCA. The validation loss of epoch 0 is then a little optimistic, so a trained
    epoch must beat PCA clearly to be kept."""
    latent_dim = int(config["latent_dim"])
    anchor = _anchor(anchor_batches, min(max(latent_dim, SOLVED_COMPONENTS), ANCHOR_COMPONENTS))
    _, _, autoencoder = FAMILIES[config["family"]](config, anchor)
    steps, epochs = len(batches), int(training["epochs"])
    warmup = steps * min(int(training.get("warmup_epochs", 5)), epochs)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, max(steps * epochs - warmup, 1), warmup_target=float(training["learning_rate"]),
        warmup_steps=warmup)
    optimizer = keras.optimizers.AdamW(schedule, weight_decay=float(training.get("weight_decay", 1e-4)),
                                       clipnorm=float(training.get("clip_norm", 1.0)))
    autoencoder.compile(optimizer=optimizer, loss=MaskedHuber(float(training.get("huber_delta", 0.05))))
    return autoencoder


def _anchor(batches: StoreBatches, components: int) -> Anchor:
    """The mean spectrum over good pixels and one global scale (so no pixel is over-weighted)
    from one streaming pass (sums and sums of squares in float64), and the principal
    components of up to ANCHOR_ROWS training rows (the first of a shuffled pass)."""
    total = np.zeros(batches.pixels)
    squares = np.zeros(batches.pixels)
    counts = np.zeros(batches.pixels)
    sample: list[tuple[np.ndarray, np.ndarray]] = []
    kept = 0
    for _, flux, good in batches.batches():
        total += (flux * good).sum(axis=0, dtype=np.float64)
        squares += (np.square(flux, dtype=np.float64) * good).sum(axis=0)
        counts += good.sum(axis=0, dtype=np.float64)
        if kept < ANCHOR_ROWS:
            sample.append((flux, good))
            kept += len(flux)
    mean = total / np.maximum(counts, 1)
    residual = squares.sum() - (mean * total).sum()
    scale = float(np.sqrt(max(residual, 0.0) / max(counts.sum(), 1))) or 1.0
    flux, good = (np.concatenate(part)[:ANCHOR_ROWS] for part in zip(*sample, strict=True))
    return Anchor.fit(flux, good, mean, scale, components)


def fit_projection(encoder: keras.Model, batches: StoreBatches, model_dir: Path) -> dict:
    """The card's entry for the 2-D map (:mod:`vo_ml.ml.projection`): a 2-D latent is its own
    map, a wider one is encoded from the training spectra and its map saved in ``model_dir``."""
    if int(encoder.output.shape[-1]) == 2:
        return IDENTITY
    latent = np.concatenate([encoder([flux, good], training=False).numpy()
                             for _, flux, good in batches.batches()])
    return save_projection(latent, model_dir)


def _finish(work: Path, final: Path, encoder: keras.Model, decoder: keras.Model, card: dict,
            history: dict) -> Path:
    """Save the model, its card, metrics and training curve, then rename the folder into place,
    so a kill never leaves half a model under the final name (nor a power cut: the files are on
    disk before the rename, and the rename is before the function returns)."""
    encoder.save(work / "encoder.keras")
    decoder.save(work / "decoder.keras")
    (work / METRICS_NAME).write_text(json.dumps({**card["metrics"], "history": history}, indent=2),
                                     encoding="utf-8")
    plot_training_curve(history, card["model_id"], work / CURVE_NAME)
    write_card(work, card)
    for saved in work.iterdir():
        if saved.is_file():
            sync(saved)
    work.rename(final)
    sync(final.parent)
    shutil.rmtree(final / "checkpoints")
    return final


def _version() -> str:
    from vo_ml import __version__
    return __version__


class _Checkpoint:
    """Training state in ``<work>/checkpoints``: the model and optimizer of the last written epoch,
    the best weights so far, and ``state.json`` (epoch, losses, early-stopping counters, and the
    names of those two files). Files carry their epoch in their names and are written before the
    state that names them, which is replaced in one rename; older ones go after. A kill at any
    point leaves a state whose files are all there and all of its epoch.

    State is kept in memory every epoch and written every ``interval`` seconds and at the end:
    saving a model is slower than an epoch of the dense family. A resumed run repeats the epochs
    since the last write, and as they are deterministic it gets the same weights again.
    """

    def __init__(self, work: Path, interval: float) -> None:
        self.folder = work / "checkpoints"
        self.interval = interval
        state_path = self.folder / STATE_NAME
        if not state_path.is_file():
            shutil.rmtree(work, ignore_errors=True)
            self.folder.mkdir(parents=True)
        state = json.loads(state_path.read_text()) if state_path.is_file() else {}
        self.epoch = int(state.get("epoch", 0))
        self.best = float(state.get("best", np.inf))
        self.best_epoch = int(state.get("best_epoch", 0))
        self.wait = int(state.get("wait", 0))
        self.finished = bool(state.get("finished", False))
        self.stopped_because: str | None = state.get("stopped_because")
        self.initial: float | None = state.get("initial")
        self.history: dict[str, list[float]] = state.get("history", {"loss": [], "val_loss": []})
        self.seconds = float(state.get("seconds", 0.0))
        self._files = state.get("files", {})
        self.best_weights: list[np.ndarray] | None = None
        if "best" in self._files:
            with np.load(self.folder / self._files["best"]) as saved:
                self.best_weights = [saved[f"arr_{i}"] for i in range(len(saved.files))]
        self._written = time.monotonic()

    def model(self) -> keras.Model | None:
        """The autoencoder and optimizer as the last written epoch left them, if any."""
        if "model" not in self._files:
            return None
        return keras.models.load_model(self.folder / self._files["model"])

    def start_from(self, model: keras.Model, validation: StoreBatches) -> None:
        """Count the new model itself (PCA, as it is anchored) as epoch 0: when no epoch of
        training does better on the validation stars, the model stays PCA."""
        if validation.rows.size:
            self.best = self.initial = float(model.evaluate(validation.dataset(), verbose=0))
            self.best_weights = model.get_weights()

    def callback(self, stopping: EarlyStopping) -> keras.callbacks.Callback:
        return _CheckpointCallback(self, stopping)

    def record(self, model: keras.Model, logs: dict, stopping: EarlyStopping, seconds: float) -> None:
        """One more epoch: losses, best weights, early stopping; written when it is time."""
        self.history["loss"].append(float(logs["loss"]))
        monitored = float(logs.get("val_loss", logs["loss"]))
        if "val_loss" in logs:
            self.history["val_loss"].append(monitored)
        if not np.isfinite(monitored):
            raise ValueError(f"training diverged at epoch {self.epoch + 1} (loss {monitored}): "
                             "lower training.learning_rate in the model config")
        self.epoch, self.seconds = self.epoch + 1, self.seconds + seconds
        if monitored < self.best:
            self.best, self.best_epoch, self.wait = monitored, self.epoch, 0
            self.best_weights = model.get_weights()
        else:
            self.wait += 1
        self.stopped_because = stopping.reason(self.epoch, monitored, self.best, self.wait)
        self.finished = self.stopped_because is not None
        model.stop_training = self.finished
        if self.finished or time.monotonic() - self._written >= self.interval:
            self.write(model)

    def write(self, model: keras.Model) -> None:
        if self.best_weights is None or self._files.get("model") == f"last-{self.epoch}.keras":
            return
        files = {"model": f"last-{self.epoch}.keras", "best": f"best-{self.best_epoch}.npz"}
        if not (self.folder / files["best"]).is_file():
            with replacing(self.folder / files["best"]) as new:
                np.savez(new.path, *self.best_weights)
        with replacing(self.folder / files["model"]) as new:
            model.save(new.path)
        state = {"epoch": self.epoch, "best": self.best, "best_epoch": self.best_epoch,
                 "wait": self.wait, "finished": self.finished, "stopped_because": self.stopped_because,
                 "initial": self.initial, "history": self.history,
                 "seconds": self.seconds, "files": files}
        with replacing(self.folder / STATE_NAME) as new:
            new.path.write_text(json.dumps(state), encoding="utf-8")
        for stale in set(self.folder.iterdir()) - {self.folder / STATE_NAME,
                                                   *(self.folder / f for f in files.values())}:
            stale.unlink()
        self._files = files
        self._written = time.monotonic()

    def outcome(self, epochs: int) -> str:
        """Why training stopped, and with which weights: early stopping, or the last epoch."""
        monitored = "validation loss" if self.history["val_loss"] else "training loss"
        best = f"best epoch {self.best_epoch}, {monitored} {self.best:.3e}"
        if self.finished and self.epoch < epochs:
            return f"stopped early at epoch {self.epoch} of {epochs}: {self.stopped_because}; {best}"
        return f"ran all {self.epoch} epochs; {best}"

    def metrics(self) -> dict:
        return {"epochs": self.epoch, "best_epoch": self.best_epoch, "best_val_loss": self.best,
                "train_loss": self.history["loss"][-1] if self.history["loss"] else None,
                "seconds": round(self.seconds, 1)}


class _CheckpointCallback(keras.callbacks.Callback):
    def __init__(self, checkpoint: _Checkpoint, stopping: EarlyStopping) -> None:
        super().__init__()
        self.checkpoint = checkpoint
        self.stopping = stopping
        self.started = time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.checkpoint.record(self.model, logs or {}, self.stopping, time.perf_counter() - self.started)

    def on_train_end(self, logs: dict | None = None) -> None:
        self.checkpoint.write(self.model)


class _EpochBar(keras.callbacks.Callback):
    """The epochs' progress (:mod:`vo_ml.progress`) with the losses; it closes early when
    training stops early, and :meth:`_Checkpoint.outcome` then says why."""

    def __init__(self, epochs: int, done: int, label: str) -> None:
        super().__init__()
        self.bar = progress(epochs, f"train {label}", "epoch", initial=done)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        self.bar.set_postfix(loss=f"{logs.get('loss', 0):.2e}",
                             val=f"{logs.get('val_loss', 0):.2e}")
        self.bar.update(1)

    def on_train_end(self, logs: dict | None = None) -> None:
        self.bar.close()
