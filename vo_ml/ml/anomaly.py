"""Anomaly scores: how unlike the archive's spectra a spectrum is, from 0 to 1.

Two signs, each measured against the archive's own spread:

- the model reconstructs it badly: its reconstruction error over what noise and the model's
  usual error explain (``sqrt(floor**2 + noise**2)``, the noise 1/SNR where the S/N is known,
  the archive's median noise elsewhere);
- it sits alone in the latent space: its distance to its ``NEIGHBOURS``-th nearest archive
  spectrum (from the neighbour index).

Each is put on a robust z scale (log of the value, centred on the archive's median, in units
of 1.4826 times its median absolute deviation) and the larger counts, so a spectrum odd in
either way is found. The score is a logistic of that z, one half at ``MIDPOINT`` robust
sigmas: about 0.05 for a typical archive spectrum, above 0.5 for one that is more than three
sigmas out, and it keeps ranking (ORDER BY ml_anomaly DESC) far beyond the archive's extremes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["AnomalyScale", "NEIGHBOURS", "MIDPOINT", "noise_of_snr"]

#: The neighbour whose distance measures how alone a spectrum is (the archive's own excluded).
NEIGHBOURS = 5
#: Robust sigmas at which the score is one half.
MIDPOINT = 3.0


def noise_of_snr(snr: np.ndarray) -> np.ndarray:
    """The noise of normalised flux of a spectrum with signal-to-noise ``snr`` (NaN unknown)."""
    snr = np.asarray(snr, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.isfinite(snr) & (snr > 0), 1.0 / snr, np.nan)


def _robust_scale(values: np.ndarray) -> tuple[float, float]:
    """Median and 1.4826 x MAD of the logarithm of positive values."""
    logs = np.log(np.maximum(values, np.finfo(float).tiny))
    centre = float(np.median(logs))
    spread = float(1.4826 * np.median(np.abs(logs - centre)))
    return centre, spread if spread > 0 else 1.0


@dataclass(frozen=True)
class AnomalyScale:
    """The archive's spread of both signs, against which any spectrum is scored."""

    #: The archive's median reconstruction error: the model's own share of an error.
    floor: float
    #: The archive's median noise, for spectra whose S/N is unknown.
    typical_noise: float
    recon: tuple[float, float]
    density: tuple[float, float]

    @classmethod
    def of_archive(cls, recon_error: np.ndarray, noise: np.ndarray, kth_distance: np.ndarray
                   ) -> AnomalyScale:
        """The scale of the archive's spectra: their reconstruction errors, noise (NaN where
        unknown) and distances to their own ``NEIGHBOURS``-th nearest other spectrum."""
        recon_error = np.asarray(recon_error, float)
        known = np.asarray(noise, float)[np.isfinite(noise)]
        floor = float(np.median(recon_error))
        typical = float(np.median(known)) if known.size else 0.0
        scale = cls(floor, typical, (0.0, 1.0), (0.0, 1.0))
        return cls(floor, typical, _robust_scale(scale.explained(recon_error, noise)),
                   _robust_scale(np.asarray(kth_distance, float)))

    def explained(self, recon_error: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """Reconstruction errors over what noise and the model's usual error explain."""
        noise = np.where(np.isfinite(noise), noise, self.typical_noise)
        return np.asarray(recon_error, float) / np.hypot(self.floor, noise)

    def sigmas(self, recon_error: np.ndarray, noise: np.ndarray, kth_distance: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        """How many robust sigmas beyond the archive's typical each spectrum's reconstruction
        error and isolation are."""
        explained = np.log(np.maximum(self.explained(recon_error, noise), np.finfo(float).tiny))
        distance = np.log(np.maximum(np.asarray(kth_distance, float), np.finfo(float).tiny))
        return ((explained - self.recon[0]) / self.recon[1],
                (distance - self.density[0]) / self.density[1])

    def score(self, recon_error: np.ndarray, noise: np.ndarray, kth_distance: np.ndarray
              ) -> np.ndarray:
        """The anomaly score in [0, 1] of each spectrum."""
        recon, density = self.sigmas(recon_error, noise, kth_distance)
        return 1.0 / (1.0 + np.exp(-(np.maximum(recon, density) - MIDPOINT)))
