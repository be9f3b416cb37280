"""How close can any estimate from half a spectrum come to the whole spectrum's latent point?

    python docs/evaluation/half_coverage_bound.py work/miles.miles.spectra.x4.zarr

Issue 15 asks that an upload covering half of the model's range land within the archive's
median nearest-neighbour distance of its full-range counterpart. This script bounds what any
estimator can reach under the archive's own Gaussian model (probabilistic PCA fitted to every
spectrum of the store, so the bound is optimistic: the test spectra are in the fit). For the
leading L principal components (the space PCA-L and the PCA-anchored encoders use), the
expected squared error of the best estimate from the observed pixels is the trace of the
posterior covariance of those components given the pixels; its square root over the median
nearest-neighbour distance in the same space is printed for the red and the blue half, with
K components in the model (the rest is noise). A ratio above 1 means that even the Bayes
estimate lands farther than archive neighbours are apart, on average.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import zarr


def main(store: str) -> None:
    group = zarr.open(store, mode="r")
    good = ~np.asarray(group["mask"][:])
    flux = np.where(good, np.asarray(group["flux"][:], np.float64), np.nan)
    complete = good.mean(axis=1) > 0.95
    flux = flux[complete]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a pixel no spectrum covers: mean 1
        mean = np.nan_to_num(np.nanmean(flux, axis=0), nan=1.0)
    centred = np.where(np.isfinite(flux), flux, mean) - mean
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    variances = singular**2 / (len(centred) - 1)
    pixels = centred.shape[1]
    red = np.arange(pixels) >= pixels // 2
    print(f"{len(centred)} spectra of {pixels} pixels")
    for count in (64, 256, 512):
        basis = components[:count].T
        noise = variances[count:].sum() / (pixels - count)
        for leading in (8, 16, 32, 128):
            if leading > count:
                continue
            scores = centred @ components[:leading].T
            squared = (scores**2).sum(1)[:, None] + (scores**2).sum(1)[None] - 2 * scores @ scores.T
            np.fill_diagonal(squared, np.inf)
            scale = np.median(np.sqrt(np.maximum(squared.min(axis=1), 0)))
            ratios = []
            for half in (red, ~red):
                seen = basis[half]
                posterior = np.linalg.inv(np.diag(1 / variances[:count]) + seen.T @ seen / noise)
                ratios.append(np.sqrt(np.trace(posterior[:leading, :leading])) / scale)
            print(f"K={count:3d} L={leading:3d}: red half {ratios[0]:.2f}, blue half "
                  f"{ratios[1]:.2f} archive nearest-neighbour distances")


if __name__ == "__main__":
    main(sys.argv[1])
