"""Why two spectra are near in the latent space: their squared latent distance, split over pixels.

The split is integrated gradients (Sundararajan, Taly & Yan 2017) of d^2(p) = |E(p) - E(ref)|^2,
E the model's encoder, along the straight path from the reference spectrum ``ref`` (the baseline,
where d^2 is zero) to the spectrum ``x``: pixel i gets (x - ref)_i times the mean over the path of
the gradient of d^2 with respect to pixel i. The attributions sum to d^2(x) - d^2(ref) = d^2
(completeness) up to the error of the integral over the path, which Gauss-Legendre nodes make
small: n nodes integrate a polynomial of degree 2n - 1 exactly. All the nodes go through the
encoder as one batch, with one gradient; the few pairs whose integrand jumps (the projection's
noise weights switching on along the path) get their path cut into panels until the sum holds
(:func:`integrated_gradients`).

For a linear encoder, E(p) = W p, the split is exact by construction, with any number of nodes:
the gradient is linear along the path, and pixel i gets (x - ref)_i [W^T W (x - ref)]_i. The
served models' latent vector is the masked projection on the anchor's principal components
(:mod:`vo_ml.ml.models`): linear in the flux but for the noise weights of its later passes, so the
split stays nearly exact for them too (:attr:`Explanation.completeness_error` measures it; on 200
MILES nearest-neighbour pairs the largest error was 1e-3, ``python -m vo_ml.ml.explain_eval``).

Masks: both spectra, and every point of the path, are encoded with the same good-pixel weights,
those of the pixels good in both. The encoder zeroes the rest, so a pixel bad in either spectrum
gets no attribution, the path stays within one encoder (the projection solves the same system all
along it) and d^2 is zero at the baseline. The distance explained is therefore the one over the
pixels the two spectra share; where their masks differ, it is not quite the archive's
``ml_distance``, which encodes each spectrum with its own mask.

Pixels are grouped into the named spectral windows of a committed line list
(``data/spectral_windows.yaml``: Lick/IDS central bandpasses, Ca II H and K, the Balmer series,
Na D, Mg b, the Ca II triplet, TiO bands); a pixel in no window counts as :data:`OTHER`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import numpy as np

from vo_ml.ml.cards import load_card
from vo_ml.ml.embedding import load_model, model_sampled
from vo_ml.ml.models import downsampling
from vo_ml.resources import load_yaml
from vo_ml.spectra.grid import Grid
from vo_ml.spectra.velocity import air_to_vacuum

__all__ = ["NODES", "TOLERANCE", "ROUNDS", "OTHER", "EQUAL_DEPTH", "Explanation", "LineList",
           "SpectralWindow", "WindowShare", "distances2", "explain", "explain_rows", "integrated_gradients",
           "line_list", "model_wavelengths"]

#: Gauss-Legendre nodes per panel of the path integral.
NODES = 16
#: The path integral is refined until the attributions sum to d^2 within this share of it.
TOLERANCE = 1e-3
#: Rounds of refinement at most, which bounds the cost of a pair.
ROUNDS = 8
#: The windows table's name for the pixels in no named window.
OTHER = "other"
#: Mean normalised flux within this of each other: neither spectrum's feature is the deeper.
EQUAL_DEPTH = 0.005


@dataclass(frozen=True)
class SpectralWindow:
    """A named wavelength range, in Angstrom; ``kind`` says where its bounds come from."""

    name: str
    kind: str
    start: float
    stop: float

    def covers(self, wavelength: np.ndarray) -> np.ndarray:
        """Whether each pixel centre falls in the window."""
        return (wavelength >= self.start) & (wavelength < self.stop)


@dataclass(frozen=True)
class LineList:
    """The named windows, in one medium, and where they come from."""

    provenance: str
    medium: str
    windows: tuple[SpectralWindow, ...]

    def covers(self, wavelength: np.ndarray) -> np.ndarray:
        """Whether each pixel centre falls in any window."""
        return np.logical_or.reduce([w.covers(wavelength) for w in self.windows])


@functools.lru_cache(maxsize=2)
def line_list(medium: str = "air") -> LineList:
    """The packaged line list, its wavelengths in ``medium`` ("air" or "vacuum", as a model's
    grid is): the published bandpasses are in air."""
    data = load_yaml(files("vo_ml.ml") / "data" / "spectral_windows.yaml")
    shift = air_to_vacuum if medium == "vacuum" else float
    windows = tuple(SpectralWindow(w["name"], w["kind"], float(shift(w["start"])), float(shift(w["stop"])))
                    for w in data["windows"])
    return LineList(data["provenance"], medium, windows)


@dataclass(frozen=True)
class WindowShare:
    """One row of the windows table: a window, its share of d^2 and the spectrum whose feature
    is deeper there ("spectrum", "reference" or "equal")."""

    name: str
    start: float
    stop: float
    share: float
    deeper: str


@dataclass(frozen=True)
class Explanation:
    """Why ``flux`` (the spectrum) is near ``ref_flux`` (the reference): on the model's grid
    ``wavelength`` (Angstrom), the two normalised spectra (NaN where each is masked), the pixels
    good in both, and each pixel's share of the squared latent distance ``distance2``."""

    wavelength: np.ndarray
    attribution: np.ndarray
    distance2: float
    flux: np.ndarray
    ref_flux: np.ndarray
    good: np.ndarray
    medium: str = "air"

    @property
    def completeness_error(self) -> float:
        """|sum of the attributions - d^2| / d^2: the error of the path integral."""
        if self.distance2 == 0.0:
            return float(np.abs(self.attribution).sum())
        return float(abs(self.attribution.sum() - self.distance2) / self.distance2)

    @property
    def share(self) -> np.ndarray:
        """Each pixel's attribution over d^2 (zeros when the spectra are the same)."""
        return self.attribution / self.distance2 if self.distance2 > 0 else np.zeros_like(self.attribution)

    def windows(self, lines: LineList | None = None) -> list[WindowShare]:
        """The windows table: every window of ``lines`` (the packaged list by default) with a
        good pixel on the grid, and :data:`OTHER` for the good pixels in none, by share of d^2,
        largest first. Windows may overlap, so their shares may add up to more than one."""
        lines = lines or line_list(self.medium)
        rows = []
        for window in lines.windows:
            inside = window.covers(self.wavelength) & self.good
            if inside.any():
                rows.append(self._row(window.name, window.start, window.stop, inside))
        rest = ~lines.covers(self.wavelength) & self.good
        if rest.any():
            rows.append(self._row(OTHER, float(self.wavelength[rest].min()),
                                  float(self.wavelength[rest].max()), rest))
        return sorted(rows, key=lambda row: row.share, reverse=True)

    def _row(self, name: str, start: float, stop: float, pixels: np.ndarray) -> WindowShare:
        return WindowShare(name, start, stop, float(self.share[pixels].sum()),
                           _deeper(self.flux[pixels], self.ref_flux[pixels]))


def _deeper(flux: np.ndarray, ref_flux: np.ndarray) -> str:
    """Which spectrum's feature is deeper: the lower mean normalised flux."""
    difference = float(flux.mean() - ref_flux.mean())
    if abs(difference) < EQUAL_DEPTH:
        return "equal"
    return "spectrum" if difference < 0 else "reference"


def _path_nodes(nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights on [0, 1]."""
    points, weights = np.polynomial.legendre.leggauss(nodes)
    return 0.5 * (points + 1.0), 0.5 * weights


def integrated_gradients(encoder: object, flux: np.ndarray, ref_flux: np.ndarray, good: np.ndarray,
                         nodes: int = NODES, tolerance: float = TOLERANCE) -> tuple[np.ndarray, float]:
    """Each pixel's attribution of d^2 = |E(flux) - E(ref_flux)|^2 and d^2, for one spectrum and
    its reference on the model's grid, both encoded with the good-pixel weights ``good`` (1
    where the pixel counts).

    The path is cut into panels, each integrated on ``nodes`` Gauss-Legendre nodes. Over a panel
    [a, b] the attributions must sum to d^2(b) - d^2(a), which the same batch measures; while
    they miss by more than ``tolerance`` d^2 in all, the panels furthest off are halved and done
    again, for at most :data:`ROUNDS` rounds. A pair that differs much in one stretch needs it:
    along its path the projection's noise weights switch on, and the integrand jumps there."""
    step = (flux - ref_flux).astype(np.float32)
    done, ends = _panels(encoder, ref_flux, step, good, [(0.0, 1.0)], nodes)
    distance2 = float(ends[0, 1])
    for _ in range(ROUNDS):
        misses = {panel: abs(miss) for panel, (_, miss) in done.items()}
        if sum(misses.values()) <= tolerance * distance2:
            break
        worst = [panel for panel, miss in misses.items() if miss >= 0.25 * max(misses.values())]
        halves = [half for a, b in worst for half in ((a, (a + b) / 2), ((a + b) / 2, b))]
        for panel in worst:
            del done[panel]
        done.update(_panels(encoder, ref_flux, step, good, halves, nodes)[0])
    return np.sum([attribution for attribution, _ in done.values()], axis=0), distance2


def _panels(encoder: object, ref_flux: np.ndarray, step: np.ndarray, good: np.ndarray,
            panels: list[tuple[float, float]], nodes: int) -> tuple[dict, np.ndarray]:
    """Each panel's attributions and by how much their sum misses d^2(b) - d^2(a), and d^2 at
    the panels' ends (a, b), from one batch through the encoder with its gradient."""
    from vo_ml.ml.framework import tf

    points, weights = _path_nodes(nodes)
    bounds = np.array(panels)
    widths = bounds[:, 1] - bounds[:, 0]
    alphas = np.concatenate([(bounds[:, :1] + widths[:, None] * points).ravel(), bounds.ravel()])
    count = len(panels) * nodes
    rows = tf.constant(np.vstack([ref_flux + alphas[:, None] * step, ref_flux]), tf.float32)
    weight_rows = tf.constant(np.broadcast_to(good, rows.shape), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(rows)
        latent = encoder([rows, weight_rows], training=False)
        squared = tf.reduce_sum(tf.square(latent[:-1] - tf.stop_gradient(latent[-1:])), axis=1)
        weighted = tf.constant((widths[:, None] * weights).ravel(), squared.dtype)
        integral = tf.reduce_sum(squared[:count] * weighted)
    gradient = tape.gradient(integral, rows).numpy()[:count].reshape(len(panels), nodes, -1).sum(axis=1)
    attributions = (step * gradient).astype(np.float64)
    ends = squared.numpy()[count:].astype(np.float64).reshape(-1, 2)
    misses = attributions.sum(axis=1) - (ends[:, 1] - ends[:, 0])
    return {panel: (a, float(m)) for panel, a, m in zip(panels, attributions, misses, strict=True)}, ends


def distances2(encoder: object, flux: np.ndarray, ref_flux: np.ndarray, good: np.ndarray) -> np.ndarray:
    """d^2 from ``ref_flux`` of each row of ``flux``, all encoded with the weights ``good``: the
    distance :func:`integrated_gradients` splits, for edited copies of a spectrum."""
    weights = np.broadcast_to(good, (len(flux) + 1, good.size)).astype(np.float32)
    rows = np.where(weights > 0, np.vstack([flux, ref_flux]), 0.0).astype(np.float32)
    latent = encoder([rows, weights], training=False).numpy().astype(np.float64)
    return np.sum(np.square(latent[:-1] - latent[-1]), axis=1)


def model_wavelengths(model_dir: str | Path) -> tuple[np.ndarray, str]:
    """The pixel centres (Angstrom) of the grid the model reads, and its medium."""
    card = load_card(Path(model_dir))
    grid = Grid(**card["grid"]).coarsened(downsampling(card["config"]))
    return grid.centres, grid.medium


def explain(model_dir: str | Path, flux: np.ndarray, mask: np.ndarray, ref_flux: np.ndarray,
            ref_mask: np.ndarray, nodes: int = NODES) -> Explanation:
    """Why the spectrum (``flux``, ``mask``: True where bad) is near the reference, for one
    spectrum each already at the model's sampling (a row of the store coarsened as the model
    reads it, :meth:`SpectrumStore.coarsened`)."""
    encoder, _, _ = load_model(str(model_dir))
    wavelength, medium = model_wavelengths(model_dir)
    good = ~(np.asarray(mask, bool) | np.asarray(ref_mask, bool))
    same = np.where(good, flux, 0.0), np.where(good, ref_flux, 0.0)
    attribution, distance2 = integrated_gradients(encoder, *same, good.astype(np.float32), nodes)
    return Explanation(wavelength, attribution, distance2, np.where(mask, np.nan, flux).astype(np.float64),
                       np.where(ref_mask, np.nan, ref_flux).astype(np.float64), good, medium)


def explain_rows(model_dir: str | Path, flux: np.ndarray, mask: np.ndarray, ref_flux: np.ndarray,
                 ref_mask: np.ndarray, nodes: int = NODES) -> Explanation:
    """:func:`explain` for one spectrum each on the store's grid (a row of the archive's
    :class:`SpectrumStore`, or an upload after :meth:`Preprocessing.apply`), sampled as the model
    reads them."""
    rows = model_sampled(np.vstack([flux, ref_flux]), np.vstack([mask, ref_mask]), model_dir)
    return explain(model_dir, rows[0][0], rows[1][0], rows[0][1], rows[1][1], nodes)

