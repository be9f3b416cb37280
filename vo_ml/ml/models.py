"""Encoder and decoder builders, from the YAML configs in ``configs/``.

Both halves are separate Keras models joined into one autoencoder for training, so that batch
embedding loads only what it needs. The encoder takes the flux and a 0/1 good-pixel weight; it
standardises the flux inside the model (fixed mean spectrum and scale, measured on the training
set) and zeroes masked pixels, which puts them at the mean spectrum. A saved model therefore
carries everything needed to encode a spectrum straight from the store.

Every model is **anchored on PCA** (:class:`Anchor`), as spender anchors its output on a linear
layer: the latent vector is the leading part of the masked least-squares projection of the
spectrum on the training set's principal components (:class:`MaskedProjection`, which weighs
only the good pixels and solves on all the anchor's components, so a spectrum covering part of
the range lands near where its whole counterpart does) plus a learnt correction, and the
reconstruction is the components' linear combination (a trainable layer initialised from them)
plus a learnt correction. Both corrections start at exactly zero,
so training starts at PCA's error and can only improve on it, and the latent space starts as
PCA's, whose distances follow the spectra's.

Two families share that frame and differ in the corrections:

- ``dense``: fully-connected layers with LayerNorm on downsampled spectra, with a latent space
  small enough to be the map (:func:`build_dense`);
- ``conv``: residual blocks of 1-D convolutions with GroupNorm at full resolution, stride 2 down
  and upsampling plus convolution back up (:func:`build_conv`).

The correction of the latent may be variational: ``variational_beta`` > 0 in the config draws it
from a learnt Gaussian while training and adds beta times its KL divergence to the loss. The
encoder's output is always the mean, so embeddings are deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vo_ml.ml.framework import keras, tf
from vo_ml.ml.projection import PrincipalComponents

layers, ops = keras.layers, keras.ops

__all__ = ["Anchor", "Bottleneck", "FAMILIES", "MaskedHuber", "MaskedProjection", "build_conv",
           "build_dense", "conv_layers", "downsampling"]


def downsampling(config: dict) -> int:
    """How many store pixels a model of ``config`` averages into one of its inputs."""
    return int(config["input"].get("downsample", 1))


@dataclass(frozen=True)
class Anchor:
    """What every model starts from, measured on its training spectra: the mean spectrum and one
    global scale (standardised flux is ``(flux - mean) / scale``), the leading principal
    components of the standardised flux (rows, orthonormal), their variances, and the variance
    per pixel they leave unexplained."""

    mean: np.ndarray
    scale: float
    components: np.ndarray
    variances: np.ndarray
    noise: float

    @classmethod
    def fit(cls, flux: np.ndarray, good: np.ndarray, mean: np.ndarray, scale: float,
            components: int) -> Anchor:
        """The anchor of training rows ``flux`` (good-pixel weights ``good``), with the mean and
        scale of the whole training set; masked pixels sit at the mean, as the encoder puts them."""
        standardised = np.where(good > 0, (flux - mean) / scale, 0.0).astype(np.float64)
        pca = PrincipalComponents.fit(standardised, centre=0.0)
        count = min(components, pca.axes.shape[0])
        noise = float(pca.variances[count:].sum() / flux.shape[1]) or 1e-6
        return cls(mean.astype(np.float32), float(scale), pca.axes[:count].astype(np.float32),
                   np.maximum(pca.variances[:count], 1e-12).astype(np.float32), noise)

    @classmethod
    def flat(cls, pixels: int, components: int = 0) -> Anchor:
        """An anchor with a mean spectrum of ones and the first pixels as components: for
        building a model without data (tests, shapes)."""
        return cls(np.ones(pixels, np.float32), 0.1, np.eye(components, pixels, dtype=np.float32),
                   np.ones(components, np.float32), 1e-2)


@keras.saving.register_keras_serializable(package="vo_ml")
class MaskedHuber(keras.losses.Loss):
    """Huber loss over good pixels only: masked pixels must not shape the model, and a few bad
    ones (cosmic rays, residual tellurics) must not dominate it. ``delta`` is in flux units.

    ``target`` stacks the flux and a 0/1 weight on the last axis, shape (batch, pixels, 2).
    """

    def __init__(self, delta: float = 0.05, name: str = "masked_huber", **kwargs: object) -> None:
        super().__init__(name=name, **kwargs)
        self.delta = delta

    def call(self, target: object, predicted: object) -> object:
        flux, weight = target[..., 0], target[..., 1]
        error = ops.abs(predicted - flux)
        quadratic = ops.minimum(error, self.delta)
        huber = 0.5 * ops.square(quadratic) + self.delta * (error - quadratic)
        return ops.sum(huber * weight, axis=-1) / ops.maximum(ops.sum(weight, axis=-1), 1.0)

    def get_config(self) -> dict:
        return {**super().get_config(), "delta": self.delta}


#: How much the projection's prior counts against the data, over probabilistic PCA's: it keeps
#: a component the good pixels do not constrain near the mean and shrinks a well-measured one by
#: a fraction of a percent. Measured on MILES with 128 components and one pass: keeping the red
#: half of the range, the latent vector lands 1.43 archive nearest-neighbour distances from the
#: whole spectrum's at weight 1, 1.23 at 3 and 1.29 at 10; on 16 components at 0.01 it landed 2.47.
PRIOR_WEIGHT = 3.0
#: The masked projection's noise is measured in windows of this share of the pixels (32 A of
#: MILES's range): wide enough to average many pixels, narrow enough to follow the blue end.
NOISE_WINDOWS = 32
#: How far a stretch's residual variance must exceed the anchor's unexplained variance to be
#: weighed down. At 1, half the stretches of clean spectra were, and dense16's held-out
#: reconstruction error at latent 128 rose 7% above PCA's; at 4, clean spectra keep their
#: least-squares coefficients (the median one moved 0.0 archive distances) and recall@10 at
#: S/N 20 stays at 0.83.
NOISE_EXCESS = 4.0
#: Passes of the projection: the first weighs every good pixel alike, the next ones by the noise
#: the previous pass left (:class:`MaskedProjection`). On MILES (latent 16, 128 components),
#: recall@10 at S/N 20 went from 0.77 with one pass to 0.80 with two and 0.83 with three; four
#: gave 0.84. Partial spectra landed where they did with one pass (red half: 1.24 archive
#: distances from its whole, 1.23 with one).
PASSES = 3


@keras.saving.register_keras_serializable(package="vo_ml")
class MaskedProjection(layers.Layer):
    """The latent vector's linear part: the least-squares coefficients of the standardised
    spectrum on the anchor's components, over its good pixels only.

    With a prior on each coefficient (the component's variance against the unexplained noise,
    probabilistic PCA's posterior mean), the solve stays well posed for any mask: a component
    the good pixels do not constrain falls back to the mean, and a spectrum covering all pixels
    gets nearly its plain PCA coefficients.

    The solve runs over all the anchor's components, however few the latent vector keeps (the
    first ``latent_dim``): for a partial spectrum this is the Gaussian conditional estimate of
    its whole counterpart's coefficients, which uses how the components covary across the gap.
    Solved on the leading components alone, the residual the others would carry leaks into
    them. Coefficients beyond the anchor's components are zero.

    With ``passes`` > 1 the solve is repeated with each pixel weighed by how well the spectrum's
    own noise lets it be fitted: the mean squared residual of the previous pass over a window
    of ``pixels / NOISE_WINDOWS`` around it, against NOISE_EXCESS times ``noise`` (the variance
    the anchor's components leave unexplained): only a stretch fitted that much worse than the
    archive's spectra usually are counts for less. A noisy stretch (the blue end of a cool star
    observed at low S/N) then weighs less, as inverse-variance weights would, with no error array
    needed, while a clean spectrum keeps its least-squares coefficients.
    """

    def __init__(self, latent_dim: int, components: int, pixels: int, passes: int = 1,
                 **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.latent_dim, self.count, self.pixels, self.passes = latent_dim, components, pixels, passes

    def build(self, input_shape: object) -> None:
        self.components = self.add_weight(shape=(self.count, self.pixels), initializer="zeros",
                                          trainable=False, name="components")
        self.prior = self.add_weight(shape=(self.count,), initializer="ones", trainable=False,
                                     name="prior")
        if self.passes > 1:
            self.noise = self.add_weight(shape=(), initializer="ones", trainable=False, name="noise")
        window = max(self.pixels // NOISE_WINDOWS, 1)
        pixel = np.arange(self.pixels)
        self._starts = np.clip(pixel - (window - 1) // 2, 0, self.pixels)
        self._stops = np.clip(pixel + window // 2 + 1, 0, self.pixels)

    def anchor_on(self, anchor: Anchor) -> None:
        """Take the components of ``anchor``, their prior (PRIOR_WEIGHT times probabilistic
        PCA's) and, for the later passes, its unexplained variance as the noise floor."""
        prior = (PRIOR_WEIGHT * anchor.noise / anchor.variances).astype(np.float32)
        floor = [np.float32(anchor.noise)] if self.passes > 1 else []
        self.set_weights([anchor.components, prior, *floor])

    def call(self, inputs: object) -> object:
        flux, good = (ops.cast(part, self.components.dtype) for part in inputs)
        components = ops.cast(self.components, "float64")
        gram = ops.matmul(components, ops.transpose(components))
        fixed = (gram + ops.diag(ops.cast(self.prior, "float64")))[None]
        weight = good
        for done in range(1, self.passes + 1):
            solved = self._solve(flux, weight, components, fixed)
            if done < self.passes:
                weight = good * self._precision(flux, good, solved)
        coefficients = ops.cast(solved[:, :self.latent_dim], inputs[0].dtype)
        padding = max(self.latent_dim - self.count, 0)
        return ops.pad(coefficients, [[0, 0], [0, padding]]) if padding else coefficients

    def _solve(self, flux: object, weight: object, components: object, fixed: object) -> object:
        """Weighted least squares with the prior: the normal matrix is the components' Gram
        matrix (float64) less what the pixels' missing weight takes away. That part alone is
        summed in float32, four times faster, and it is small for the usual spectrum, which
        misses few pixels; summed whole in float32, the normal equations of 128 components lost
        1% of PCA's accuracy."""
        lacking = self.components[None] * (1.0 - weight)[:, None, :]
        missing = ops.cast(ops.matmul(lacking, ops.transpose(self.components)), "float64")
        projected = ops.matmul(ops.cast(flux * weight, "float64"), ops.transpose(components))
        return ops.squeeze(ops.solve(fixed - missing, ops.expand_dims(projected, -1)), -1)

    def _precision(self, flux: object, good: object, solved: object) -> object:
        """Each pixel's weight for the next pass: the noise floor over the local mean squared
        residual of this pass (at most 1)."""
        residual = flux - ops.matmul(ops.cast(solved, flux.dtype), self.components)

        def local(values: object) -> object:
            """Sums over the window around each pixel, from running sums: the cost does not grow
            with the window, which is thousands of pixels at full HARPS resolution."""
            running = ops.pad(ops.cumsum(ops.cast(values, "float64"), axis=1), [[0, 0], [1, 0]])
            return ops.take(running, self._stops, axis=1) - ops.take(running, self._starts, axis=1)

        variance = local(ops.square(residual) * good) / ops.maximum(local(good), 1e-6)
        floor = NOISE_EXCESS * ops.cast(self.noise, "float64")
        precision = ops.minimum(1.0, floor / ops.maximum(variance, 1e-30))
        return ops.cast(precision, flux.dtype)

    def compute_output_shape(self, input_shape: object) -> tuple:
        return (input_shape[0][0], self.latent_dim)

    def get_config(self) -> dict:
        return {**super().get_config(), "latent_dim": self.latent_dim,
                "components": self.count, "pixels": self.pixels, "passes": self.passes}


@keras.saving.register_keras_serializable(package="vo_ml")
class Bottleneck(layers.Layer):
    """The learnt correction of the latent vector: zero at first, plain or variational.

    Variational (``beta`` > 0): it learns a mean and a log-variance; in training it returns a
    sample and adds ``beta`` x KL(q || N(0, 1)) to the model's losses; otherwise it returns the
    mean. The noise of each training step comes from (seed, step), and the step counter is a
    weight of the layer, so a model restored from a checkpoint draws the noise the uninterrupted
    run drew.
    """

    def __init__(self, latent_dim: int, beta: float = 0.0, seed: int = 0, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.latent_dim = latent_dim
        self.beta = beta
        self.seed = seed
        self.mean = layers.Dense(latent_dim, kernel_initializer="zeros", name="mean")
        self.log_variance = (layers.Dense(latent_dim, kernel_initializer="zeros",
                                          bias_initializer=keras.initializers.Constant(-10.0),
                                          name="log_variance") if beta > 0 else None)

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


def _standardised_inputs(anchor: Anchor) -> tuple:
    """The encoder's two inputs, and the flux standardised with masked pixels at the mean."""
    pixels = anchor.mean.size
    flux = keras.Input((pixels,), name="flux")
    good = keras.Input((pixels,), name="good")
    variance = np.full(pixels, anchor.scale**2, dtype=np.float32)
    x = layers.Normalization(mean=anchor.mean, variance=variance, name="standardise")(flux)
    return flux, good, layers.Multiply(name="drop_masked")([x, good])


def _anchored_encoder(config: dict, anchor: Anchor, correction_body: object) -> tuple:
    """Inputs and latent vector: the masked projection plus the correction that
    ``correction_body(standardised, good)`` computes from the spectrum (its features, which the
    zero-initialised :class:`Bottleneck` turns into the correction); with ``latent_correction:
    false`` in the config, the projection alone, and only the decoder learns."""
    latent_dim = int(config["latent_dim"])
    flux, good, x = _standardised_inputs(anchor)
    projection = MaskedProjection(latent_dim, anchor.components.shape[0], anchor.mean.size, PASSES,
                                  name="projection")
    linear = projection([x, good])
    projection.anchor_on(anchor)
    if not config.get("latent_correction", True):
        return flux, good, linear
    correction = Bottleneck(latent_dim, float(config.get("variational_beta", 0.0)),
                            int(config.get("training", {}).get("seed", 0)),
                            name="latent")(correction_body(x, good))
    return flux, good, layers.Add(name="anchored_latent")([linear, correction])


def _anchored_decoder(config: dict, anchor: Anchor, correction_body: object) -> tuple:
    """The latent input and the reconstruction: the components' combination (trainable,
    initialised from them) plus ``correction_body(latent)``, a zero-initialised correction,
    in standardised units, then back to flux."""
    latent_dim, pixels = int(config["latent_dim"]), anchor.mean.size
    count = min(latent_dim, anchor.components.shape[0])
    code = keras.Input((latent_dim,), name="latent")
    initial = np.zeros((latent_dim, pixels), np.float32)
    initial[:count] = anchor.components[:count]
    linear = layers.Dense(pixels, use_bias=False, kernel_initializer=keras.initializers.Constant(initial),
                          name="components")(code)
    y = layers.Add(name="anchored_output")([linear, correction_body(code)])
    variance = np.full(pixels, anchor.scale**2, dtype=np.float32)
    y = layers.Normalization(mean=anchor.mean, variance=variance, invert=True, name="unstandardise")(y)
    return code, y


def _assemble(flux: object, good: object, latent: object, code: object, reconstructed: object
              ) -> tuple[keras.Model, keras.Model, keras.Model]:
    encoder = keras.Model([flux, good], latent, name="encoder")
    decoder = keras.Model(code, reconstructed, name="decoder")
    autoencoder = keras.Model([flux, good], decoder(encoder([flux, good])), name="autoencoder")
    return encoder, decoder, autoencoder


#: He initialisation keeps the signal's variance through LeakyReLU layers.
HE = "he_normal"


def _dense_stack(x: object, widths: list[int], slope: float, prefix: str) -> object:
    for i, width in enumerate(widths):
        x = layers.Dense(width, kernel_initializer=HE, name=f"{prefix}_{i}")(x)
        x = layers.LayerNormalization(name=f"{prefix}_norm_{i}")(x)
        x = layers.LeakyReLU(slope)(x)
    return x


def build_dense(config: dict, anchor: Anchor) -> tuple[keras.Model, keras.Model, keras.Model]:
    """The dense family: encoder, decoder and the autoencoder that chains them. The encoder's
    correction sees the standardised flux and the mask, so it can learn what a gap hides."""
    hidden = list(config["encoder"]["hidden"])
    slope = float(config["encoder"].get("negative_slope", 0.1))

    def encode(x: object, good: object) -> object:
        return _dense_stack(layers.Concatenate(name="flux_and_mask")([x, good]), hidden, slope, "encode")

    def decode(code: object) -> object:
        y = _dense_stack(code, hidden[::-1], slope, "decode")
        return layers.Dense(anchor.mean.size, kernel_initializer="zeros", name="reconstruct")(y)

    flux, good, latent = _anchored_encoder(config, anchor, encode)
    code, reconstructed = _anchored_decoder(config, anchor, decode)
    return _assemble(flux, good, latent, code, reconstructed)


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


def _residual_block(x: object, filters: int, kernel: int, slope: float, name: str,
                    resample: object) -> object:
    """``resample`` (a stride-2 convolution down, or upsampling then a convolution up), then a
    convolution whose output is added back: GroupNorm after each, LeakyReLU after the sum."""
    x = layers.GroupNormalization(min(8, filters), name=f"{name}_norm")(resample(x))
    x = layers.LeakyReLU(slope)(x)
    inner = layers.Conv1D(filters, kernel, padding="same", kernel_initializer=HE, name=f"{name}_inner")(x)
    inner = layers.GroupNormalization(min(8, filters), name=f"{name}_inner_norm")(inner)
    return layers.LeakyReLU(slope)(layers.Add(name=f"{name}_residual")([x, inner]))


def build_conv(config: dict, anchor: Anchor) -> tuple[keras.Model, keras.Model, keras.Model]:
    """The conv family: residual blocks down by stride-2 convolutions, a dense head to the
    latent correction, and back up by upsampling and convolution.

    The input is zero-padded (as masked pixels) to a multiple of 2^layers, and the decoder's
    output cropped back, so any grid length works.
    """
    slope = float(config["encoder"].get("negative_slope", 0.1))
    pixels = anchor.mean.size
    stack = conv_layers(config, pixels)
    padded = math.ceil(pixels / 2 ** len(stack)) * 2 ** len(stack)
    bottom = padded // 2 ** len(stack)

    def encode(x: object, good: object) -> object:
        y = layers.Concatenate(name="flux_and_mask")([layers.Reshape((pixels, 1))(x),
                                                      layers.Reshape((pixels, 1))(good)])
        y = layers.ZeroPadding1D((0, padded - pixels))(y)
        for i, (filters, kernel) in enumerate(stack):
            down = layers.Conv1D(filters, kernel, strides=2, padding="same", kernel_initializer=HE,
                                 name=f"conv_{i}")
            y = _residual_block(y, filters, kernel, slope, f"down_{i}", down)
        return layers.Flatten()(y)

    def decode(code: object) -> object:
        y = layers.Dense(bottom * stack[-1][0], kernel_initializer=HE, name="expand")(code)
        y = layers.Reshape((bottom, stack[-1][0]))(layers.LeakyReLU(slope)(y))
        for i, (filters, kernel) in enumerate(stack[::-1]):
            def up(z: object, filters: int = filters, kernel: int = kernel, i: int = i) -> object:
                z = layers.UpSampling1D(2, name=f"upsample_{i}")(z)
                return layers.Conv1D(filters, kernel, padding="same", kernel_initializer=HE,
                                     name=f"deconv_{i}")(z)
            y = _residual_block(y, filters, kernel, slope, f"up_{i}", up)
        y = layers.Conv1D(1, stack[0][1], padding="same", kernel_initializer="zeros", name="reconstruct")(y)
        return layers.Flatten()(layers.Cropping1D((0, padded - pixels))(y))

    flux, good, latent = _anchored_encoder(config, anchor, encode)
    code, reconstructed = _anchored_decoder(config, anchor, decode)
    return _assemble(flux, good, latent, code, reconstructed)


#: Builders by the ``family`` key of a model config.
FAMILIES = {"dense": build_dense, "conv": build_conv}
