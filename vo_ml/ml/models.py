"""Encoder and decoder builders, from the YAML configs in ``configs/``.

Both halves are separate Keras models joined into one autoencoder for training, so that batch
embedding loads only what it needs. The encoder takes the flux and a 0/1 good-pixel weight; it
standardises the flux inside the model (fixed mean spectrum and scale, measured on the training
set) and zeroes masked pixels, which puts them at the mean spectrum. A saved model therefore
carries everything needed to encode a spectrum straight from the store.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

__all__ = ["build_dense", "masked_mse", "FAMILIES"]


@keras.saving.register_keras_serializable(package="vo_ml")
def masked_mse(target: object, predicted: object) -> object:
    """Mean squared error over good pixels only: masked pixels must not shape the model.

    ``target`` stacks the flux and a 0/1 weight on the last axis, shape (batch, pixels, 2).
    """
    flux, weight = target[..., 0], target[..., 1]
    squared = ops.square(predicted - flux) * weight
    return ops.sum(squared, axis=-1) / ops.maximum(ops.sum(weight, axis=-1), 1.0)


def build_dense(
    config: dict, pixels: int, mean: np.ndarray, scale: float
) -> tuple[keras.Model, keras.Model, keras.Model]:
    """The dense family: encoder, decoder and the autoencoder that chains them."""
    hidden = list(config["encoder"]["hidden"])
    slope = float(config["encoder"].get("negative_slope", 0.1))
    latent_dim = int(config["latent_dim"])
    variance = np.full(pixels, scale**2, dtype=np.float32)

    flux = keras.Input((pixels,), name="flux")
    good = keras.Input((pixels,), name="good")
    x = layers.Normalization(mean=mean, variance=variance, name="standardise")(flux)
    x = layers.Multiply(name="drop_masked")([x, good])
    for i, width in enumerate(hidden):
        x = layers.Dense(width, name=f"encode_{i}")(x)
        x = layers.LeakyReLU(slope)(x)
    latent = layers.Dense(latent_dim, name="latent")(x)
    encoder = keras.Model([flux, good], latent, name="encoder")

    code = keras.Input((latent_dim,), name="latent")
    y = code
    for i, width in enumerate(reversed(hidden)):
        y = layers.Dense(width, name=f"decode_{i}")(y)
        y = layers.LeakyReLU(slope)(y)
    y = layers.Dense(pixels, name="reconstruct")(y)
    y = layers.Normalization(mean=mean, variance=variance, invert=True, name="unstandardise")(y)
    decoder = keras.Model(code, y, name="decoder")

    autoencoder = keras.Model([flux, good], decoder(encoder([flux, good])), name="autoencoder")
    return encoder, decoder, autoencoder


#: Builders by the ``family`` key of a model config.
FAMILIES = {"dense": build_dense}
