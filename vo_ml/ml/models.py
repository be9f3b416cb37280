"""Encoder and decoder builders, from the YAML configs in ``configs/``.

Both halves are separate Keras models joined into one autoencoder for training, so that batch
embedding loads only what it needs. The encoder takes the flux and a 0/1 good-pixel weight; it
standardises the flux inside the model (fixed mean spectrum and scale, measured on the training
set) and zeroes masked pixels, which puts them at the mean spectrum. A saved model therefore
carries everything needed to encode a spectrum straight from the store.

Two families share that frame and differ in the body:

- ``dense``: fully-connected layers on downsampled spectra, with a latent space small enough to be
  the map (:func:`build_dense`);
- ``conv``: stride-2 1-D convolutions at full resolution, then a dense bottleneck, mirrored by
  transposed convolutions (:func:`build_conv`).

Either bottleneck may be variational: ``variational_beta`` > 0 in the config draws the latent
vector from a learnt Gaussian while training and adds beta times its KL divergence to the loss.
The encoder's output is always the mean, so embeddings are deterministic.
"""

from __future__ import annotations

import math

import numpy as np

from vo_ml.ml.framework import keras, tf

layers, ops = keras.layers, keras.ops

__all__ = ["build_dense", "build_conv", "conv_layers", "downsampling", "masked_mse", "Bottleneck", "FAMILIES"]


def downsampling(config: dict) -> int:
    """How many store pixels a model of ``config`` averages into one of its inputs."""
    return int(config["input"].get("downsample", 1))


@keras.saving.register_keras_serializable(package="vo_ml")
def masked_mse(target: object, predicted: object) -> object:
    """Mean squared error over good pixels only: masked pixels must not shape the model.

    ``target`` stacks the flux and a 0/1 weight on the last axis, shape (batch, pixels, 2).
    """
    flux, weight = target[..., 0], target[..., 1]
    squared = ops.square(predicted - flux) * weight
    return ops.sum(squared, axis=-1) / ops.maximum(ops.sum(weight, axis=-1), 1.0)


@keras.saving.register_keras_serializable(package="vo_ml")
class Bottleneck(layers.Layer):
    """The latent layer: a plain projection, or a variational one when ``beta`` > 0.

    Variational: it learns a mean and a log-variance; in training it returns a sample and adds
    ``beta`` x KL(q(z|x) || N(0, 1)) to the model's losses; otherwise it returns the mean. The
    noise of each training step comes from (seed, step), and the step counter is a weight of the
    layer, so a model restored from a checkpoint draws the noise the uninterrupted run drew.
    """

    def __init__(self, latent_dim: int, beta: float = 0.0, seed: int = 0, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.latent_dim = latent_dim
        self.beta = beta
        self.seed = seed
        self.mean = layers.Dense(latent_dim, name="mean")
        self.log_variance = layers.Dense(latent_dim, name="log_variance") if beta > 0 else None

    def build(self, input_shape: tuple) -> None:
        self.mean.build(input_shape)
        if self.log_variance is not None:
            self.log_variance.build(input_shape)
            self.step = self.add_weight(shape=(), dtype="int64", initializer="zeros",
                                        trainable=False, name="noise_step")

    def call(self, inputs: object, training: bool | None = None) -> object:
        mean = self.mean(inputs)
        if self.log_variance is None:
            return mean
        log_variance = self.log_variance(inputs)
        kl = -0.5 * ops.mean(ops.sum(1 + log_variance - ops.square(mean) - ops.exp(log_variance), axis=-1))
        self.add_loss(self.beta * kl)
        if not training:
            return mean
        seed = tf.stack([tf.constant(self.seed, tf.int64), self.step.value])
        epsilon = tf.random.stateless_normal(tf.shape(mean), seed=seed, dtype=mean.dtype)
        self.step.assign_add(1)
        return mean + ops.exp(0.5 * log_variance) * epsilon

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (*input_shape[:-1], self.latent_dim)

    def get_config(self) -> dict:
        return {**super().get_config(), "latent_dim": self.latent_dim, "beta": self.beta,
                "seed": self.seed}


def _standardised_inputs(pixels: int, mean: np.ndarray, scale: float) -> tuple:
    """The encoder's two inputs, and the flux standardised with masked pixels at the mean."""
    flux = keras.Input((pixels,), name="flux")
    good = keras.Input((pixels,), name="good")
    variance = np.full(pixels, scale**2, dtype=np.float32)
    x = layers.Normalization(mean=mean, variance=variance, name="standardise")(flux)
    return flux, good, layers.Multiply(name="drop_masked")([x, good])


def _unstandardise(y: object, mean: np.ndarray, scale: float) -> object:
    variance = np.full(mean.size, scale**2, dtype=np.float32)
    return layers.Normalization(mean=mean, variance=variance, invert=True, name="unstandardise")(y)


def _bottleneck(config: dict) -> Bottleneck:
    return Bottleneck(int(config["latent_dim"]), float(config.get("variational_beta", 0.0)),
                      int(config.get("training", {}).get("seed", 0)), name="latent")


def _assemble(flux: object, good: object, latent: object, code: object, reconstructed: object
              ) -> tuple[keras.Model, keras.Model, keras.Model]:
    encoder = keras.Model([flux, good], latent, name="encoder")
    decoder = keras.Model(code, reconstructed, name="decoder")
    autoencoder = keras.Model([flux, good], decoder(encoder([flux, good])), name="autoencoder")
    return encoder, decoder, autoencoder


def build_dense(
    config: dict, pixels: int, mean: np.ndarray, scale: float
) -> tuple[keras.Model, keras.Model, keras.Model]:
    """The dense family: encoder, decoder and the autoencoder that chains them."""
    hidden = list(config["encoder"]["hidden"])
    slope = float(config["encoder"].get("negative_slope", 0.1))
    flux, good, x = _standardised_inputs(pixels, mean, scale)
    for i, width in enumerate(hidden):
        x = layers.LeakyReLU(slope)(layers.Dense(width, name=f"encode_{i}")(x))
    latent = _bottleneck(config)(x)

    code = keras.Input((int(config["latent_dim"]),), name="latent")
    y = code
    for i, width in enumerate(reversed(hidden)):
        y = layers.LeakyReLU(slope)(layers.Dense(width, name=f"decode_{i}")(y))
    y = _unstandardise(layers.Dense(pixels, name="reconstruct")(y), mean, scale)
    return _assemble(flux, good, latent, code, y)


def conv_layers(config: dict, pixels: int) -> list[tuple[int, int]]:
    """(filters, kernel) of each stride-2 convolution the input length allows.

    The config lists the layers for full HARPS resolution; a shorter input (MILES, 4,096 px) keeps
    the first ones, as many as leave at least ``min_length`` pixels at the bottom.
    """
    conv = config["encoder"]
    filters, kernels = list(conv["filters"]), list(conv["kernels"])
    if len(filters) != len(kernels):
        raise ValueError(f"model config {config.get('name')}: encoder.filters and encoder.kernels "
                         f"differ in length ({len(filters)} and {len(kernels)})")
    allowed = int(math.floor(math.log2(pixels / int(conv.get("min_length", 4)))))
    if allowed < 1:
        raise ValueError(f"model config {config.get('name')}: {pixels} pixels are too few for a "
                         "stride-2 convolution")
    return list(zip(filters, kernels, strict=True))[:allowed]


#: He initialisation keeps the signal's variance through LeakyReLU layers; with Keras's default
#: (Glorot) the 20 layers of a MILES-size conv autoencoder shrank it a million-fold and training
#: never left the mean spectrum.
HE = "he_normal"


def build_conv(
    config: dict, pixels: int, mean: np.ndarray, scale: float
) -> tuple[keras.Model, keras.Model, keras.Model]:
    """The conv family: stride-2 Conv1D layers, a dense bottleneck, and the mirror image.

    The input is zero-padded (as masked pixels) to a multiple of 2^layers, and the decoder's
    output cropped back, so any grid length works.
    """
    slope = float(config["encoder"].get("negative_slope", 0.1))
    stack = conv_layers(config, pixels)
    padded = math.ceil(pixels / 2 ** len(stack)) * 2 ** len(stack)
    bottom = padded // 2 ** len(stack)

    flux, good, x = _standardised_inputs(pixels, mean, scale)
    x = layers.Reshape((pixels, 1))(x)
    x = layers.ZeroPadding1D((0, padded - pixels))(x)
    for i, (filters, kernel) in enumerate(stack):
        x = layers.Conv1D(filters, kernel, strides=2, padding="same", kernel_initializer=HE,
                          name=f"conv_{i}")(x)
        x = layers.LeakyReLU(slope)(x)
    x = layers.Flatten()(x)
    for i, width in enumerate(config["encoder"].get("dense", [])):
        x = layers.LeakyReLU(slope)(layers.Dense(width, kernel_initializer=HE, name=f"encode_{i}")(x))
    latent = _bottleneck(config)(x)

    code = keras.Input((int(config["latent_dim"]),), name="latent")
    y = code
    for i, width in enumerate(reversed(config["encoder"].get("dense", []))):
        y = layers.LeakyReLU(slope)(layers.Dense(width, kernel_initializer=HE, name=f"decode_{i}")(y))
    y = layers.Dense(bottom * stack[-1][0], kernel_initializer=HE, name="expand")(y)
    y = layers.LeakyReLU(slope)(y)
    y = layers.Reshape((bottom, stack[-1][0]))(y)
    outputs = [filters for filters, _ in stack[:-1]][::-1] + [1]
    for i, ((_, kernel), filters) in enumerate(zip(stack[::-1], outputs, strict=True)):
        y = layers.Conv1DTranspose(filters, kernel, strides=2, padding="same", kernel_initializer=HE,
                                   name=f"deconv_{i}")(y)
        if i < len(stack) - 1:
            y = layers.LeakyReLU(slope)(y)
    y = layers.Flatten()(layers.Cropping1D((0, padded - pixels))(y))
    return _assemble(flux, good, latent, code, _unstandardise(y, mean, scale))


#: Builders by the ``family`` key of a model config.
FAMILIES = {"dense": build_dense, "conv": build_conv}
