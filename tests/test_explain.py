"""Why two spectra are similar: integrated gradients of the latent distance on the session's
MILES archive and model, the windows table, the figures, and the evaluation of the explanations.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from conftest import TABLE
from PIL import Image

from vo_ml.ml.embedding import encode, load_model
from vo_ml.ml.explain import OTHER, explain, explain_rows, integrated_gradients, line_list, model_wavelengths
from vo_ml.ml.explain_eval import evaluate_explanations, nearest_pairs
from vo_ml.ml.figures import DPI, EXPLANATION_SIZE, PREVIEW_SIZE, explanation_png, preview_png
from vo_ml.ml.framework import keras
from vo_ml.ml.models import downsampling
from vo_ml.pipeline import store_path
from vo_ml.spectra.store import SpectrumStore


@pytest.fixture(scope="module")
def store(archive) -> SpectrumStore:
    return SpectrumStore(store_path(archive["db"], TABLE))


@pytest.fixture(scope="module")
def sampled(archive, store) -> tuple[np.ndarray, np.ndarray]:
    """Every spectrum of the archive at the model's sampling."""
    _, _, card = load_model(str(archive["model_dir"]))
    return store.coarsened(downsampling(card["config"])).read(0, len(store))


@pytest.fixture(scope="module")
def pair(archive, sampled) -> tuple[int, int]:
    """A spectrum (the reference) and its nearest latent neighbour."""
    reference, neighbour = nearest_pairs(encode(*sampled, archive["model_dir"])[:, :-1], 1)[0]
    return int(reference), int(neighbour)


@pytest.fixture(scope="module")
def explained(archive, sampled, pair):
    flux, mask = sampled
    reference, neighbour = pair
    return explain(archive["model_dir"], flux[neighbour], mask[neighbour], flux[reference], mask[reference])


def test_line_list_loads_with_provenance():
    lines = line_list()
    names = {window.name for window in lines.windows}
    assert {"Ca II K", "Ca II H", "H alpha", "H beta (Lick)", "H epsilon", "Na D", "Mg b", "TiO1",
            "Ca II 8542", "Fe5270"} <= names
    assert "Worthey" in lines.provenance and "ApJS 116, 1" in lines.provenance
    assert all(window.start < window.stop for window in lines.windows)
    na_d = next(w for w in lines.windows if w.name == "Na D")
    assert (na_d.start, na_d.stop) == (5876.875, 5909.375)
    vacuum = next(w for w in line_list("vacuum").windows if w.name == "Na D")
    assert vacuum.start == pytest.approx(na_d.start + 1.63, abs=0.02)


def test_attributions_sum_to_the_distance(explained, archive):
    wavelength, _ = model_wavelengths(archive["model_dir"])
    assert explained.distance2 > 0
    assert explained.completeness_error < 0.01
    assert np.array_equal(explained.wavelength, wavelength)
    assert explained.attribution.shape == explained.flux.shape == wavelength.shape


def test_linear_encoder_splits_exactly():
    """E(x) = W (x * good): pixel i gets (x - r)_i [W^T W (x - r)]_i, whatever the nodes."""
    rng = np.random.default_rng(3)
    pixels, latent = 64, 6
    flux_in, good_in = keras.Input((pixels,)), keras.Input((pixels,))
    dense = keras.layers.Dense(latent, use_bias=True)
    encoder = keras.Model([flux_in, good_in], dense(keras.layers.Multiply()([flux_in, good_in])))
    weights = rng.normal(size=(pixels, latent)).astype(np.float32)
    dense.set_weights([weights, rng.normal(size=latent).astype(np.float32)])
    flux, ref_flux = rng.normal(1, 0.1, (2, pixels)).astype(np.float32)
    good = (rng.random(pixels) > 0.2).astype(np.float32)
    step = (flux - ref_flux) * good
    exact = step * (weights @ (weights.T @ step))
    for nodes in (1, 4):
        attribution, distance2 = integrated_gradients(encoder, flux, ref_flux, good, nodes)
        np.testing.assert_allclose(attribution, exact, rtol=1e-4, atol=1e-6 * np.abs(exact).max())
        assert distance2 == pytest.approx(float(np.sum(np.square(weights.T @ step))), rel=1e-5)
        assert attribution.sum() == pytest.approx(distance2, rel=1e-5)


def test_windows_table(explained):
    table = explained.windows()
    shares = [row.share for row in table]
    assert shares == sorted(shares, reverse=True)
    assert len({row.name for row in table}) == len(table) and OTHER in {row.name for row in table}
    assert {row.deeper for row in table} <= {"spectrum", "reference", "equal"}
    named = line_list().covers(explained.wavelength)
    other = next(row for row in table if row.name == OTHER)
    assert other.share == pytest.approx(explained.share[~named & explained.good].sum())
    assert other.share + explained.share[named].sum() == pytest.approx(1.0, abs=0.01)
    for row in table[:5]:
        if row.name != OTHER:
            window = next(w for w in line_list().windows if w.name == row.name)
            inside = window.covers(explained.wavelength)
            assert row.share == pytest.approx(explained.share[inside].sum())
            assert (row.start, row.stop) == (window.start, window.stop)


def test_deeper_feature_is_named(archive, sampled, pair):
    flux, mask = sampled
    reference, _ = pair
    wavelength, _ = model_wavelengths(archive["model_dir"])
    deepened = flux[reference].copy()
    na_d = next(w for w in line_list().windows if w.name == "Na D").covers(wavelength)
    deepened[na_d] -= 0.2
    explanation = explain(archive["model_dir"], deepened, mask[reference], flux[reference], mask[reference])
    rows = {row.name: row for row in explanation.windows()}
    assert rows["Na D"].deeper == "spectrum"
    assert rows["Na D"].share > 0.5
    assert rows[OTHER].deeper == "equal"


def test_masked_pixels_get_no_attribution(archive, sampled, pair):
    flux, mask = sampled
    reference, neighbour = pair
    masked = mask[neighbour].copy()
    masked[100:140] = True
    explanation = explain(archive["model_dir"], flux[neighbour], masked, flux[reference], mask[reference])
    assert not explanation.good[100:140].any()
    assert np.all(explanation.attribution[100:140] == 0.0)
    assert np.isnan(explanation.flux[100:140]).all() and np.isfinite(explanation.ref_flux[100:140]).all()
    assert explanation.completeness_error < 0.01


def test_same_spectrum_is_at_distance_zero(archive, sampled, pair):
    flux, mask = sampled
    reference, _ = pair
    explanation = explain(archive["model_dir"], flux[reference], mask[reference], flux[reference],
                          mask[reference])
    assert explanation.distance2 == pytest.approx(0.0, abs=1e-9)
    assert np.all(explanation.attribution == 0.0)
    assert explanation.completeness_error == 0.0


def test_store_rows_are_sampled_as_the_model_reads_them(archive, store, explained, pair):
    reference, neighbour = pair
    flux, mask = store.read(0, len(store))
    rows = explain_rows(archive["model_dir"], flux[neighbour], mask[neighbour], flux[reference],
                        mask[reference])
    np.testing.assert_allclose(rows.attribution, explained.attribution, rtol=1e-4,
                               atol=1e-6 * np.abs(explained.attribution).max())
    assert rows.distance2 == pytest.approx(explained.distance2, rel=1e-5)


def _decoded(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    return image


def test_figures_decode_at_their_size(explained, archive, sampled, pair):
    explanation = _decoded(explanation_png(explained, ("neighbour", "reference")))
    assert explanation.format == "PNG"
    assert explanation.size == (round(EXPLANATION_SIZE[0] * DPI), round(EXPLANATION_SIZE[1] * DPI))
    flux, mask = sampled
    reference, _ = pair
    wavelength, _ = model_wavelengths(archive["model_dir"])
    preview = _decoded(preview_png(wavelength, flux[reference], mask[reference], flux[reference] * 0.99,
                                   "tau Ceti"))
    assert preview.size == (round(PREVIEW_SIZE[0] * DPI), round(PREVIEW_SIZE[1] * DPI))


def test_evaluation_measures_faithful_explanations(archive, store):
    scores = evaluate_explanations(store, archive["model_dir"], pairs=8)
    assert scores.pairs == 8
    assert scores.completeness_max < 0.01
    assert scores.top_closed_median > 0.5 > scores.random_closed_median
    assert 0.0 <= scores.hot_on_lines <= 1.0 and 0.0 < scores.hot_on_lines_chance < 1.0
    assert scores.ms_per_pair > 0 and len(scores.lines()) == 7
