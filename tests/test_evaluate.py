"""`vo-ml evaluate`: models trained without held-out stars, scored against PCA and raw flux; same-star
retrieval of spectra from other instruments; invariance of neighbours under perturbations."""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import TABLE, vo_ml
from test_training import copy_archive

DATA = Path(__file__).parent / "data"
HARPS_NIGHT = "HARPS.2012-03-24T08:37:45.581_s1d_A_cut.fits"
LAMOST_EPOCH = "med-58625-TD192102N424113K01_sp12-076.fits.gz"
APOGEE = "apVisit-r13-5095-55844-128_cut.fits"


def real_spectra(folder: Path) -> Path:
    """A folder in the layout of real_spectra, from the committed fixtures: the X-shooter spectrum
    of BD+01 2916; as alpha Cen B's HARPS nights, the cut night, an APOGEE visit (infrared: no
    pixel on the MILES grid, so it cannot be prepared) and a file that is not a spectrum; one
    LAMOST MRS epoch of KIC 8098300 in two release folders."""
    xshooter = folder / "mangadap_test_spectra"
    xshooter.mkdir(parents=True)
    shutil.copy(DATA / "formats" / "xsl_spectrum_X0360_uvb.fits", xshooter)
    harps = folder / "harps_s1d" / "fits"
    harps.mkdir(parents=True)
    shutil.copy(DATA / "harps" / HARPS_NIGHT, harps)
    shutil.copy(DATA / "formats" / APOGEE, harps)
    (harps / "broken_s1d_A.fits").write_text("not a spectrum\n")
    (folder / "harps_s1d" / "observations.csv").write_text(
        "file,object\n" + "".join(f"fits/{name},HD128621\n" for name in
                                  (HARPS_NIGHT, APOGEE, "broken_s1d_A.fits")))
    for release in ("DR7_medium", "DR8_medium"):
        epochs = folder / "lamost_laspec" / "KIC8098300" / release
        epochs.mkdir(parents=True)
        shutil.copy(DATA / "formats" / LAMOST_EPOCH, epochs)
    return folder


@pytest.fixture(scope="module")
def spaces(archive) -> dict:
    """The session archive's store, its model's latent space and its raw flux, as the report
    builds them, with the original file of every row."""
    from vo_ml.archive.backends import open_backend
    from vo_ml.ml.embedding import embed_store, latent_vectors
    from vo_ml.ml.evaluation import Representation
    from vo_ml.ml.report import BASELINE_DOWNSAMPLE, model_view
    from vo_ml.pipeline import store_path
    from vo_ml.spectra.store import SpectrumStore

    store = SpectrumStore(store_path(archive["db"], TABLE))
    embedded = embed_store(store, archive["model_dir"])
    view = model_view(store, BASELINE_DOWNSAMPLE, np.ones(len(store), bool))
    latent = Representation("model", embedded.latent.shape[1], embedded.latent, "latent",
                            encode=functools.partial(latent_vectors, model_dir=archive["model_dir"]))
    raw = Representation("raw flux", view.flux.shape[1], view.flux, "raw", encode=view.raw_encoder())
    with open_backend(archive["db"], read_only=True) as backend:
        sources = {row: Path(backend.ingested_source(did)[0]) for row, did in enumerate(store.dids)}
        columns = backend.execute(f"SELECT obs_publisher_did, teff, logg FROM {TABLE}").columns
    order = {did: i for i, did in enumerate(columns[0].data)}
    rows = [order[did] for did in store.dids]
    labels = {name: np.ma.filled(columns[i].astype(float), np.nan)[rows]
              for i, name in ((1, "teff"), (2, "logg"))}
    return {"store": store, "latent": latent, "raw": raw, "view": view, "sources": sources,
            "labels": labels}


def test_probe_files_that_cannot_be_read_or_prepared_are_listed_and_the_others_answered(spaces, tmp_path):
    from vo_ml.ml import probes

    folder = real_spectra(tmp_path / "real")
    store = spaces["store"]
    figures = probes.retrieval([spaces["latent"]], store.dids, spaces["labels"],
                               probes.ProbeSet.in_folder(folder), probes.store_preprocessing(store))
    skipped = {s["file"]: s["reason"] for s in figures["skipped"]}
    broken, infrared = "harps_s1d/fits/broken_s1d_A.fits", f"harps_s1d/fits/{APOGEE}"
    assert set(skipped) == {broken, infrared}
    assert "not a FITS file" in skipped[broken]
    assert "no good pixel on the grid" in skipped[infrared]
    assert figures["files"]["nights"] == [f"harps_s1d/fits/{HARPS_NIGHT}"]
    assert figures["missing"] == []
    answers = figures["by"]["model"]
    # The fixture archive has no m0505: the rank says so rather than naming another star.
    assert answers["xshooter"]["rank"] is None and len(answers["xshooter"]["nearest"]) == 3
    night = answers["nights"]
    assert night["count"] == 1 and 2500 < night["teff_median"] < 8000
    assert night["recall_at_1"] is None  # one night prepared: nothing to be together with
    epochs = answers["epochs"]  # the same file twice: each is the other's nearest
    assert epochs["recall_at_1"] == 1.0 and epochs["recall_at_5"] == pytest.approx(0.2)
    assert all(ratio > 0 for ratio in answers["xshooter"]["distance_ratio"])
    text = "\n".join(probes.markdown(figures))
    assert "skipped `harps_s1d/fits/broken_s1d_A.fits`: not a FITS file" in text
    assert "| model | not in the archive |" in text


def test_xshooter_spectrum_ranks_the_same_star_first_in_an_archive_holding_its_miles_spectrum(
        spaces, tmp_path):
    """BD+01 2916 observed with X-shooter (not flux-calibrated alike, R 10,000, 299-556 nm) finds
    its MILES spectrum once the archive holds it: the preparation removes what the instrument
    changes, as the issue asks."""
    from vo_ml.ml import probes
    from vo_ml.ml.evaluation import Representation
    from vo_ml.spectra.encodable import encodable
    from vo_ml.spectra.readers import read_spectrum

    store, view = spaces["store"], spaces["view"]
    preprocessing = probes.store_preprocessing(store)
    flux, mask = encodable(read_spectrum(DATA / "formats" / "MILES_res2.50_star_m0505V.fits"),
                           preprocessing)
    points = np.vstack([view.flux, view.seen(flux[None], mask[None])])
    raw = Representation("raw flux", points.shape[1], points, "raw", encode=view.raw_encoder())
    dids = np.append(store.dids, "ivo://test/miles?m0505")
    labels = {name: np.append(values, np.nan) for name, values in spaces["labels"].items()}
    probe_set = probes.ProbeSet.in_folder(real_spectra(tmp_path / "real"))
    figures = probes.retrieval([raw], dids, labels, probe_set, preprocessing)
    assert figures["by"]["raw flux"]["xshooter"]["rank"] == 1
    assert figures["acceptance"]["raw flux"]["m0505 within 3"] is True


def test_a_velocity_shifted_spectrum_keeps_its_neighbours_and_noise_moves_it(spaces, tmp_path):
    from vo_ml.ml import invariance, probes
    from vo_ml.ml.report import pyplot

    store = spaces["store"]
    figures = invariance.invariance([spaces["latent"], spaces["raw"]], spaces["sources"],
                                    probes.store_preprocessing(store), stars=6)
    assert figures["stars"] == 6 and figures["unreadable"] == []
    for name in ("model", "raw flux"):
        velocity = figures["kinds"]["velocity"]["by"][name]
        assert velocity["distance_ratio"][0] == 0.0 and velocity["recall_at_10"][0] == 1.0
        levels = figures["kinds"]["velocity"]["levels"]
        assert velocity["recall_at_10"][levels.index("100 km/s")] >= invariance.RECALL_THRESHOLD
        noise = figures["kinds"]["S/N"]["by"][name]["distance_ratio"]
        assert noise[-1] > noise[0] > 0  # S/N 10 moves a spectrum farther than S/N 200
    coverage = figures["kinds"]["coverage"]
    assert coverage["levels"][:2] == ["100%", "blue 80%"] and "red 30%" in coverage["levels"]
    assert figures["acceptance"]["model"]["velocity"] is True
    plots = invariance.plot(figures, tmp_path, pyplot())
    assert [p.name for p in plots] == ["invariance_velocity.png", "invariance_sn.png",
                                       "invariance_resolution.png", "invariance_tilt.png",
                                       "invariance_coverage.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in plots)


def test_an_archive_spectrum_whose_original_file_is_gone_or_broken_is_left_out_with_why(spaces, tmp_path):
    from vo_ml.ml import invariance, probes

    broken = tmp_path / "MILES_res2.50_star_m0019V.fits"
    broken.write_text("overwritten since ingest\n")
    sources = {0: broken, 1: spaces["sources"][1]}
    figures = invariance.invariance([spaces["raw"]], sources, probes.store_preprocessing(spaces["store"]),
                                    stars=2)
    assert figures["stars"] == 1
    assert figures["unreadable"] == [{"file": str(broken), "reason": figures["unreadable"][0]["reason"]}]
    assert "not a FITS file" in figures["unreadable"][0]["reason"]
    assert figures["kinds"]["velocity"]["prepared"] == [1] * 5
    assert f"- left out `{broken}`: not a FITS file" in "\n".join(invariance.markdown(figures))


def test_evaluate_reports_held_out_neighbours_for_every_model_and_baseline(archive, tmp_path):
    db = copy_archive(archive, tmp_path / "archive")
    out = tmp_path / "report"
    done = vo_ml("evaluate", "--db", db, "--table", TABLE, "--out", out, "--epochs", 3,
                 "--latent-dims", 4, "--held-out", 0.3, "--real-spectra", real_spectra(tmp_path / "real"),
                 "--invariance-stars", 4, timeout=500)
    assert done.returncode == 0, done.stderr
    figures = json.loads((out / "report.json").read_text())
    names = [r["name"] for r in figures["representations"]]
    assert names == ["dense2d-2 latent", "dense16-4 latent", "conv-4 latent", "PCA-2", "PCA-4",
                     "PCA-16", "raw flux"]
    assert 0 < figures["held_out_stars"] < figures["spectra"] == 91
    for representation in figures["representations"]:
        for k in ("1", "5", "10"):
            scores = representation["scores"]["held-out FGK"][k]
            assert all(np.isfinite(scores[label]) and scores[label] >= 0 for label in scores)
    models = {r["model"] for r in figures["representations"] if r["model"]}
    for model in models:  # trained on the other stars only
        card = json.loads((db.parent / "models" / model / "model_card.json").read_text())
        assert sum(card["spectra"].values()) == 91 - figures["held_out_stars"]
    assert set(figures["retrieval"]["by"]) == set(names)
    assert figures["invariance"]["stars"] == 4
    assert set(figures["invariance"]["kinds"]["tilt"]["by"]) == set(names)
    assert figures["preprocessing"]["frame"] == "measured"
    assert [m["name"] for m in figures["training"]["models"]] == names[:3]
    report = (out / "report.md").read_text()
    assert "| conv-4 latent | 4 |" in report and "| PCA-4 | 4 |" in report
    for section in ("## Same star across instruments and epochs", "## Invariance", "### coverage",
                    "## Uses and limitations", "### conv-4 latent", "Velocity shifts up to"):
        assert section in report
    for plot in ("latent_maps.png", "reconstructions.png", "recon_error.png", "invariance_tilt.png"):
        assert (out / plot).read_bytes()[:4] == b"\x89PNG"


def test_evaluate_refuses_a_missing_real_spectra_folder_before_training(archive, tmp_path):
    db = copy_archive(archive, tmp_path / "archive")
    done = vo_ml("evaluate", "--db", db, "--table", TABLE, "--out", tmp_path / "report",
                 "--real-spectra", tmp_path / "nowhere", timeout=120)
    assert done.returncode == 2
    assert "nowhere: no such folder" in done.stderr
    assert not (db.parent / "models").exists()


def test_the_training_section_reads_the_models_among_the_baselines():
    """The report's representations are the models followed by PCA and raw flux: the training
    section takes the models' figures from their cards, and the seeds' spread from models that
    differ only in their seed (it once paired every representation with a card, and failed)."""
    from vo_ml.ml.evaluation import Representation
    from vo_ml.ml.report import _training

    def card(seed: int, loss: float) -> dict:
        return {"config": {"name": "dense16", "training": {"seed": seed}}, "latent_dim": 8,
                "metrics": {"epochs": 30, "best_epoch": 12, "best_val_loss": loss, "val_loss_peak": 1.1}}

    def model(name: str, recon: float) -> Representation:
        scores = {"held-out FGK": {5: {"teff": 0.04, "logg": 0.2, "feh": 0.1}}}
        return Representation(name, 8, np.zeros((3, 8)), "latent", recon_rms=recon, scores=scores)

    latents = [model("dense16-8 latent (seed 0)", 0.010), model("dense16-8 latent (seed 1)", 0.011)]
    representations = [*latents, Representation("PCA-8", 8, np.zeros((3, 8)), "pca")]
    figures = _training(representations, [card(0, 2.0), card(1, 2.2)])
    assert [m["name"] for m in figures["models"]] == [r.name for r in latents]
    spread = figures["seeds"]["dense16-8 latent"]
    assert spread["seeds"] == [0, 1]
    assert spread["best_val_loss"] == pytest.approx(0.1) and spread["recon_rms"] == pytest.approx(0.1)
    assert spread["teff"] == 0.0


def test_probe_files_are_prepared_for_a_rest_frame_archive_as_its_uploads_are(tmp_path):
    """An archive put in the rest frame by its catalogue's velocities knows none for a probe
    file: the evaluation takes it as it is, as the service takes an upload, instead of
    refusing every probe (the same rule, vo_ml.spectra.encodable, serves both)."""
    from vo_ml.ml import probes
    from vo_ml.spectra.encodable import encodable
    from vo_ml.spectra.grid import Grid
    from vo_ml.spectra.readers import read_spectrum
    from vo_ml.spectra.store import SpectrumStore

    grid = Grid(3545.0, 7405.0, 4096)
    store = SpectrumStore(tmp_path / "store", grid, {"frame": "rest", "normalise": "continuum",
                                                     "fwhm": 2.5})
    night = read_spectrum(DATA / "harps" / HARPS_NIGHT)
    assert night.frame != "rest"
    flux, mask = encodable(night, probes.store_preprocessing(store))
    assert flux.shape == (4096,) and (~mask).sum() > 100


@pytest.mark.parametrize("red", [False, True])
def test_half_coverage_in_the_invariance_curves_is_half_the_grid_as_ml_coverage_counts_it(red):
    """The invariance curves' '50%' keeps half of the grid's pixels, as ml_coverage measures
    an upload's coverage (the grid is uniform in log-lambda: half its wavelength span was 59%
    of its pixels at the blue end and 41% at the red)."""
    from conftest import MILES

    from vo_ml.ml import invariance
    from vo_ml.pipeline import ArchiveConfig
    from vo_ml.resources import config_file, load_yaml
    from vo_ml.spectra.encodable import encodable
    from vo_ml.spectra.readers import read_spectrum

    preprocessing = ArchiveConfig.from_dict(load_yaml(config_file("miles"))).preprocessing
    star = read_spectrum(MILES / "MILES_res2.50_star_m0067V.fits")
    half = invariance._covering(star, np.random.default_rng(0), preprocessing.grid, share=0.5, red=red)
    _, whole = encodable(star, preprocessing)
    _, mask = encodable(half, preprocessing)
    kept = np.arange(mask.size) >= mask.size // 2 if red else np.arange(mask.size) < mask.size // 2
    assert (~mask[~kept]).sum() <= 3  # a pixel or two where the cut falls after the velocity shift
    assert (~mask[kept]).sum() == pytest.approx((~whole[kept]).sum(), abs=0.01 * mask.size)
