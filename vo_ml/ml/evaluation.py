"""How physical a latent space is: do neighbours share the labels of the star they surround?

The score is the median, over query stars and their ``k`` nearest neighbours, of the relative
difference of a label (|dTeff|/Teff) or its absolute difference (log g, [Fe/H]). The same score on
PCA projections and on the raw flux, computed on the same spectra, gives the baselines
(:mod:`vo_ml.ml.report` puts them side by side).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["nearest_neighbours", "neighbour_label_error", "label_errors", "score", "FGK", "LABELS",
           "NEIGHBOURS", "Representation", "Encoder", "distances", "nearest_rows", "median_nn_distance"]

#: Effective temperatures of F, G and K stars, in K.
FGK = (3900.0, 7500.0)
#: The labels scored, and whether each is compared relatively (Teff) or absolutely.
LABELS = {"teff": True, "logg": False, "feh": False}
NEIGHBOURS = (1, 5, 10)


def nearest_neighbours(points: np.ndarray, k: int, queries: np.ndarray | None = None,
                       groups: np.ndarray | None = None) -> np.ndarray:
    """Indices of the ``k`` nearest points (Euclidean, nearest first) of each query point (all
    points when ``queries`` is None), shape (queries, k). A point is never its own neighbour,
    nor is any point of its group (another spectrum of the same star, when ``groups`` names
    stars): those would share its labels by construction."""
    chosen = np.arange(len(points)) if queries is None else np.flatnonzero(queries)
    distance = distances(np.asarray(points)[chosen], points)
    distance[np.arange(chosen.size), chosen] = np.inf
    if groups is not None:
        distance[groups[chosen, None] == groups[None, :]] = np.inf
    return nearest_rows(distance, k)


def label_errors(neighbours: np.ndarray, label: np.ndarray, queries: np.ndarray, k: int,
                 relative: bool) -> float:
    """Median difference between the label of each query and those of its first ``k``
    neighbours; pairs where either label is unknown (NaN) are left out."""
    own = label[queries][:, None]
    difference = np.abs(label[neighbours[:, :k]] - own)
    if relative:
        difference = difference / own
    return float(np.nanmedian(difference))


def neighbour_label_error(
    points: np.ndarray, label: np.ndarray, queries: np.ndarray, k: int = 5, relative: bool = False,
    groups: np.ndarray | None = None,
) -> float:
    """Median label difference between each query point and its ``k`` neighbours among all
    points (see :func:`nearest_neighbours`)."""
    return label_errors(nearest_neighbours(points, k, queries, groups), label, queries, k, relative)


def distances(queries: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Euclidean distances of each query to each point, shape (queries, points)."""
    queries = np.asarray(queries, dtype=np.float64)
    points = np.asarray(points, dtype=np.float64)
    squared = np.sum(queries**2, axis=1)[:, None] + np.sum(points**2, axis=1)[None, :]
    return np.sqrt(np.maximum(squared - 2.0 * queries @ points.T, 0.0))


def nearest_rows(distance: np.ndarray, k: int) -> np.ndarray:
    """The columns of the ``k`` smallest distances of each row, nearest first; a column to leave
    out of a row gets an infinite distance there."""
    k = min(k, distance.shape[1])
    nearest = np.argpartition(distance, k - 1, axis=1)[:, :k]
    order = np.argsort(np.take_along_axis(distance, nearest, axis=1), axis=1)
    return np.take_along_axis(nearest, order, axis=1)


def median_nn_distance(points: np.ndarray) -> float:
    """The archive's own distance scale: the median distance from a point to its nearest other
    point. A spectrum that lands farther than this from somewhere is farther than archive
    neighbours are from each other."""
    distance = distances(points, points)
    np.fill_diagonal(distance, np.inf)
    return float(np.median(distance.min(axis=1)))


#: Points, in a representation's space, of spectra on the store's grid (flux, mask as
#: :meth:`Preprocessing.apply` leaves them).
Encoder = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class Representation:
    """Points in some space for every store row, and where they came from."""

    name: str
    dimensions: int
    points: np.ndarray
    kind: str  # "latent", "pca" or "raw"
    family: str = ""
    map_xy: np.ndarray | None = None
    model_dir: Path | None = None
    recon_rms: float | None = None
    #: For a model: PCA's reconstruction error at the same dimension and sampling.
    pca_recon_rms: float | None = None
    pixels: int = 0
    scores: dict = field(default_factory=dict)
    #: How spectra from outside the archive get their points, as the archive's rows got theirs.
    encode: Encoder | None = None

    @functools.cached_property
    def scale(self) -> float:
        """The archive's median nearest-neighbour distance in this space."""
        return median_nn_distance(self.points)


def score(representation: Representation, labels: dict[str, np.ndarray], queries: np.ndarray,
          groups: np.ndarray, neighbours: Sequence[int] = NEIGHBOURS) -> dict:
    """Median label differences of the query rows' neighbours, for each k and label."""
    nearest = nearest_neighbours(representation.points, max(neighbours), queries, groups)
    return {k: {label: label_errors(nearest, labels[label], queries, k, relative)
                for label, relative in LABELS.items()} for k in neighbours}
