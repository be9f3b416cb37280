"""Spectra from elsewhere (an upload, another instrument's file) prepared as the archive's own
were, and which of them a model can encode at all.

One home for both rules: the service's ``ml_encode`` (:mod:`vo_ml.service.encoding`) and the
evaluation's probe files and perturbed spectra (:mod:`vo_ml.ml.probes`,
:mod:`vo_ml.ml.invariance`) follow them, so the report measures what the service answers.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from vo_ml.spectra.grid import Preprocessing
from vo_ml.spectra.record import Spectrum

__all__ = ["FLAT", "MIN_GOOD_PIXELS", "encodable", "recorded_preprocessing"]

#: The fewest finite flux values, and good pixels on the model's grid, a spectrum needs to be
#: encoded: fewer say next to nothing of a star, and the model would answer as confidently.
MIN_GOOD_PIXELS = 32
#: A spectrum whose normalised good pixels all lie within this relative spread is flat: it has
#: no feature to compare.
FLAT = 1e-6


def recorded_preprocessing(grid: dict, steps: dict) -> Preprocessing:
    """The preprocessing a store recorded at ingest (its grid and ``preprocess`` steps), for
    spectra from elsewhere. Those have no catalogue velocity: in the rest frame they are taken
    as they are."""
    preprocessing = Preprocessing.from_config({"grid": grid, "preprocess": steps})
    if preprocessing.frame == "rest":
        return dataclasses.replace(preprocessing, frame="as-is")
    return preprocessing


def encodable(spectrum: Spectrum, preprocessing: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """The spectrum on the model's grid, normalised, and its mask, when the model can encode it.

    A spectrum that is all NaN, has fewer than :data:`MIN_GOOD_PIXELS` finite values or good
    pixels on the grid, has no positive median flux (all zero, say), is flat or is not finite
    once prepared would still get a latent vector, and neighbours that look as sure as any: it
    is refused instead, with a ValueError that starts with the spectrum's source and says why
    and what to do.
    """
    where = spectrum.meta.source
    finite = spectrum.flux[np.isfinite(spectrum.flux) & ~spectrum.mask]
    if not finite.size:
        raise ValueError(f"{where}: every flux value is NaN (or infinite), so there is nothing "
                         "to encode; upload the spectrum's measured fluxes")
    if finite.size < MIN_GOOD_PIXELS:
        raise ValueError(f"{where}: the spectrum has only {finite.size} finite flux values, too "
                         f"short to encode (at least {MIN_GOOD_PIXELS} are needed); upload the "
                         "whole spectrum")
    median = float(np.median(finite))
    if not median > 0:
        held = "every flux value is 0" if not finite.any() else f"its median flux is {median:g}"
        raise ValueError(f"{where}: {held}; the model compares spectra divided by their flux "
                         "level (median or pseudo-continuum), so upload flux densities (positive, "
                         "not continuum-subtracted)")
    flux, mask = preprocessing.apply(spectrum)
    good = flux[~mask]
    grid = preprocessing.grid
    if good.size < MIN_GOOD_PIXELS:
        raise ValueError(f"{where}: only {good.size} of the model's {grid.pixels} pixels "
                         f"({grid.start:.0f}-{grid.stop:.0f} A) have good flux, too few to "
                         f"encode (at least {MIN_GOOD_PIXELS} are needed); upload a spectrum "
                         "that covers more of that range")
    if not np.isfinite(good).all():
        raise ValueError(f"{where}: the flux is not finite after preparation")
    if np.ptp(good) <= FLAT * abs(float(np.median(good))):
        raise ValueError(f"{where}: the flux is the same at every good pixel (a flat line), "
                         "which has no feature to compare; upload an observed spectrum")
    return flux, mask
