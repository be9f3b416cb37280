"""Anomaly scores: how unlike the archive's spectra a spectrum is, from 0 to 1.

Three signs, each measured against the archive's own spread:

- **reconstruction**: the model reconstructs it badly; its reconstruction error over what noise
  and the model's usual error explain (``sqrt(floor**2 + noise**2)``, the noise 1/SNR where
  the S/N is known, the archive's median noise elsewhere);
- **isolation**: it sits far from the archive in the latent space; its distance to its
  ``NEIGHBOURS``-th nearest archive spectrum (from the neighbour index);
- **relative isolation**: it sits farther from its neighbours than they sit from theirs; that
  distance over the median of its neighbours' own. A blend of two unlike stars falls between
  groups of stars, in a gap no denser part of the archive explains, which the plain distance
  misses where the archive is sparse anyway.

Each is put on a robust z scale (log of the value, centred on the archive's median, in units
of 1.4826 times its median absolute deviation) and the largest counts (one that cannot be
measured does not), so a spectrum odd in any way is found. The score is a logistic of that z,
one half at ``MIDPOINT`` robust sigmas: about 0.05 for a typical archive spectrum, above 0.5
for one more than three sigmas out, and it keeps ranking (ORDER BY ml_anomaly DESC) far beyond
the archive's extremes.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

__all__ = ["AnomalyScale", "NEIGHBOURS", "MIDPOINT", "SIGNS", "noise_of_snr"]

#: The neighbour whose distance measures how alone a spectrum is (the archive's own excluded).
NEIGHBOURS = 5
#: Robust sigmas at which the score is one half.
MIDPOINT = 3.0
#: The signs, in the order :meth:`AnomalyScale.sigmas` returns them.
SIGNS = ("reconstruction", "isolation", "relative isolation")


def noise_of_snr(snr: np.ndarray) -> np.ndarray:
    """The noise of normalised flux of a spectrum with signal-to-noise ``snr`` (NaN unknown)."""
    snr = np.asarray(snr, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.isfinite(snr) & (snr > 0), 1.0 / snr, np.nan)


def _logs(values: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(np.asarray(values, float), np.finfo(float).tiny))


def _robust_scale(values: np.ndarray) -> tuple[float, float]:
    """Median and 1.4826 x MAD of the logarithm of positive values."""
    logs = _logs(values)
    centre = float(np.median(logs))
    spread = float(1.4826 * np.median(np.abs(logs - centre)))
    return centre, spread if spread > 0 else 1.0


@dataclass(frozen=True)
class AnomalyScale:
    """The archive's spread of every sign, against which any spectrum is scored; and the
    distance of each archive row (by id) to its own ``NEIGHBOURS``-th nearest other row."""

    #: The archive's median reconstruction error: the model's own share of an error.
    floor: float
    #: The archive's median noise, for spectra whose S/N is unknown.
    typical_noise: float
    #: (centre, spread) of each of :data:`SIGNS`, on the log scale.
    scales: tuple[tuple[float, float], ...]
    row_ids: np.ndarray
    row_isolation: np.ndarray

    @classmethod
    def of_archive(cls, recon_error: np.ndarray, noise: np.ndarray, row_ids: np.ndarray,
                   neighbour_ids: np.ndarray, neighbour_distances: np.ndarray) -> AnomalyScale:
        """The scale of the archive's rows: their reconstruction errors, noise (NaN where
        unknown), ids, and the ids and distances of their ``NEIGHBOURS`` nearest other rows,
        nearest first."""
        recon_error = np.asarray(recon_error, float)
        known = np.asarray(noise, float)[np.isfinite(noise)]
        order = np.argsort(row_ids)
        isolation = np.asarray(neighbour_distances, float)[:, NEIGHBOURS - 1]
        partial = cls(float(np.median(recon_error)), float(np.median(known)) if known.size else 0.0,
                      ((0.0, 1.0),) * len(SIGNS), np.asarray(row_ids)[order], isolation[order])
        signs = partial.signs(recon_error, noise, neighbour_ids, neighbour_distances)
        return cls(partial.floor, partial.typical_noise, tuple(map(_robust_scale, signs)),
                   partial.row_ids, partial.row_isolation)

    def signs(self, recon_error: np.ndarray, noise: np.ndarray, neighbour_ids: np.ndarray,
              neighbour_distances: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each of :data:`SIGNS` of spectra with these reconstruction errors and noise, whose
        ``NEIGHBOURS`` nearest archive rows are ``neighbour_ids`` at ``neighbour_distances``."""
        noise = np.where(np.isfinite(noise), noise, self.typical_noise)
        explained = np.asarray(recon_error, float) / np.hypot(self.floor, noise)
        isolation = np.asarray(neighbour_distances, float)[:, NEIGHBOURS - 1]
        theirs = self._isolation_of(np.asarray(neighbour_ids)[:, :NEIGHBOURS])
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a row of unknown neighbours: NaN
            typical = np.nanmedian(theirs, axis=1)
        return explained, isolation, isolation / np.maximum(typical, np.finfo(float).tiny)

    def _isolation_of(self, ids: np.ndarray) -> np.ndarray:
        """The archive rows' own isolation by id; NaN for an id the scale does not know (a
        row ingested after the tags were made)."""
        found = np.minimum(np.searchsorted(self.row_ids, ids), len(self.row_ids) - 1)
        return np.where(self.row_ids[found] == ids, self.row_isolation[found], np.nan)

    def sigmas(self, *measured: np.ndarray) -> tuple[np.ndarray, ...]:
        """How many robust sigmas beyond the archive's typical each sign is, for the arguments
        of :meth:`signs`."""
        return tuple((_logs(sign) - centre) / spread
                     for sign, (centre, spread) in zip(self.signs(*measured), self.scales,
                                                       strict=True))

    def score(self, recon_error: np.ndarray, noise: np.ndarray, neighbour_ids: np.ndarray,
              neighbour_distances: np.ndarray) -> np.ndarray:
        """The anomaly score in [0, 1] of each spectrum (arguments as :meth:`signs`)."""
        worst = np.fmax.reduce(self.sigmas(recon_error, noise, neighbour_ids, neighbour_distances))
        return 1.0 / (1.0 + np.exp(-(worst - MIDPOINT)))
