"""Train an autoencoder on the spectrum store and save it with its model card.

The model id is derived from the config and the checksum of the training data, so training the
same config on the same data twice gives the same id, and a second run reuses the saved model
instead of training again. Training is deterministic under the config's seed. Validation spectra
are chosen by star, never by spectrum: several spectra of one star on both sides would flatter the
validation loss.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from vo_ml.ml.models import FAMILIES, masked_mse
from vo_ml.spectra.grid import downsample
from vo_ml.spectra.store import SpectrumStore

__all__ = ["train", "model_id_for", "load_card", "split_by_star", "CARD_NAME"]

CARD_NAME = "model_card.json"


def model_id_for(config: dict, data_checksum: str) -> str:
    """``<config name>-<10 hex digits>``: the same config on the same data gives the same id."""
    digest = hashlib.sha256(
        (json.dumps(config, sort_keys=True) + data_checksum).encode("utf-8")).hexdigest()
    return f"{config['name']}-{digest[:10]}"


def load_card(model_dir: Path) -> dict:
    card_path = Path(model_dir) / CARD_NAME
    if not card_path.is_file():
        raise FileNotFoundError(
            f"{model_dir} is not a trained model (no {CARD_NAME}): train one with 'vo-ml train'"
        )
    return json.loads(card_path.read_text(encoding="utf-8"))


def split_by_star(targets: Sequence[str | None], fraction: float) -> np.ndarray:
    """True for validation rows: a stable hash of the target name picks whole stars."""
    def bucket(target: str | None, row: int) -> float:
        key = target if target else f"row-{row}"
        return int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF
    return np.array([bucket(t, i) < fraction for i, t in enumerate(targets)])


def train(
    store: SpectrumStore,
    config: dict,
    targets: Sequence[str | None],
    data_checksum: str,
    models_dir: Path,
) -> Path:
    """Train ``config`` on every spectrum of ``store``; return the saved model's folder.

    ``targets`` gives the star of each store row, for the validation split. An existing model
    with the same id is returned as it is.
    """
    model_id = model_id_for(config, data_checksum)
    final = Path(models_dir) / model_id
    if (final / CARD_NAME).is_file():
        return final
    training = config["training"]
    keras.utils.set_random_seed(int(training["seed"]))
    tf.config.experimental.enable_op_determinism()

    flux, mask = downsample(*store.read(0, len(store)), int(config["input"]["downsample"]))
    good = (~mask).astype(np.float32)
    validation = split_by_star(targets, float(training["validation_fraction"]))
    mean, scale = _standardisation(flux[~validation], mask[~validation])
    encoder, decoder, autoencoder = FAMILIES[config["family"]](config, flux.shape[1], mean, scale)
    autoencoder.compile(optimizer=keras.optimizers.Adam(float(training["learning_rate"])),
                        loss=masked_mse)

    target = np.stack([flux, good], axis=-1)
    started = time.perf_counter()
    history = autoencoder.fit(
        [flux[~validation], good[~validation]], target[~validation],
        validation_data=([flux[validation], good[validation]], target[validation]),
        epochs=int(training["epochs"]), batch_size=int(training["batch_size"]), shuffle=True,
        verbose=0,
        callbacks=[
            keras.callbacks.EarlyStopping(patience=int(training["patience"]),
                                          restore_best_weights=True),
            _EpochBar(int(training["epochs"]), model_id),
        ],
    )
    card = {
        "model_id": model_id,
        "config": config,
        "latent_dim": int(config["latent_dim"]),
        "grid": store.grid.as_dict(),
        "data_checksum": data_checksum,
        "spectra": {"train": int((~validation).sum()), "validation": int(validation.sum())},
        "metrics": {
            "epochs": len(history.history["loss"]),
            "best_val_loss": float(min(history.history["val_loss"])),
            "train_loss": float(history.history["loss"][-1]),
            "seconds": round(time.perf_counter() - started, 1),
        },
        "vo_ml_version": _version(),
    }
    return _save(final, encoder, decoder, card)


def _standardisation(flux: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, float]:
    """The mean spectrum over good pixels, and one global scale so no pixel is over-weighted."""
    good = ~mask
    counts = np.maximum(good.sum(axis=0), 1)
    mean = (np.where(good, flux, 0.0).sum(axis=0) / counts).astype(np.float32)
    residual = np.where(good, flux - mean, 0.0)
    scale = float(np.sqrt((residual**2).sum() / max(good.sum(), 1))) or 1.0
    return mean, scale


def _save(final: Path, encoder: keras.Model, decoder: keras.Model, card: dict) -> Path:
    """Write into a scratch folder renamed into place, so a kill never leaves half a model."""
    scratch = final.with_name(final.name + ".partial")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    encoder.save(scratch / "encoder.keras")
    decoder.save(scratch / "decoder.keras")
    (scratch / CARD_NAME).write_text(json.dumps(card, indent=2), encoding="utf-8")
    scratch.rename(final)
    return final


def _version() -> str:
    from vo_ml import __version__
    return __version__


class _EpochBar(keras.callbacks.Callback):
    """A tqdm bar over epochs, showing the losses; it closes early when training stops early."""

    def __init__(self, epochs: int, label: str) -> None:
        super().__init__()
        self.bar = tqdm(total=epochs, desc=f"train {label}", unit="epoch", mininterval=0.5)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        self.bar.set_postfix(loss=f"{logs.get('loss', 0):.2e}",
                             val=f"{logs.get('val_loss', 0):.2e}")
        self.bar.update(1)

    def on_train_end(self, logs: dict | None = None) -> None:
        self.bar.close()
