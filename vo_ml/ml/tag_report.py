"""Can spectra be tagged with physical properties, and which are odd? Measured, in a report.

``vo-ml evaluate-tags`` writes ``report.md`` and its plots. Everything is cross-validated by
star, so no figure comes from a star the tagger, the anomaly scale or the encoder saw:

- **Tags**: every candidate regressor (:func:`vo_ml.ml.tags.candidates`) scored out of fold, and
  the served choice (made again inside each fold) scored on the folds it did not see: robust
  sigma of FGK stars, median errors of all stars, against the acceptance figures.
- **Calibration**: how often the 68% and 95% intervals cover the catalogue value, overall and
  per class, and the PIT histogram.
- **Anomalies**: held-out spectra, clean and with one kind of defect injected into what the
  encoder reads, scored by :class:`vo_ml.ml.anomaly.AnomalyScale` and by an isolation forest on
  the latent vectors (the baseline); AUROC of each kind. The archive's own oddest spectra, with
  their spectral types.
- **What the latent space knows**: linear and nearest-neighbour probes (R^2, cross-validated)
  of each label and each nuisance (velocity, S/N, resolution, continuum tilt, applied to the
  original files before preparation, as the archive's spectra were prepared), and the mutual
  information of each latent dimension with each.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.ensemble import IsolationForest
from sklearn.feature_selection import mutual_info_regression
from sklearn.linear_model import RidgeCV
from sklearn.metrics import r2_score, roc_auc_score
from sklearn.model_selection import GroupKFold, cross_val_predict
from sklearn.neighbors import KNeighborsRegressor, NearestNeighbors
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from vo_ml.ml.anomaly import NEIGHBOURS, AnomalyScale
from vo_ml.ml.invariance import degraded, noisy, prepared, shifted, tilted
from vo_ml.ml.report import pyplot
from vo_ml.ml.tags import (
    CLASSES,
    FOLDS,
    LEVELS,
    LOG_LABELS,
    candidates,
    cross_validated_tags,
    out_of_fold,
    robust_sigma,
    spectral_class,
)
from vo_ml.progress import tracked
from vo_ml.spectra.grid import Preprocessing
from vo_ml.spectra.record import Spectrum

__all__ = ["TagData", "ACCEPTANCE", "INJECTIONS", "NUISANCES", "evaluate_tags",
           "tag_figures", "anomaly_figures", "nuisance_samples", "oddest", "probe_figures",
           "markdown"]

#: Acceptance: robust sigma of FGK stars, median |error| of all stars (relative for Teff).
ACCEPTANCE = {"teff": (80.0, 0.011), "logg": (0.15, 0.15), "feh": (0.08, 0.10)}
#: Acceptance for anomalies: mean and worst AUROC, and the margin over the isolation forest.
AUROC_MEAN, AUROC_EACH, AUROC_MARGIN = 0.95, 0.90, 0.05
#: Calibration tolerance, in points of coverage: overall and per class.
COVERAGE_TOLERANCE = (3.0, 5.0)
SEED = 16
#: Neighbours of the nearest-neighbour probe (fewer when a fold has fewer spectra).
PROBE_NEIGHBOURS = 10
#: Emission lines injected (A): H alpha, H beta, [O III], [N II].
EMISSION_LINES = (6562.8, 4861.3, 5006.8, 6583.4)
C_KMS = 299792.458


@dataclass
class TagData:
    """The spectra evaluated, in store order: their stars, labels, noise (NaN unknown), the
    encoder's latent vectors and reconstruction errors, the flux and mask the encoder reads, the
    store grid's wavelengths, and which rows the encoder was trained without (``held_out``)."""

    names: list[str]
    groups: np.ndarray
    labels: dict[str, np.ndarray]
    noise: np.ndarray
    latent: np.ndarray
    recon_error: np.ndarray
    flux: np.ndarray
    mask: np.ndarray
    wavelength: np.ndarray
    held_out: np.ndarray
    #: How the views of the spectra the taggers read are made from (flux, mask).
    spectra_view: Callable[[np.ndarray, np.ndarray], np.ndarray]
    #: Encoder: (flux, mask) on the store grid -> (latent vectors, reconstruction errors).
    encode: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
    spectral_types: dict[str, str] | None = None

    @property
    def views(self) -> dict[str, np.ndarray]:
        return {"latent": self.latent, "spectra": self.spectra_view(self.flux, self.mask)}


# Tags and their calibration.

def _errors(label: str, predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Prediction errors, relative for Teff (its acceptance is relative)."""
    return (predicted - truth) / truth if label in LOG_LABELS else predicted - truth


def tag_figures(data: TagData, folds: int = FOLDS) -> dict:
    """Every candidate's out-of-fold accuracy, and the served tagger's, cross-validated whole
    (choice and calibration inside each fold), with its coverage and PIT."""
    views, dimension = data.views, data.latent.shape[1]
    fgk_rows = spectral_class(data.labels.get("teff", np.full(len(data.groups), np.nan))) == "FGK"
    by_candidate: dict[str, dict] = {}
    for candidate in tracked(candidates(), "tag candidates", unit="regressor"):
        by_candidate[candidate.title] = {}
        for label, values in data.labels.items():
            known = np.isfinite(values)
            target = np.log10(values[known]) if label in LOG_LABELS else values[known]
            predicted = np.full(len(values), np.nan)
            predicted[known] = out_of_fold(lambda c=candidate: c.make(dimension),
                                           views[candidate.view][known], target,
                                           data.groups[known], folds)
            if label in LOG_LABELS:
                predicted = 10.0 ** predicted
            by_candidate[candidate.title][label] = _fgk_accuracy(label, predicted, values, fgk_rows)
    columns, pits, star_class = cross_validated_tags(data.labels, views, data.groups, dimension,
                                                     folds)
    served = {label: _fgk_accuracy(label, columns[f"ml_{label}"], values, fgk_rows)
              for label, values in data.labels.items()}
    return {"candidates": by_candidate, "served": served,
            "coverage": _coverage(columns, data.labels, star_class), "pits": pits,
            "classes": {name: int(np.sum(star_class == name)) for name in CLASSES}}


def _fgk_accuracy(label: str, predicted: np.ndarray, truth: np.ndarray, fgk: np.ndarray
                  ) -> dict[str, float]:
    """Robust sigma over FGK stars (by catalogue Teff) and median |error| over all."""
    known = np.isfinite(truth) & np.isfinite(predicted)
    return {"fgk_sigma": robust_sigma((predicted - truth)[known & fgk]),
            "median": float(np.median(np.abs(_errors(label, predicted, truth)[known])))}


#: The two ways of putting a star in a class when coverage is counted, and what each means.
TAXONOMIES = {
    "tagged": "by the class the tagger assigns from its own Teff estimate: the class its "
              "intervals are calibrated in, and the only one known for an unlabelled spectrum",
    "catalogue": "by the catalogue Teff",
}


def _coverage(columns: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray],
              tagged_class: np.ndarray) -> dict:
    """Percent of known values inside each interval, overall and per class of each of the
    :data:`TAXONOMIES`, with the number of stars in each class."""
    classes = {"tagged": tagged_class}
    if "teff" in labels:
        classes["catalogue"] = spectral_class(labels["teff"])
    table: dict = {}
    for label, truth in labels.items():
        known = np.isfinite(truth)
        for confidence, (low, high) in LEVELS.items():
            inside = (truth >= columns[f"ml_{label}{low}"]) & (truth <= columns[f"ml_{label}{high}"])
            row: dict = {"all": 100.0 * float(np.mean(inside[known]))}
            for taxonomy, assigned in classes.items():
                row[taxonomy] = {name: _percent_inside(inside, known & (assigned == name))
                                 for name in CLASSES}
            table.setdefault(label, {})[confidence] = row
    return table


def _percent_inside(inside: np.ndarray, rows: np.ndarray) -> tuple[float | None, int]:
    return (100.0 * float(np.mean(inside[rows])) if rows.any() else None), int(rows.sum())


# Anomalies.

def _emission(flux: np.ndarray, wavelength: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Emission lines of a nebula or an active star: H alpha, H beta, [O III], [N II]."""
    lines = sum(rng.uniform(0.5, 1.5) * np.exp(-0.5 * ((wavelength - centre) / 2.0) ** 2)
                for centre in EMISSION_LINES)
    return flux + lines


def _spikes(flux: np.ndarray, wavelength: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Cosmic-ray hits: ten one- or two-pixel spikes of 2 to 5 times the continuum."""
    spiked = flux.copy()
    for pixel in rng.choice(flux.size - 2, size=10, replace=False):
        spiked[pixel:pixel + rng.integers(1, 3)] += rng.uniform(2.0, 5.0)
    return spiked


def _tilt(flux: np.ndarray, wavelength: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A flux calibration the normalisation missed: a linear tilt of +-30% across the range."""
    x = (wavelength - wavelength.mean()) / np.ptp(wavelength)
    return flux * (1.0 + rng.choice([-1.0, 1.0]) * 0.6 * x)


def _shift(flux: np.ndarray, wavelength: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A radial velocity of 300 km/s the velocity measurement missed."""
    return np.interp(wavelength, wavelength * (1.0 + 300.0 / C_KMS), flux)


def _zeroed(flux: np.ndarray, wavelength: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A stretch of 5% of the pixels at zero, unmasked: a detector or reduction dropout."""
    width = flux.size // 20
    start = rng.integers(0, flux.size - width)
    zeroed = flux.copy()
    zeroed[start:start + width] = 0.0
    return zeroed


#: The kinds of defect injected, by name; the blend of two stars is made by :func:`_blends`.
INJECTIONS: Mapping[str, Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]] = {
    "emission lines": _emission, "cosmic-ray spikes": _spikes, "flux-calibration tilt": _tilt,
    "300 km/s shift": _shift, "zeroed stretch": _zeroed}
BLEND = "blend of two stars > 1500 K apart"


def _blends(flux: np.ndarray, teff: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each spectrum averaged with another of the set whose Teff differs by more than 1500 K
    (itself where there is none, or its Teff is unknown)."""
    blended = flux.copy()
    for row in range(len(flux)):
        apart = np.flatnonzero(np.abs(teff - teff[row]) > 1500.0)
        if apart.size:
            blended[row] = 0.5 * (flux[row] + flux[rng.choice(apart)])
    return blended


def anomaly_figures(data: TagData) -> dict:
    """AUROC of the anomaly score and of the isolation forest for each kind of defect,
    injected into every held-out spectrum (clean held-out spectra are the negatives); the
    scale and the forest know only the spectra the encoder was trained on. AUROC does not
    depend on how rare the anomalies are, so injecting into all of them (not 2%) measures the
    same figure with fifty times the positives."""
    train, test = ~data.held_out, data.held_out
    nearest = NearestNeighbors(n_neighbors=NEIGHBOURS + 1).fit(data.latent[train])
    distances, ids = (found[:, 1:] for found in nearest.kneighbors(data.latent[train]))
    scale = AnomalyScale.of_archive(data.recon_error[train], data.noise[train],
                                    np.arange(train.sum()), ids, distances)
    forest = IsolationForest(random_state=SEED).fit(data.latent[train])

    def scores(latent: np.ndarray, recon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        distances, ids = nearest.kneighbors(latent, n_neighbors=NEIGHBOURS)
        return (scale.score(recon, data.noise[test], ids, distances),
                -forest.score_samples(latent))

    clean = scores(data.latent[test], data.recon_error[test])
    rng = np.random.default_rng(SEED)
    flux, mask = data.flux[test], data.mask[test]
    injected = {kind: np.stack([change(f, data.wavelength, rng) for f in flux])
                for kind, change in INJECTIONS.items()}
    injected[BLEND] = _blends(flux, data.labels.get("teff", np.full(len(data.groups), np.nan))[test],
                              rng)
    figures = {}
    for kind, changed in tracked(list(injected.items()), "inject anomalies", unit="kind"):
        latent, recon = data.encode(changed.astype(np.float32), mask)
        ours, baseline = scores(latent, recon)
        truth = np.r_[np.zeros(len(clean[0])), np.ones(len(ours))]
        figures[kind] = {"ours": float(roc_auc_score(truth, np.r_[clean[0], ours])),
                         "forest": float(roc_auc_score(truth, np.r_[clean[1], baseline]))}
    return {"kinds": figures, "held_out": int(test.sum()), "training": int(train.sum())}


def oddest(names: Sequence[str], scores: np.ndarray, labels: Mapping[str, np.ndarray],
           spectral_types: Mapping[str, str] | None, count: int = 20) -> list[dict]:
    """The ``count`` highest-scoring spectra, with their spectral types and labels."""
    rows = []
    for row in np.argsort(-scores)[:count]:
        rows.append({"name": names[row], "score": float(scores[row]),
                     "type": (spectral_types or {}).get(names[row], ""),
                     **{label: float(values[row]) for label, values in labels.items()}})
    return rows


# What the latent space knows.

#: Nuisances probed: each changes the original spectrum by a level drawn at random in a range
#: (log-uniform where the second item says so), with the change of :mod:`vo_ml.ml.invariance`.
NUISANCES: Mapping[str, tuple[Callable, str, tuple[float, float], bool]] = {
    "velocity (km/s)": (shifted, "velocity", (-300.0, 300.0), False),
    "log10 S/N": (noisy, "snr", (10.0, 200.0), True),
    "log10 resolving power": (degraded, "power", (500.0, 2000.0), True),
    "continuum tilt exponent": (tilted, "alpha", (-4.0, 4.0), False),
}


def nuisance_samples(spectra: Sequence[Spectrum], groups: np.ndarray, preprocessing: Preprocessing,
                     encode: Callable[[np.ndarray, np.ndarray], np.ndarray]
                     ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """For each nuisance, the original ``spectra`` changed by a random level each, prepared as
    the archive's were and encoded: (latent vectors, groups, levels) of those that prepared."""
    rng = np.random.default_rng(SEED)
    samples = {}
    for name, (change, parameter, (low, high), logarithmic) in tracked(
            list(NUISANCES.items()), "nuisances", unit="nuisance"):
        drawn = (10.0 ** rng.uniform(np.log10(low), np.log10(high), len(spectra)) if logarithmic
                 else rng.uniform(low, high, len(spectra)))
        changed = [change(spectrum, rng, preprocessing.grid, **{parameter: float(level)})
                   for spectrum, level in zip(spectra, drawn, strict=True)]
        ok, flux, mask = prepared(changed, preprocessing)
        levels = np.log10(drawn) if logarithmic else drawn
        samples[name] = (encode(flux, mask), groups[ok], levels[ok])
    return samples


def probe_figures(samples: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
                  folds: int = FOLDS) -> dict:
    """For each quantity, given as (latent vectors, groups, values): the cross-validated R^2
    (split by group) of a linear (ridge) and a 10-nearest-neighbour probe reading it from the
    latent vectors, and the mutual information (nats) of each latent dimension with it."""
    figures = {}
    for name, (latent, groups, values) in tracked(list(samples.items()), "probes", unit="quantity"):
        known = np.isfinite(values)
        x, y, g = latent[known], values[known], groups[known]
        split = list(GroupKFold(n_splits=folds).split(x, y, g))
        linear = cross_val_predict(make_pipeline(StandardScaler(), RidgeCV(np.logspace(-3, 3, 13))),
                                   x, y, cv=split)
        neighbours = min(PROBE_NEIGHBOURS, *(len(fit) for fit, _ in split))
        nearest = cross_val_predict(
            make_pipeline(StandardScaler(), KNeighborsRegressor(neighbours)), x, y, cv=split)
        figures[name] = {"linear_r2": float(r2_score(y, linear)),
                         "knn_r2": float(r2_score(y, nearest)),
                         "mutual_information": [float(v) for v in mutual_info_regression(
                             x, y, random_state=SEED)]}
    return figures


def evaluate_tags(data: TagData, out: Path,
                  nuisances: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None,
                  archive_scores: np.ndarray | None = None) -> Path:
    """Measure tags, calibration, anomalies and probes; write ``report.md`` and plots in
    ``out``. ``nuisances`` are the samples of :func:`nuisance_samples`; ``archive_scores`` the
    served ``ml_anomaly`` of the rows, for the list of the oddest."""
    out.mkdir(parents=True, exist_ok=True)
    tags = tag_figures(data)
    anomalies = anomaly_figures(data)
    known = probe_figures({label: (data.latent, data.groups, values)
                           for label, values in data.labels.items()} | dict(nuisances or {}))
    listed = oddest(data.names, archive_scores, data.labels, data.spectral_types) if (
        archive_scores is not None) else []
    _plot_pits(tags["pits"], out / "pit.png")
    _plot_information(known, out / "mutual_information.png")
    report = out / "report.md"
    report.write_text("\n".join(markdown(tags, anomalies, known, listed)) + "\n")
    return report


# The report.

def _verdict(holds: bool) -> str:
    return "holds" if holds else "does not hold"


def markdown(tags: dict, anomalies: dict, probes: dict, listed: list[dict]) -> list[str]:
    """The report's text."""
    return [*_tag_lines(tags), *_calibration_lines(tags), *_anomaly_lines(anomalies, listed),
            *_probe_lines(probes), *_limitation_lines(tags, anomalies, probes, listed)]


def _figure(label: str, accuracy: dict) -> str:
    sigma = f"{accuracy['fgk_sigma']:.0f} K" if label == "teff" else f"{accuracy['fgk_sigma']:.3f}"
    return f"{sigma} / {accuracy['median']:.4f}" if label == "teff" else (
        f"{sigma} / {accuracy['median']:.3f}")


def _tag_lines(tags: dict) -> list[str]:
    labels = list(tags["served"])
    lines = ["# Physical tags, their uncertainties, and anomalies", "",
             "## Tags: which regressor, and how good", "",
             f"{FOLDS}-fold cross-validation split by star. Each cell: robust sigma (1.4826 x MAD) "
             "of the error over FGK stars (catalogue Teff 3900-7500 K) / median |error| over all "
             "stars (relative for Teff). Acceptance: " + "; ".join(
                 f"{label} {_acceptance_text(label)}" for label in labels) + ".", "",
             "| regressor | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for title, by_label in tags["candidates"].items():
        lines.append(f"| {title} | " + " | ".join(_figure(label, by_label[label])
                                                  for label in labels) + " |")
    lines.append("| **served** (best candidate chosen and calibrated inside each fold) | " + " | ".join(
        _figure(label, tags["served"][label]) for label in labels) + " |")
    lines += ["", "| label | acceptance | served | verdict |", "|---|---|---|---|"]
    for label in labels:
        sigma, median = ACCEPTANCE.get(label, (np.inf, np.inf))
        served = tags["served"][label]
        holds = served["fgk_sigma"] <= sigma and served["median"] <= median
        lines.append(f"| {label} | {_acceptance_text(label)} | {_figure(label, served)} | "
                     f"{_verdict(holds)} |")
    return [*lines, ""]


def _acceptance_text(label: str) -> str:
    sigma, median = ACCEPTANCE.get(label, (np.inf, np.inf))
    return f"{sigma:g} K / {median:g}" if label == "teff" else f"{sigma:g} / {median:g}"


def _calibration_lines(tags: dict) -> list[str]:
    overall, per_class = COVERAGE_TOLERANCE
    lines = ["## Calibration: do the intervals cover as often as they say?", "",
             f"Percent of catalogue values inside the served tagger's intervals (cross-validated "
             f"as above), with the number of stars in each class. Acceptance: within "
             f"+-{overall:g} points overall and +-{per_class:g} per class.", ""]
    for taxonomy, meaning in TAXONOMIES.items():
        rows = [(label, confidence, row) for label, by_level in tags["coverage"].items()
                for confidence, row in by_level.items() if taxonomy in row]
        if not rows:
            continue
        lines += [f"Classes {meaning}:", "",
                  "| label | interval | all | " + " | ".join(CLASSES) + " | verdict |",
                  "|---|---|---|" + "---|" * len(CLASSES) + "---|"]
        for label, confidence, row in rows:
            target = 100.0 * confidence
            cells = [f"{share:.1f} ({count})" if share is not None else "-"
                     for share, count in row[taxonomy].values()]
            holds = abs(row["all"] - target) <= overall and all(
                share is None or abs(share - target) <= per_class
                for share, _ in row[taxonomy].values())
            lines.append(f"| {label} | {target:.0f}% | {row['all']:.1f} | " + " | ".join(cells)
                         + f" | {_verdict(holds)} |")
        lines.append("")
    counts = [count for by_level in tags["coverage"].values() for row in by_level.values()
              for taxonomy in TAXONOMIES if taxonomy in row
              for _, count in row[taxonomy].values() if count]
    if counts:
        smallest = min(counts)
        lines += [f"A class of n stars measures a 68% coverage to within sqrt(0.68 x 0.32 / n) "
                  f"by chance alone: {100 * np.sqrt(0.68 * 0.32 / smallest):.1f} points for the "
                  f"smallest here ({smallest} stars), so a class that misses by about that much "
                  "is not shown to be miscalibrated. The two tables differ where stars are "
                  "tagged in another class than their catalogue Teff: a few FGK stars taken "
                  "for OBA stars, with large errors, widen the OBA intervals, which then "
                  "over-cover the catalogue OBA stars.", ""]
    return [*lines, "The probability integral transform of each catalogue value under the "
            "predictive distribution the intervals come from is flat when they are calibrated:",
            "", "![PIT](pit.png)", ""]


def _anomaly_lines(anomalies: dict, listed: list[dict]) -> list[str]:
    kinds = anomalies["kinds"]
    mean_ours = float(np.mean([k["ours"] for k in kinds.values()]))
    mean_forest = float(np.mean([k["forest"] for k in kinds.values()]))
    lines = ["## Anomalies", "",
             f"The encoder, the anomaly scale and the isolation forest know {anomalies['training']} "
             f"spectra; each kind of defect is injected into each of the {anomalies['held_out']} "
             "held-out spectra, as the encoder reads them (normalised, in the rest frame: the "
             "shift and the tilt stand for a velocity or a calibration the preparation missed; "
             "the archive's preparation removes real ones). AUROC against the clean held-out "
             f"spectra. Acceptance: mean >= {AUROC_MEAN:g}, each >= {AUROC_EACH:g}, mean "
             f">= {AUROC_MARGIN:g} above the isolation forest.", "",
             "| defect | ml_anomaly | isolation forest on the latent vectors |", "|---|---|---|"]
    lines += [f"| {kind} | {row['ours']:.3f} | {row['forest']:.3f} |" for kind, row in kinds.items()]
    lines.append(f"| **mean** | {mean_ours:.3f} | {mean_forest:.3f} |")
    holds = (mean_ours >= AUROC_MEAN and min(k["ours"] for k in kinds.values()) >= AUROC_EACH
             and mean_ours - mean_forest >= AUROC_MARGIN)
    lines += ["", f"Acceptance {_verdict(holds)}.", ""]
    if listed:
        labels = [key for key in listed[0] if key not in ("name", "score", "type")]
        lines += ["### The archive's 20 oddest spectra (highest ml_anomaly)", "",
                  "| spectrum | ml_anomaly | spectral type | " + " | ".join(labels) + " |",
                  "|---|---|---|" + "---|" * len(labels)]
        lines += [f"| {row['name']} | {row['score']:.2f} | {row['type']} | " + " | ".join(
            "" if not np.isfinite(row[label]) else f"{row[label]:g}" for label in labels) + " |"
            for row in listed]
        lines.append("")
    return lines


def _probe_lines(probes: dict) -> list[str]:
    lines = ["## What the latent space knows", "",
             f"Cross-validated R^2 ({FOLDS} folds by star) of a ridge regression and of 10 nearest "
             "neighbours reading each quantity from the latent vector, and the largest mutual "
             "information (nats) of one latent dimension with it. Nuisances were applied to the "
             "original files, at a random level each, before the spectra were prepared as the "
             "archive's were: R^2 near 0 means the latent space does not see it.", "",
             "| quantity | linear R^2 | kNN R^2 | max MI of one dimension | most informative "
             "dimension |", "|---|---|---|---|---|"]
    for name, row in probes.items():
        information = np.asarray(row["mutual_information"])
        lines.append(f"| {name} | {row['linear_r2']:.2f} | {row['knn_r2']:.2f} | "
                     f"{information.max():.2f} | {int(information.argmax())} |")
    return [*lines, "", "![mutual information](mutual_information.png)", ""]


#: A probe R^2 below this says the latent space does not see the quantity.
UNSEEN_R2 = 0.1


def _limitation_lines(tags: dict, anomalies: dict, probes: dict, listed: list[dict]
                      ) -> list[str]:
    """What the figures above mean for a user, in plain words, each claim with its number."""
    served = tags["served"]
    lines = ["## Uses and limitations, in plain words", ""]
    if "teff" in served:
        lines.append(
            f"- A Teff tag of an FGK star the tagger never saw is typically off by "
            f"{served['teff']['fgk_sigma']:.0f} K (robust sigma), and half of all stars' tags are "
            f"within {100 * served['teff']['median']:.1f}% of the catalogue: good for choosing "
            "stars by type, not for a temperature to publish; full-spectrum fitting reaches about "
            "60 K on MILES.")
    if "logg" in served:
        lines.append(
            f"- log g is typically off by {served['logg']['fgk_sigma']:.2f} dex for FGK stars: "
            "enough to tell dwarfs from giants, not subgiants from either.")
    if "feh" in served:
        lines.append(
            f"- [Fe/H] is typically off by {served['feh']['fgk_sigma']:.2f} dex for FGK stars: "
            "metal-poor from metal-rich, not finer.")
    lines.append(
        "- Trust the intervals more than the values: they are calibrated on stars the tagger did "
        "not see and cover as often as they say overall (table above). They are symmetric "
        "about the estimate, so where the PIT histogram slopes the errors lean one way; and they "
        "describe stars like the archive's: for a spectrum unlike them (high ml_anomaly) they say "
        "nothing.")
    kinds = anomalies["kinds"]
    weakest = min(kinds, key=lambda kind: kinds[kind]["ours"])
    lines.append(
        f"- ml_anomaly finds every injected defect with an AUROC of at least "
        f"{kinds[weakest]['ours']:.2f} (the hardest: {weakest}); an isolation forest on the "
        "latent vectors misses those the encoder smooths away. The shift and the tilt were "
        "injected after preparation: the archive's preparation removes a star's real velocity "
        "and calibration, so a fast star is not an oddity. Read ORDER BY ml_anomaly DESC as a "
        "list to look at, not a verdict" + (": the archive's ten highest are " + ", ".join(
            f"{' '.join(row['name'].split())} ({row['type'] or 'no type'})" for row in listed[:10])
            if listed else "") + ".")
    unseen = [name for name, row in probes.items()
              if max(row["linear_r2"], row["knn_r2"]) < UNSEEN_R2]
    seen = [name for name, row in probes.items() if name not in unseen]
    if unseen:
        lines.append(f"- The latent space does not see {', '.join(unseen)} (probe R^2 below "
                     f"{UNSEEN_R2:g}): spectra differing only in those are neighbours.")
    if seen:
        lines.append("- It sees " + ", ".join(
            f"{name} (R^2 up to {max(probes[name]['linear_r2'], probes[name]['knn_r2']):.2f})"
            for name in seen) + "; a nuisance among these (a resolution lower than the "
            "archive's cannot be sharpened to it) moves a spectrum's neighbours and its tags.")
    return [*lines, ""]


def _plot_pits(pits: Mapping[str, np.ndarray], path: Path) -> None:
    plt = pyplot()
    figure, axes = plt.subplots(1, len(pits), figsize=(4 * len(pits), 3), squeeze=False)
    for axis, (label, values) in zip(axes[0], pits.items(), strict=True):
        values = values[np.isfinite(values)]
        axis.hist(values, bins=10, range=(0, 1), color="0.6", edgecolor="k")
        axis.axhline(len(values) / 10, color="C3", lw=1)
        axis.set_title(f"PIT of {label}")
        axis.set_xlabel("PIT")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _plot_information(probes: Mapping[str, dict], path: Path) -> None:
    plt = pyplot()
    names = list(probes)
    table = np.array([probes[name]["mutual_information"] for name in names])
    figure, axis = plt.subplots(figsize=(1 + 0.4 * table.shape[1], 0.6 + 0.4 * len(names)))
    image = axis.imshow(table, aspect="auto", cmap="viridis")
    axis.set_yticks(range(len(names)), names)
    axis.set_xlabel("latent dimension")
    figure.colorbar(image, ax=axis, label="mutual information (nats)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)

