"""Resampling conserves flux, is exact on identical grids and carries masks along."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vo_ml.spectra.grid import Grid, downsample, normalise_median, resample


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


def test_air_vacuum_conversion_matches_known_lines_and_round_trips():
    from vo_ml.spectra.grid import air_to_vacuum, vacuum_to_air

    # H-alpha and Na D2: air 6562.80 / 5889.95 A are vacuum 6564.61 / 5891.58 A.
    assert air_to_vacuum(np.array([6562.80, 5889.95])) == pytest.approx([6564.61, 5891.58], abs=0.01)
    wavelength = np.linspace(3500.0, 9000.0, 50)
    assert vacuum_to_air(air_to_vacuum(wavelength)) == pytest.approx(wavelength, abs=1e-6)


def test_doppler_shift_to_rest_removes_a_radial_velocity():
    from vo_ml.spectra.grid import SPEED_OF_LIGHT_KMS, doppler_to_rest

    observed = np.array([5000.0]) * (1 + 30.0 / SPEED_OF_LIGHT_KMS)
    assert doppler_to_rest(observed, 30.0) == pytest.approx([5000.0], abs=1e-3)


def test_continuum_normalisation_puts_the_continuum_at_one_despite_lines():
    from vo_ml.spectra.grid import normalise_continuum

    wavelength = np.linspace(4000.0, 6000.0, 4000)
    continuum = 2.0 + 1e-3 * (wavelength - 4000.0)
    lines = 1 - 0.6 * np.exp(-0.5 * ((wavelength[:, None] - np.arange(4050, 6000, 50)) / 1.5) ** 2)
    flux = continuum * lines.prod(axis=1)
    normalised = normalise_continuum(wavelength, flux, np.zeros(flux.size, bool))
    line_free = lines.prod(axis=1) > 0.999
    assert np.median(normalised[line_free]) == pytest.approx(1.0, abs=0.01)


def test_preprocessing_masks_gaps_and_refuses_an_unknown_rest_frame():
    from conftest import HARPS_CUT

    from vo_ml.spectra.grid import Preprocessing
    from vo_ml.spectra.readers import read_spectrum

    spectrum = read_spectrum(HARPS_CUT)
    config = {"grid": {"start": 3800, "stop": 3950, "pixels": 1500, "spacing": "log"},
              "preprocess": {"gaps": [[3850.0, 3860.0]], "normalise": "continuum"}}
    flux, mask = Preprocessing.from_config(config).apply(spectrum)
    centres = Preprocessing.from_config(config).grid.centres
    assert mask[(centres > 3851) & (centres < 3859)].all()
    assert not mask[(centres > 3870) & (centres < 3940)].any()
    assert np.all(flux[mask] == 0)
    config["preprocess"]["frame"] = "rest"
    with pytest.raises(ValueError, match="radial velocity is not known"):
        Preprocessing.from_config(config).apply(spectrum)
    assert Preprocessing.from_config(config).apply(spectrum, radial_velocity=-21.6)[1].size == 1500


def test_gaps_are_masked_where_they_are_observed_not_where_they_move_to():
    """A detector gap sits at fixed observed wavelengths: a 300 km/s star's rest-frame spectrum
    must be masked 5 A blueward of the window, not at the window itself."""
    from astropy import units as u

    from vo_ml.spectra.grid import Preprocessing
    from vo_ml.spectra.record import Spectrum, SpectrumMeta

    wavelength = np.linspace(4900.0, 5100.0, 20001)
    spectrum = Spectrum(wavelength * u.AA, np.ones(wavelength.size), np.zeros(wavelength.size, bool),
                        SpectrumMeta("synthetic", "0"), frame="barycentric")
    config = {"grid": {"start": 4910, "stop": 5090, "pixels": 1800, "spacing": "linear"},
              "preprocess": {"frame": "rest", "gaps": [[5000.0, 5010.0]]}}
    preprocessing = Preprocessing.from_config(config)
    _, mask = preprocessing.apply(spectrum, radial_velocity=300.0)
    centres = preprocessing.grid.centres
    assert mask[(centres > 4996) & (centres < 5004)].all()
    assert not mask[(centres > 5007) & (centres < 5015)].any()


def test_downsampling_averages_the_good_pixels_of_each_group():
    rng = np.random.default_rng(5)
    flux = rng.normal(1, 0.1, (4, 103)).astype(np.float32)
    mask = rng.random((4, 103)) < 0.4
    mask[0, :8] = True
    out, out_mask = downsample(flux, mask, 4)
    good = ~mask[:, :100].reshape(4, -1, 4)
    counts = good.sum(axis=2)
    expected = np.where(good, flux[:, :100].reshape(4, -1, 4), 0).sum(axis=2) / np.maximum(counts, 1)
    np.testing.assert_array_equal(out_mask, counts == 0)
    np.testing.assert_allclose(out, np.where(counts == 0, 0, expected), rtol=1e-6)
    assert out_mask[0, :2].all() and out.dtype == np.float32
