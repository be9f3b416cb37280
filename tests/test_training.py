"""Model families, streaming training, checkpoints and resume after a kill, on the real store."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import TABLE, VO_ML, Child, quick_model_config, vo_ml

from vo_ml.pipeline import store_path
from vo_ml.resources import config_file, load_yaml
from vo_ml.spectra.grid import Grid
from vo_ml.spectra.store import SpectrumStore


def copy_archive(archive: dict, folder: Path) -> Path:
    """The session archive's database and spectrum store, copied so a test may write to them."""
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "miles.duckdb"
    shutil.copy(archive["db"], db)
    shutil.copytree(store_path(archive["db"], TABLE), store_path(db, TABLE))
    return db


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def test_conv_runs_at_full_harps_resolution_with_a_batch_of_eight():
    from vo_ml.ml.models import Anchor, build_conv, conv_layers

    config = load_yaml(config_file("conv")) | {"latent_dim": 4}
    pixels = 327_680
    assert len(conv_layers(config, pixels)) == 15
    encoder, _, autoencoder = build_conv(config, Anchor.flat(pixels, 4))
    flux = np.random.default_rng(1).normal(1, 0.1, (8, pixels)).astype(np.float32)
    good = np.ones_like(flux)
    assert autoencoder([flux, good]).shape == (8, pixels)
    assert encoder([flux, good]).shape == (8, 4)


def test_conv_keeps_the_layers_a_short_grid_allows():
    from vo_ml.ml.models import conv_layers

    config = load_yaml(config_file("conv"))
    assert len(conv_layers(config, 4096)) == 10  # 4096 / 2^10 = 4 pixels at the bottom
    with pytest.raises(ValueError, match="too few"):
        conv_layers(config, 6)


def test_a_variational_bottleneck_adds_its_kl_term_and_encodes_its_mean():
    from vo_ml.ml.models import Anchor, build_dense

    config = load_yaml(config_file("dense2d")) | {"variational_beta": 0.5}
    encoder, _, autoencoder = build_dense(config, Anchor.flat(64, 2))
    flux = np.random.default_rng(2).normal(1, 0.1, (4, 64)).astype(np.float32)
    good = np.ones_like(flux)
    autoencoder([flux, good], training=True)
    assert len(autoencoder.losses) == 1 and float(autoencoder.losses[0]) > 0
    first, second = encoder([flux, good]).numpy(), encoder([flux, good]).numpy()
    np.testing.assert_array_equal(first, second)


def test_batches_stream_every_row_once_an_epoch_a_window_at_a_time(tmp_path, monkeypatch):
    from vo_ml.ml import data

    grid = Grid(4000.0, 5000.0, 1 << 18)  # 1 MB of flux a row: 8 rows a store chunk
    store = SpectrumStore(tmp_path / "s.zarr", grid)
    rows = 44
    flux = np.tile(np.arange(rows, dtype=np.float32)[:, None], (1, grid.pixels))
    store.append([f"d{i}" for i in range(rows)], flux, np.zeros(flux.shape, bool))
    monkeypatch.setattr(data, "WINDOW_BYTES", 8 << 20)  # one chunk a window, not the 15 rows
    chosen = np.arange(0, rows, 3)
    batches = data.StoreBatches(store, chosen, batch_size=4, seed=7)
    reads = []
    original = store.read
    monkeypatch.setattr(store, "read", lambda a, b: reads.append(b - a) or original(a, b))

    epoch0 = [r for r, _, _ in batches.batches(0)]
    seen = np.concatenate(epoch0)
    assert sorted(seen) == list(chosen)
    assert max(reads) <= 8  # never more than one window of rows from the store
    for rows_, flux_, _ in batches.batches(0):
        np.testing.assert_array_equal(flux_[:, 0], rows_)  # flux travels with its row
    again = np.concatenate([r for r, _, _ in batches.batches(0)])
    other = np.concatenate([r for r, _, _ in batches.batches(1)])
    np.testing.assert_array_equal(seen, again)  # an epoch is the same every time
    assert not np.array_equal(seen, other)  # and differs from the next one


def test_training_writes_the_card_metrics_and_curve_and_reuses_the_model(archive, tmp_path):
    from vo_ml.pipeline import train_model

    card = json.loads((archive["model_dir"] / "model_card.json").read_text())
    assert card["model_id"] == archive["model_dir"].name
    assert card["data_checksum"] and card["config"]["name"] == "dense16"
    assert card["spectra"]["train"] + card["spectra"]["validation"] == 91
    assert card["metrics"]["best_val_loss"] > 0 and card["metrics"]["epochs"] >= 1
    # Warm-up, cosine decay and clipped gradients: the validation loss never jumps after warm-up.
    assert card["metrics"]["val_loss_peak"] < 1.5
    metrics = json.loads((archive["model_dir"] / "metrics.json").read_text())
    assert len(metrics["history"]["loss"]) == metrics["epochs"]
    assert (archive["model_dir"] / "training_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (archive["model_dir"] / "checkpoints").exists()

    card_written = (archive["model_dir"] / "model_card.json").stat().st_mtime_ns
    again = train_model(archive["db"], TABLE, quick_model_config(), archive["model_dir"].parent)
    assert again == archive["model_dir"]
    assert (archive["model_dir"] / "model_card.json").stat().st_mtime_ns == card_written


def _train(db: Path, config: Path, models: Path) -> subprocess.CompletedProcess:
    return vo_ml("train", "--db", db, "--config", config, "--models", models)


def test_training_killed_and_restarted_ends_with_the_uninterrupted_model(archive, tmp_path):
    config = quick_model_config()
    config["training"].update(epochs=40, patience=1000, checkpoint_seconds=0)
    # The noise of a variational latent correction must resume too.
    config.update(latent_correction=True, variational_beta=0.001)
    config_path = write_config(tmp_path / "quick.yaml", config)
    db = copy_archive(archive, tmp_path / "archive")

    straight = _train(db, config_path, tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr
    model = Path(straight.stdout.strip().splitlines()[-1])

    state = tmp_path / "killed" / f"{model.name}.partial" / "checkpoints" / "state.json"
    with Child([VO_ML, "train", "--db", db, "--config", config_path, "--models", tmp_path / "killed"],
               tmp_path / "killed.log") as killed:
        killed.wait_until(lambda: state.is_file() and json.loads(state.read_text())["epoch"] >= 10,
                          "a checkpoint of the 10th epoch")
        killed.send_signal(signal.SIGKILL)
        killed.wait()
    assert not (tmp_path / "killed" / model.name).exists()
    stopped_at = json.loads(state.read_text())["epoch"]
    assert 10 <= stopped_at < 40

    resumed = _train(db, config_path, tmp_path / "killed")
    assert resumed.returncode == 0, resumed.stderr
    import keras

    expected = keras.models.load_model(model / "encoder.keras").get_weights()
    got = keras.models.load_model(tmp_path / "killed" / model.name / "encoder.keras").get_weights()
    for a, b in zip(expected, got, strict=True):
        np.testing.assert_array_equal(a, b)
    history = json.loads((model / "metrics.json").read_text())["history"]
    assert json.loads((tmp_path / "killed" / model.name / "metrics.json").read_text())["history"] == history


#: The standardisation scale of the models built on the MILES fixture spectra.
SCALE = 0.05


def _anchored_on_miles() -> tuple:
    """The MILES fixture spectra as the demo archive prepares them, at the dense family's
    sampling; their good-pixel weights and mean spectrum; and the anchor (32 components) and
    untrained encoder and decoder of an 8-D dense model on them."""
    from conftest import MILES

    from vo_ml.ml.models import Anchor
    from vo_ml.pipeline import ArchiveConfig
    from vo_ml.spectra.grid import downsample
    from vo_ml.spectra.readers import read_spectrum

    preprocessing = ArchiveConfig.from_dict(load_yaml(config_file("miles"))).preprocessing
    prepared = [preprocessing.apply(read_spectrum(path)) for path in sorted(MILES.glob("*.fits"))]
    flux, mask = downsample(*(np.stack(part) for part in zip(*prepared, strict=True)), 4)
    good = (~mask).astype(np.float32)
    mean = (flux * good).sum(axis=0) / np.maximum(good.sum(axis=0), 1)
    anchor = Anchor.fit(flux, good, mean, SCALE, components=32)
    encoder, decoder, _ = _untrained_dense(anchor, latent_dim=8)
    return flux, good, mean, anchor, encoder, decoder


def _untrained_dense(anchor: object, latent_dim: int) -> tuple:
    from vo_ml.ml.models import build_dense

    return build_dense(load_yaml(config_file("dense2d")) | {"latent_dim": latent_dim}, anchor)


def test_the_validation_loss_peak_is_its_largest_rise_over_the_minimum_so_far():
    from vo_ml.ml.training import val_loss_peak

    assert val_loss_peak([9.0, 9.0, 4.0, 2.0, 3.0, 1.0, 1.2], warmup_epochs=2) == 1.5
    assert val_loss_peak([5.0, 4.0, 3.0], warmup_epochs=0) == 1.0
    assert val_loss_peak([5.0], warmup_epochs=1) is None
    # The untrained model's loss counts as the lowest so far from the start.
    assert val_loss_peak([2.0, 3.0, 2.5], warmup_epochs=1, initial=1.0) == 3.0


def test_training_stops_when_the_validation_loss_rises_well_above_its_lowest():
    """Patience alone let dense16 at latent 128 overfit for 60 epochs, its validation loss
    rising to 1.7 times its lowest; after warm-up a rise past the limit stops it at once."""
    from vo_ml.ml.training import EarlyStopping

    stopping = EarlyStopping(patience=60, warmup=10, divergence=1.25)
    assert stopping.reason(epoch=5, loss=3.0, best=1.0, wait=5) is None
    assert stopping.reason(epoch=11, loss=1.2, best=1.0, wait=11) is None
    assert "1.30 times its lowest" in stopping.reason(epoch=12, loss=1.3, best=1.0, wait=12)
    assert "not improved for 60 epochs" in stopping.reason(epoch=61, loss=1.0, best=1.0, wait=60)


def test_an_untrained_model_is_exactly_pca():
    """Anchored on PCA with zero corrections, a new model encodes to the leading coefficients of
    the masked, noise-weighted projection on the principal components and reconstructs as PCA
    does: training starts at PCA's error."""
    flux, good, mean, anchor, encoder, decoder = _anchored_on_miles()
    latent = encoder([flux, good]).numpy()
    standardised = np.where(good > 0, (flux - mean) / SCALE, 0.0)
    expected = [_reweighted_projection(x, g, anchor)[:8] for x, g in zip(standardised, good, strict=True)]
    np.testing.assert_allclose(latent, expected, rtol=2e-3, atol=2e-3)
    reconstructed = decoder(latent).numpy()
    pca = mean + (latent @ anchor.components[:8]) * SCALE
    np.testing.assert_allclose(reconstructed, pca, atol=1e-4)


def _reweighted_projection(standardised: np.ndarray, good: np.ndarray, anchor: object) -> np.ndarray:
    """What MaskedProjection computes, written out in NumPy: weighted least squares over all the
    anchor's components with probabilistic PCA's prior, first weighing the good pixels alike, then
    by the excess noise floor over the previous pass's mean squared residual around each pixel."""
    from scipy.ndimage import uniform_filter1d

    from vo_ml.ml.models import NOISE_EXCESS, NOISE_WINDOWS, PASSES, PRIOR_WEIGHT

    components = anchor.components.astype(np.float64)
    prior = np.diag(PRIOR_WEIGHT * anchor.noise / anchor.variances)
    good = good.astype(np.float64)

    def local(values: np.ndarray) -> np.ndarray:  # the sum over the window, as TensorFlow centres it
        return uniform_filter1d(values, good.size // NOISE_WINDOWS, mode="constant", origin=-1)

    weight = good
    for _ in range(PASSES):
        solved = np.linalg.solve((components * weight) @ components.T + prior,
                                 components @ (weight * standardised))
        variance = local(np.square(standardised - solved @ components) * good) / np.maximum(local(good), 1e-6)
        weight = good * np.minimum(1.0, NOISE_EXCESS * anchor.noise / np.maximum(variance, 1e-30))
    return solved


def test_a_spectrum_covering_half_the_range_encodes_near_its_whole():
    """The masked projection weighs the good pixels only: the blue half alone of a spectrum
    gives nearly the latent vector of the whole, far nearer than its neighbours are."""
    flux, good, mean, _, encoder, _ = _anchored_on_miles()
    whole = encoder([flux, good]).numpy()
    half = good.copy()
    half[:, flux.shape[1] // 2:] = 0
    halves = encoder([flux, half]).numpy()
    mean_filled = encoder([np.where(half > 0, flux, mean), np.ones_like(half)]).numpy()

    moved = np.linalg.norm(halves - whole, axis=1)
    pairwise = np.linalg.norm(whole[:, None] - whole[None], axis=-1)
    np.fill_diagonal(pairwise, np.inf)
    assert np.median(moved) < np.median(pairwise.min(axis=1))
    # Filling the gap with the mean spectrum instead, as an unmasked encoder would, moves it far more.
    assert np.median(np.linalg.norm(mean_filled - whole, axis=1)) > 2 * np.median(moved)


def test_a_partial_spectrum_is_estimated_from_all_the_anchor_components():
    """The red half of a spectrum says little of its blue half; solved on the latent's eight
    components alone it lands beyond its neighbours. Solved on all 32 of the anchor's, and the
    first eight kept, it lands within the archive's nearest-neighbour distance of its whole."""
    from vo_ml.ml.models import Anchor

    flux, good, mean, anchor, encoder, _ = _anchored_on_miles()
    red_half = good.copy()
    red_half[:, : flux.shape[1] // 2] = 0

    def moved(model: object) -> float:
        whole = model([flux, good]).numpy()
        pairwise = np.linalg.norm(whole[:, None] - whole[None], axis=-1)
        np.fill_diagonal(pairwise, np.inf)
        distance = np.linalg.norm(model([flux, red_half]).numpy() - whole, axis=1)
        return float(np.median(distance) / np.median(pairwise.min(axis=1)))

    leading_only, _, _ = _untrained_dense(Anchor.fit(flux, good, mean, SCALE, components=8), latent_dim=8)
    assert moved(encoder) < 0.8
    assert moved(leading_only) > 1.0


def test_noisy_pixels_count_for_less_in_the_projection():
    """A spectrum with a very noisy stretch (the blue eighth of the range, as at a detector's
    edge) lands nearer its clean self when later passes weigh pixels by the noise the first pass
    left than with one pass, where the noise there pulls every coefficient."""
    from vo_ml.ml.models import MaskedProjection

    flux, good, mean, anchor, _, _ = _anchored_on_miles()
    standardised = np.where(good > 0, (flux - mean) / SCALE, 0.0).astype(np.float32)
    noise = np.random.default_rng(3).normal(0.0, 0.02, standardised.shape).astype(np.float32)
    noise[:, : standardised.shape[1] // 8] *= 100
    noisy = (standardised + noise) * good

    def moved(passes: int) -> float:
        projection = MaskedProjection(8, anchor.components.shape[0], flux.shape[1], passes)
        projection.build(None)
        projection.anchor_on(anchor)
        clean = projection([standardised * good, good]).numpy()
        return float(np.median(np.linalg.norm(projection([noisy, good]).numpy() - clean, axis=1)))

    assert moved(3) < 0.5 * moved(1)
