"""The 2-D map of a latent space (the archive's ``ml_x``, ``ml_y``), and the principal components
it is made of, which the evaluation's PCA baselines use too.

A 2-D latent is its own map. A wider one is projected on its first two principal components over
the training spectra, fitted once when the model is trained and saved beside it, so that every
later embedding of the archive lands on the same map.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["IDENTITY", "PROJECTION_NAME", "PrincipalComponents", "map_xy", "pca_projection",
           "save_projection"]

PROJECTION_NAME = "projection.npz"
#: The card's projection of a 2-D latent space.
IDENTITY = {"method": "identity"}


@dataclass(frozen=True)
class PrincipalComponents:
    """The centre and principal axes (rows, strongest first) of some data, and the data's
    variance along each axis."""

    centre: np.ndarray
    axes: np.ndarray
    variances: np.ndarray

    @classmethod
    def fit(cls, data: np.ndarray, centre: np.ndarray | float | None = None) -> PrincipalComponents:
        """The components of ``data`` about ``centre`` (its own mean unless given)."""
        centre = data.mean(axis=0) if centre is None else centre
        _, singular, axes = np.linalg.svd(data - centre, full_matrices=False)
        return cls(centre, axes, singular**2 / max(len(data), 1))

    def project(self, data: np.ndarray, dimensions: int) -> np.ndarray:
        return (data - self.centre) @ self.axes[:dimensions].T

    def reconstruct(self, data: np.ndarray, dimensions: int) -> np.ndarray:
        return self.project(data, dimensions) @ self.axes[:dimensions] + self.centre


def pca_projection(data: np.ndarray, dimensions: int) -> np.ndarray:
    """The data projected on its first principal components."""
    return PrincipalComponents.fit(data).project(data, dimensions)


def save_projection(latent: np.ndarray, model_dir: Path) -> dict:
    """Fit the map on the training spectra's ``latent`` vectors, save it in ``model_dir`` and
    return the card's entry naming it."""
    pca = PrincipalComponents.fit(latent)
    components = pca.axes[:2] if pca.axes.shape[0] >= 2 else np.eye(2, latent.shape[1])
    np.savez(Path(model_dir) / PROJECTION_NAME, mean=pca.centre, components=components)
    return {"method": "pca", "file": PROJECTION_NAME}


def map_xy(latent: np.ndarray, card: dict, model_dir: Path) -> np.ndarray:
    """The map position of each latent vector, by the projection the model's card names."""
    projection = card.get("projection", IDENTITY)
    if projection["method"] == "identity":
        return latent
    with np.load(Path(model_dir) / projection["file"]) as saved:
        return (latent - saved["mean"]) @ saved["components"].T
