"""Synthetic HARPS spectra: the grid, the ESO SDP file, and labels that act as they do in real stars."""

from __future__ import annotations

import csv
import warnings
from dataclasses import replace

import numpy as np
import pytest
from astropy.io import fits

from vo_ml.spectra import synthetic as syn

C_KMS = 299_792.458
SUN = syn.StellarParameters(teff=5777.0, logg=4.44, feh=0.0, vsini=2.0, rv=0.0, snr=150.0)


@pytest.fixture(scope="module")
def wave():
    return syn.wavelength_grid()


def near(wave, centre, half):
    return (wave > centre - half) & (wave < centre + half)


def equivalent_width(model, wave, lo, hi):
    """Absorbed area (A) of the continuum-normalised model between lo and hi."""
    inside = (wave > lo) & (wave < hi)
    return float(np.nansum(1.0 - model[inside]) * syn.WAVE_STEP)


def test_grid_is_the_harps_s1d_range_in_0_01_angstrom_steps(wave):
    assert wave.size == 313_201
    assert (wave[0], wave[-1]) == pytest.approx((3781.0, 6913.0))
    assert np.diff(wave) == pytest.approx(0.01, abs=1e-9)


def test_ccd_gap_is_nan_and_flagged_and_nothing_else_is():
    arrays = syn.synthesize(SUN, seed=1)
    wave = arrays.wave.astype(np.float64)
    gap = (wave >= syn.CCD_GAP[0]) & (wave <= syn.CCD_GAP[1])
    assert 3000 < gap.sum() < 3400
    assert np.isnan(arrays.flux[gap]).all()
    assert (arrays.qual[gap] == syn.QUAL_CCD_GAP).all()
    assert np.isfinite(arrays.flux[~gap]).all() and (arrays.qual[~gap] == 0).all()
    assert {a.dtype for a in (arrays.wave, arrays.flux, arrays.err)} == {np.dtype(np.float32)}


def test_sdp_file_reads_back_with_columns_units_utypes_and_labels(tmp_path):
    params = replace(SUN, teff=4800.0, logg=2.5, feh=-0.4, vsini=7.5, rv=-33.2, snr=80.0)
    arrays = syn.synthesize(params, seed=5)
    meta = syn.ObservationMeta("SYNTH-TEST", ra=10.5, dec=-20.25, mjd_obs=58000.5, exptime=600.0,
                               berv=12.3)
    path = tmp_path / "star.fits"
    syn.write_sdp(path, arrays, params, meta)
    assert 4.5e6 < path.stat().st_size < 5.5e6
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a wrong CHECKSUM or DATASUM is a warning
        with fits.open(path, checksum=True) as hdus:
            hdus.verify("exception")
            primary, table = hdus[0].header, hdus["SPECTRUM"]
            data = table.data
            header = table.header
    expected = {"ORIGIN": "ESO", "TELESCOP": "ESO-3P6", "INSTRUME": "HARPS", "OBJECT": "SYNTH-TEST",
                "SPECSYS": "BARYCENT", "PRODCATG": "SCIENCE.SPECTRUM", "SPEC_RES": 115000.0,
                "RA": 10.5, "DEC": -20.25, "MJD-OBS": 58000.5, "EXPTIME": 600.0, "SNR": 80.0,
                "HIERARCH VOML TEFF": 4800.0, "HIERARCH VOML LOGG": 2.5, "HIERARCH VOML FEH": -0.4,
                "HIERARCH VOML VSINI": 7.5, "HIERARCH VOML RV": -33.2, "HIERARCH ESO DRS BERV": 12.3}
    assert {key: primary[key] for key in expected} == expected
    assert len(data) == 1 and header["NELEM"] == arrays.wave.size
    assert data.columns.names == ["WAVE", "FLUX", "ERR", "QUAL"]
    assert [c.unit for c in data.columns] == ["Angstrom", "adu", "adu", None]
    assert [header[f"TUTYP{i}"] for i in range(1, 5)] == [
        "spec:Data.SpectralAxis.Value", "spec:Data.FluxAxis.Value",
        "spec:Data.FluxAxis.Accuracy.StatError", "spec:Data.FluxAxis.Accuracy.QualityStatus"]
    assert (header["TUCD1"], header["TUCD2"]) == ("em.wl", "phot.flux.density;em.wl")
    assert [c.format for c in data.columns] == ["313201E", "313201E", "313201E", "313201J"]
    for name in ("WAVE", "FLUX", "ERR", "QUAL"):
        assert np.array_equal(data[name][0], getattr(arrays, name.lower()), equal_nan=True)


def test_continuum_signal_to_noise_is_the_requested_one(wave):
    lo, hi = syn.LINE_FREE_WINDOW
    window = (wave > lo + 2.0) & (wave < hi - 2.0)
    for snr, teff in ((40.0, 3900.0), (150.0, 5777.0), (280.0, 6800.0)):
        arrays = syn.synthesize(replace(SUN, teff=teff, snr=snr), seed=11)
        flux = arrays.flux[window].astype(np.float64)
        assert flux.mean() / flux.std() == pytest.approx(snr, rel=0.15)
        assert np.median(flux / arrays.err[window]) == pytest.approx(snr, rel=0.05)


def test_radial_velocity_moves_h_alpha_by_the_doppler_shift(wave):
    rv = 60.0
    window = near(wave, 6562.8, 8.0)
    rest = 1.0 - syn.normalised_model(SUN)[window]
    moved = 1.0 - syn.normalised_model(replace(SUN, rv=rv))[window]
    correlation = np.correlate(moved - moved.mean(), rest - rest.mean(), mode="full")
    peak = int(np.argmax(correlation))
    left, centre, right = correlation[peak - 1:peak + 2]
    lag = peak - (rest.size - 1) + 0.5 * (left - right) / (left - 2.0 * centre + right)
    assert lag * syn.WAVE_STEP == pytest.approx(6562.8 * rv / C_KMS, abs=0.01)


def test_hot_stars_have_stronger_balmer_and_weaker_metal_lines(wave):
    cool = syn.normalised_model(replace(SUN, teff=4500.0, logg=4.6))
    hot = syn.normalised_model(replace(SUN, teff=6700.0, logg=4.2))
    for line in (6562.8, 4861.3, 4340.5, 4101.7):
        assert equivalent_width(hot, wave, line - 15, line + 15) > 1.5 * equivalent_width(
            cool, wave, line - 15, line + 15)
    assert equivalent_width(hot, wave, 6000, 6500) < 0.7 * equivalent_width(cool, wave, 6000, 6500)


def test_metal_rich_stars_have_deeper_metal_lines(wave):
    poor = syn.normalised_model(replace(SUN, feh=-1.2))
    rich = syn.normalised_model(replace(SUN, feh=0.4))
    assert equivalent_width(rich, wave, 6000, 6500) > 2.0 * equivalent_width(poor, wave, 6000, 6500)


def test_dwarfs_have_broader_sodium_d_wings_than_giants(wave):
    dwarf = syn.normalised_model(replace(SUN, teff=4500.0, logg=4.7))
    giant = syn.normalised_model(replace(SUN, teff=4500.0, logg=1.8))
    wing = near(wave, 5885.0, 1.0)  # 5 A blue of Na D2, clear of its core
    assert np.mean(1.0 - dwarf[wing]) > 2.0 * np.mean(1.0 - giant[wing])


def isolated_line():
    """A moderately strong neutral line with no other line within 2 A, away from the gap."""
    lines = syn.line_list()
    order = np.argsort(lines.wave)
    wave, strength = lines.wave[order], lines.log_strength[order]
    gaps = np.diff(wave)
    isolated = (np.r_[np.inf, gaps] > 2.0) & (np.r_[gaps, np.inf] > 2.0)
    chosen = isolated & (lines.group[order] == syn.LineGroup.NEUTRAL) & (strength > -0.5)
    chosen &= (wave > 5500) & (wave < 6500)
    return float(wave[chosen][0])


def fwhm(model, wave, centre):
    window = near(wave, centre, 1.5)
    depth = 1.0 - model[window]
    return float((depth > depth.max() / 2).sum() * syn.WAVE_STEP)


def test_rotation_broadens_lines(wave):
    centre = isolated_line()
    slow = fwhm(syn.normalised_model(replace(SUN, vsini=1.0)), wave, centre)
    fast = fwhm(syn.normalised_model(replace(SUN, vsini=25.0)), wave, centre)
    assert 0.04 < slow < 0.15
    # A rotation profile of 25 km/s has a FWHM near 1.7 v sin i / c * lambda.
    assert fast > 3.0 * slow
    assert fast == pytest.approx(1.7 * 25.0 / C_KMS * centre, rel=0.3)


def test_same_seed_gives_identical_bytes_and_another_seed_other_noise(tmp_path):
    meta = syn.ObservationMeta("SYNTH-SEED", 1.0, 2.0, 58000.0, 300.0)
    paths = []
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        paths.append(tmp_path / f"{name}.fits")
        syn.write_sdp(paths[-1], syn.synthesize(SUN, seed), SUN, meta)
    first, second, other = (p.read_bytes() for p in paths)
    assert first == second
    assert first != other
    with fits.open(paths[0]) as a, fits.open(paths[2]) as c:
        assert np.array_equal(a[1].data["ERR"], c[1].data["ERR"], equal_nan=True)


def test_generate_archive_writes_files_and_labels_and_resumes(tmp_path):
    labels = syn.generate_archive(tmp_path, n=3, seed=42, workers=1, progress=False)
    files = sorted(tmp_path.glob("*.fits"))
    assert [f.name for f in files] == [syn.file_name(i) for i in range(3)]
    with open(labels, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["file"] for row in rows] == [f.name for f in files]
    for row, path in zip(rows, files, strict=True):
        header = fits.getheader(path)
        assert float(row["teff"]) == header["HIERARCH VOML TEFF"]
        assert float(row["rv"]) == header["HIERARCH VOML RV"]
        assert 3500 <= float(row["teff"]) <= 7000 and 1.0 <= float(row["logg"]) <= 5.0
    stamps = [f.stat().st_mtime_ns for f in files]
    original = files[1].read_bytes()
    files[1].unlink()
    syn.generate_archive(tmp_path, n=3, seed=42, workers=2, scheduler="threads", progress=False)
    assert files[1].read_bytes() == original  # the missing file is remade, identical
    assert [files[0].stat().st_mtime_ns, files[2].stat().st_mtime_ns] == [stamps[0], stamps[2]]
    assert not list(tmp_path.glob(".*.partial*"))


def test_drawn_labels_cover_the_requested_ranges():
    drawn = [syn.draw_parameters(3, i) for i in range(400)]
    teff, logg = np.array([p.teff for p in drawn]), np.array([p.logg for p in drawn])
    assert 3500 <= teff.min() and teff.max() <= 7000
    assert (logg[teff > 6000] > 3.5).all()  # no hot giants
    assert (logg < 3.0).sum() > 50 and (logg > 4.0).sum() > 150
    for name, lo, hi in (("feh", -1.5, 0.5), ("vsini", 0, 30), ("rv", -100, 100), ("snr", 20, 300)):
        values = np.array([getattr(p, name) for p in drawn])
        assert lo <= values.min() and values.max() <= hi
    assert syn.draw_parameters(3, 17) == drawn[17]
