"""How physical a latent space is: do neighbours share the labels of the star they surround?

The score is the median, over query stars and their ``k`` nearest neighbours, of the relative
difference of a label (|dTeff|/Teff) or its absolute difference (log g, [Fe/H]). The same score on
PCA projections and on the raw flux, computed on the same spectra, gives the baselines.
"""

from __future__ import annotations

import numpy as np

__all__ = ["nearest_neighbours", "neighbour_label_error", "pca_projection", "FGK"]

#: Effective temperatures of F, G and K stars, in K.
FGK = (3900.0, 7500.0)


def nearest_neighbours(points: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` nearest other points of every point (Euclidean), shape (n, k)."""
    squared = np.sum(points**2, axis=1)
    distances = squared[:, None] + squared[None, :] - 2.0 * points @ points.T
    np.fill_diagonal(distances, np.inf)
    return np.argsort(distances, axis=1)[:, :k]


def neighbour_label_error(
    points: np.ndarray, label: np.ndarray, queries: np.ndarray, k: int = 5, relative: bool = False
) -> float:
    """Median label difference between each query point and its ``k`` neighbours.

    ``queries`` is a boolean selection of query points; neighbours come from all points, and
    pairs where either label is unknown (NaN) are left out.
    """
    neighbours = nearest_neighbours(points, k)[queries]
    own = label[queries][:, None]
    difference = np.abs(label[neighbours] - own)
    if relative:
        difference = difference / own
    return float(np.nanmedian(difference))


def pca_projection(data: np.ndarray, dimensions: int) -> np.ndarray:
    """The data projected on its first principal components."""
    centred = data - data.mean(axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    return centred @ components[:dimensions].T
