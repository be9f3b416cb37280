"""Resampling conserves flux, is exact on identical grids and carries masks along."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vo_ml.spectra.grid import Grid, normalise_median, resample


def _edges_to_centres(edges):
    return 0.5 * (edges[1:] + edges[:-1])


def test_identity_resampling_returns_the_input():
    edges = np.linspace(4000.0, 5000.0, 101)
    flux = np.random.default_rng(1).uniform(0.5, 1.5, 100)
    out, mask = resample(_edges_to_centres(edges), flux, np.zeros(100, bool), edges)
    assert out == pytest.approx(flux)
    assert not mask.any()


@settings(max_examples=60, deadline=None)
@given(
    pixels=st.integers(20, 400),
    factor=st.integers(1, 8),
    seed=st.integers(0, 2**32 - 1),
)
def test_total_flux_is_conserved_when_binning_down(pixels, factor, seed):
    fine = np.linspace(4000.0, 4100.0, pixels * factor + 1)
    flux = np.random.default_rng(seed).uniform(0.0, 2.0, pixels * factor)
    coarse = fine[::factor]
    out, mask = resample(_edges_to_centres(fine), flux, np.zeros(flux.size, bool), coarse)
    assert not mask.any()
    assert (out * np.diff(coarse)).sum() == pytest.approx((flux * np.diff(fine)).sum(), rel=1e-9)


@settings(max_examples=40, deadline=None)
@given(start=st.integers(0, 90), width=st.integers(1, 9))
def test_masked_input_masks_the_output_pixels_it_dominates(start, width):
    edges = np.linspace(4000.0, 4100.0, 101)
    flux = np.ones(100)
    mask = np.zeros(100, bool)
    mask[start:start + width] = True
    out, out_mask = resample(_edges_to_centres(edges), flux, mask, edges)
    assert (out_mask == mask).all()
    assert np.isnan(out[mask]).all() and out[~mask] == pytest.approx(1.0)


def test_pixels_outside_the_spectrum_are_masked():
    edges = np.linspace(3000.0, 6000.0, 31)
    wavelength = np.linspace(4000.5, 4999.5, 1000)
    out, mask = resample(wavelength, np.ones(1000), np.zeros(1000, bool), edges)
    assert mask[:10].all() and mask[20:].all() and not mask[10:20].any()


def test_median_normalisation_ignores_masked_pixels():
    flux = np.array([2.0, 4.0, 6.0, 1000.0])
    assert normalise_median(flux, np.array([False, False, False, True])) == pytest.approx(flux / 4)
    with pytest.raises(ValueError, match="every pixel is masked"):
        normalise_median(flux, np.ones(4, bool))


def test_log_grid_has_constant_velocity_steps():
    grid = Grid.from_config({"start": 3545, "stop": 7405, "pixels": 4096, "spacing": "log"})
    ratios = grid.edges[1:] / grid.edges[:-1]
    assert ratios == pytest.approx(np.full(4096, ratios[0]))
    with pytest.raises(ValueError, match="spacing"):
        Grid.from_config({"start": 1, "stop": 2, "pixels": 3, "spacing": "cubic"})
