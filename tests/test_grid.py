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
    from vo_ml.spectra.velocity import air_to_vacuum, vacuum_to_air

    # H-alpha and Na D2: air 6562.80 / 5889.95 A are vacuum 6564.61 / 5891.58 A.
    assert air_to_vacuum(np.array([6562.80, 5889.95])) == pytest.approx([6564.61, 5891.58], abs=0.01)
    wavelength = np.linspace(3500.0, 9000.0, 50)
    assert vacuum_to_air(air_to_vacuum(wavelength)) == pytest.approx(wavelength, abs=1e-6)


def test_doppler_shift_to_rest_removes_a_radial_velocity():
    from vo_ml.spectra.velocity import SPEED_OF_LIGHT_KMS, doppler_to_rest

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


# --- preprocessing that follows the star: a real MILES spectrum, perturbed as instruments do ---


def _miles_star(star: str = "m0067"):
    from conftest import MILES

    from vo_ml.spectra.readers import read_spectrum

    return read_spectrum(MILES / f"MILES_res2.50_star_{star}V.fits")


def _demo_preprocessing():
    from vo_ml.pipeline import ArchiveConfig
    from vo_ml.resources import config_file, load_yaml

    return ArchiveConfig.from_dict(load_yaml(config_file("miles"))).preprocessing


def _with_flux(spectrum, flux=None, wavelength=None):
    from dataclasses import replace

    return replace(spectrum, flux=spectrum.flux if flux is None else flux,
                   wavelength=spectrum.wavelength if wavelength is None else wavelength)


def _rms(a, b, mask):
    return float(np.sqrt(np.mean(np.square(a - b)[~mask])))


@pytest.mark.parametrize("velocity", [-250.0, 30.0, 100.0])
def test_a_measured_velocity_is_removed(velocity):
    """tau Ceti redshifted or blueshifted comes out as it went in: its velocity is measured from
    its lines and removed; as-is, the same shift changes it ten times as much."""
    from dataclasses import replace

    from vo_ml.spectra.velocity import SPEED_OF_LIGHT_KMS

    star, preprocessing = _miles_star(), _demo_preprocessing()
    shifted = _with_flux(star, wavelength=star.wavelength * (1 + velocity / SPEED_OF_LIGHT_KMS))
    flux, mask = preprocessing.apply(star)
    moved, moved_mask = preprocessing.apply(shifted)
    unmeasured, _ = replace(preprocessing, frame="as-is").apply(shifted)
    both = mask | moved_mask
    assert _rms(moved, flux, both) < 0.1 * _rms(unmeasured, flux, both)


def test_measure_velocity_finds_a_shift_to_a_few_km_s():
    from dataclasses import replace

    from vo_ml.spectra.velocity import SPEED_OF_LIGHT_KMS, measure_velocity

    star, preprocessing = _miles_star("m0069"), replace(_demo_preprocessing(), frame="as-is")
    found = []
    for velocity in (0.0, 120.0):
        shifted = _with_flux(star, wavelength=star.wavelength * (1 + velocity / SPEED_OF_LIGHT_KMS))
        flux, mask = preprocessing.apply(shifted)
        found.append(measure_velocity(preprocessing.grid.centres, flux, np.asarray(mask), 2.5))
    assert found[1] - found[0] == pytest.approx(120.0, abs=3.0)
    flat, mask = np.ones(preprocessing.grid.pixels), np.ones(preprocessing.grid.pixels, bool)
    assert measure_velocity(preprocessing.grid.centres, flat, mask, 2.5) is None


@pytest.mark.parametrize("calibration", [
    pytest.param(lambda w: (w / 5000.0) ** -4, id="steep blue tilt"),
    pytest.param(lambda w: (w / 5000.0) ** 3, id="red tilt"),
    pytest.param(lambda w: np.exp(0.3 * ((w - 5400) / 2000) ** 3 - 0.2 * (w - 5400) / 2000),
                 id="smooth cubic"),
])
def test_the_pseudo_continuum_takes_out_the_flux_calibration(calibration):
    """A smooth flux calibration error leaves the normalised spectrum within 0.5% RMS (found in
    one pass, the envelope of a steep slope sat 1.3% too high)."""
    star, preprocessing = _miles_star(), _demo_preprocessing()
    flux, mask = preprocessing.apply(star)
    wavelength = star.wavelength.value
    changed, changed_mask = preprocessing.apply(_with_flux(star, star.flux * calibration(wavelength)))
    assert _rms(changed, flux, mask | changed_mask) < 0.005


def test_noise_barely_raises_the_pseudo_continuum():
    """The envelope is found on smoothed flux: at S/N 20 the normalised spectrum drops by under
    2% (unsmoothed, the 90th percentile of the noise lowered it by 5%)."""
    star, preprocessing = _miles_star(), _demo_preprocessing()
    flux, mask = preprocessing.apply(star)
    noisy_flux = star.flux + np.random.default_rng(5).normal(0, np.nanmedian(star.flux) / 20, star.flux.size)
    noisy, noisy_mask = preprocessing.apply(_with_flux(star, noisy_flux))
    both = mask | noisy_mask
    assert abs(np.median(noisy[~both]) - np.median(flux[~both])) < 0.02


def test_a_partial_spectrum_gets_the_continuum_of_its_whole():
    star, preprocessing = _miles_star(), _demo_preprocessing()
    flux, mask = preprocessing.apply(star)
    keep = star.wavelength.value < 5560.0
    cut = _with_flux(star, np.asarray(star.flux)[keep], star.wavelength[keep])
    from dataclasses import replace

    cut = replace(cut, mask=np.asarray(star.mask)[keep])
    half, half_mask = preprocessing.apply(cut)
    covered = ~half_mask & ~mask & (preprocessing.grid.centres < 5400.0)
    assert covered.sum() > 1500
    assert np.sqrt(np.mean(np.square(half - flux)[covered])) < 0.01


def test_a_spectrum_without_its_resolution_is_taken_at_three_pixels_an_element():
    from vo_ml.spectra.grid import sampling_resolving_power

    wavelength = 3540.5 + 0.9 * np.arange(4300)  # MILES: 2.5 A lines sampled every 0.9 A
    assert sampling_resolving_power(wavelength) == pytest.approx(5475.0 / 2.7, rel=0.01)


def test_a_measured_velocity_is_the_one_doppler_to_rest_takes_out():
    """The mask's own lines, receding at 500 km/s (relativistic Doppler) and sampled on the
    correlation's log-lambda steps, give back 500 km/s: measure_velocity's answer is the
    velocity doppler_to_rest undoes, not c times the redshift (0.4 km/s more here)."""
    from vo_ml.spectra.velocity import (
        LINE_MASK_AIR,
        SPEED_OF_LIGHT_KMS,
        VELOCITY_STEP_KMS,
        doppler_to_rest,
        measure_velocity,
    )

    step = np.log1p(VELOCITY_STEP_KMS / SPEED_OF_LIGHT_KMS)
    wavelength = np.exp(np.arange(np.log(4000.0), np.log(6700.0), step))
    shift = 100  # steps: a velocity whose wavelengths the sampling holds exactly
    velocity = SPEED_OF_LIGHT_KMS * np.tanh(shift * step)  # relativistic: (1+b)/(1-b) = exp(2 shift step)
    np.testing.assert_allclose(doppler_to_rest(wavelength[shift:shift + 5], velocity), wavelength[:5])
    sigma = 2.5 / (2 * np.sqrt(2 * np.log(2)))
    flux = np.ones_like(wavelength)
    for line in np.asarray(LINE_MASK_AIR) * np.exp(shift * step):
        flux -= 0.5 * np.exp(-0.5 * ((wavelength - line) / sigma) ** 2)
    measured = measure_velocity(wavelength, flux, np.zeros(wavelength.size, bool), 2.5)
    assert measured == pytest.approx(velocity, abs=0.05)


def test_a_spectrum_shorter_than_the_smoothing_kernel_is_smoothed_whole():
    """A short stretch of a sharp spectrum (6 A at R 100,000) brought to a 2.5 A line spread:
    the kernel is longer than the spectrum, and the flux keeps one value per pixel (np.convolve
    once returned one per kernel element, and resampling failed on the shapes)."""
    from vo_ml.spectra.grid import smooth_to_fwhm

    wavelength = 5000.0 + 0.02 * np.arange(300)
    flux = 1.0 + 0.01 * np.sin(wavelength)
    mask = np.zeros(wavelength.size, bool)
    mask[100:110] = True
    smoothed = smooth_to_fwhm(wavelength, flux, mask, 2.5, 100_000.0)
    assert smoothed.shape == flux.shape
    assert np.all(np.abs(smoothed[~mask] - 1.0) < 0.01)


@pytest.mark.parametrize("stretches", [0, 5000])
def test_a_continuum_in_no_stretch_or_more_stretches_than_pixels_is_refused(stretches):
    """preprocess.stretches 0 once divided by zero at ingest, and more stretches than pixels
    found no continuum: both are refused when the config is read, naming the setting."""
    from vo_ml.spectra.grid import Preprocessing

    config = {"grid": {"start": 3545, "stop": 7405, "pixels": 4096},
              "preprocess": {"normalise": "continuum", "stretches": stretches}}
    with pytest.raises(ValueError, match=f"preprocess.stretches {stretches}: .* 1 to 4096"):
        Preprocessing.from_config(config)


def test_the_steps_a_store_records_give_uploads_the_archive_preprocessing():
    """What ingest records in the store (Preprocessing.steps, through JSON), and the service
    reads back for ml_encode, is every step of the demo config: frame, line spread, telluric
    mask, normalisation and its stretches."""
    import json

    from vo_ml.spectra.encodable import recorded_preprocessing

    preprocessing = _demo_preprocessing()
    recorded = json.loads(json.dumps({"grid": preprocessing.grid.as_dict(),
                                      "preprocess": preprocessing.steps()}))
    assert recorded_preprocessing(recorded["grid"], recorded["preprocess"]) == preprocessing
    assert (preprocessing.frame, preprocessing.stretches) == ("measured", 60)


def test_wavelengths_in_metres_given_as_angstrom_are_refused_for_the_grid_not_the_memory():
    """An upload's wavelengths in metres, read as Angstrom, ask for a smoothing kernel of
    billions of pixels: it is cut at the spectrum's length, and the spectrum is refused because
    it misses the grid (it once raised MemoryError, a 500)."""
    from astropy import units as u

    from vo_ml.spectra.record import Spectrum, SpectrumMeta

    wavelength = np.linspace(3.6e-7, 7.3e-7, 2000)
    flux = 1.0 + 0.1 * np.sin(np.arange(2000) / 7.0)
    spectrum = Spectrum(wavelength * u.AA, flux, np.zeros(2000, bool), SpectrumMeta("upload row 1", ""),
                        medium="air", frame="rest")
    with pytest.raises(ValueError, match="upload row 1: no good pixel on the grid 3545.0-7405.0 A"):
        _demo_preprocessing().apply(spectrum)
