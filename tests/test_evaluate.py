"""`vo-ml evaluate`: models trained without held-out stars, scored against PCA and raw flux."""

from __future__ import annotations

import json

import numpy as np
from conftest import TABLE, vo_ml
from test_training import copy_archive


def test_evaluate_reports_held_out_neighbours_for_every_model_and_baseline(archive, tmp_path):
    db = copy_archive(archive, tmp_path / "archive")
    out = tmp_path / "report"
    done = vo_ml("evaluate", "--db", db, "--table", TABLE, "--out", out, "--epochs", 3,
                 "--conv-latent", 4, "--held-out", 0.3, timeout=500)
    assert done.returncode == 0, done.stderr
    figures = json.loads((out / "report.json").read_text())
    names = [r["name"] for r in figures["representations"]]
    assert names == ["dense2d-2 latent", "conv-4 latent", "PCA-2", "PCA-4", "PCA-16", "raw flux"]
    assert 0 < figures["held_out_stars"] < figures["spectra"] == 91
    for representation in figures["representations"]:
        for k in ("1", "5", "10"):
            scores = representation["scores"]["held-out FGK"][k]
            assert all(np.isfinite(scores[label]) and scores[label] >= 0 for label in scores)
    models = {r["model"] for r in figures["representations"] if r["model"]}
    for model in models:  # trained on the other stars only
        card = json.loads((db.parent / "models" / model / "model_card.json").read_text())
        assert sum(card["spectra"].values()) == 91 - figures["held_out_stars"]
    report = (out / "report.md").read_text()
    assert "| conv-4 latent | 4 |" in report and "| PCA-4 | 4 |" in report
    for plot in ("latent_maps.png", "reconstructions.png", "recon_error.png"):
        assert (out / plot).read_bytes()[:4] == b"\x89PNG"
