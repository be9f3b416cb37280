"""Physical tags with calibrated intervals, learnt from the archive's labelled spectra.

For every label its catalogue gives (Teff, log g, [Fe/H], ...), several regressors compete on
different views of the same spectra: the model's latent space, PCA of the flux at the latent
dimension, and the flux itself. Each is scored out of fold, split by star (no star helps predict
itself), and the one with the smallest median error serves the label.

The intervals are conformal (:class:`crepes.ConformalRegressor`): the out-of-fold residuals of
the served regressor, per class of star (OBA, FGK, M, by the Teff the tagger predicts, so an
unlabelled spectrum falls in a class the same way) where a class has enough of them, calibrate
the 68% and 95% bounds. A residual never comes from the model that saw its star, which is what
makes the coverage honest for the labelled spectra as for new ones.

Teff is learnt and calibrated as log10(Teff), so its intervals are relative, as its errors are.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import joblib
import numpy as np
from crepes import ConformalRegressor
from sklearn.base import RegressorMixin
from sklearn.decomposition import PCA
from sklearn.model_selection import GroupKFold
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from vo_ml.files import replacing
from vo_ml.ml.anomaly import AnomalyScale
from vo_ml.progress import tracked

__all__ = ["CLASSES", "LEVELS", "FOLDS", "LOG_LABELS", "Candidate", "LabelTagger", "Tagger",
           "candidates", "cross_validated_tags", "fit_label", "fit_tagger", "out_of_fold",
           "robust_sigma", "spectra_view", "Tagging", "tagging_path", "spectral_class",
           "tag_columns", "bound_names"]

#: Classes of star by effective temperature (K): the bins intervals are calibrated in.
CLASSES: Mapping[str, tuple[float, float]] = {
    "M": (0.0, 3900.0), "FGK": (3900.0, 7500.0), "OBA": (7500.0, np.inf)}
#: Interval confidences, and the suffixes of their bound columns.
LEVELS: Mapping[float, tuple[str, str]] = {0.68: ("_lo", "_hi"), 0.95: ("_lo95", "_hi95")}
#: Folds of the star-split cross-validation.
FOLDS = 5
#: A class calibrates its own intervals with at least this many residuals; else all do.
MIN_CLASS_RESIDUALS = 30
#: Labels learnt as their decimal logarithm.
LOG_LABELS = frozenset({"teff"})
#: The label whose predictions put a star in its class.
CLASS_LABEL = "teff"
#: Seed of PCA's randomised solver, so the same archive is tagged the same way every run.
PCA_SEED = 16
#: The layout of a saved :class:`Tagging`; raised whenever what it holds changes.
TAGGING_LAYOUT = 3


def spectral_class(teff: np.ndarray) -> np.ndarray:
    """The class (:data:`CLASSES`) of each temperature; "" where it is unknown."""
    teff = np.asarray(teff, float)
    found = np.full(teff.shape, "", dtype=object)
    for name, (low, high) in CLASSES.items():
        found[(teff >= low) & (teff < high)] = name
    return found


def robust_sigma(errors: np.ndarray) -> float:
    """1.4826 times the median absolute deviation: the standard deviation of the core of the
    errors, blind to a few outliers."""
    errors = np.asarray(errors, float)
    return float(1.4826 * np.median(np.abs(errors - np.median(errors))))


def tag_columns(label: str) -> tuple[str, ...]:
    """The archive columns of a label's tag: the value and its bounds at every level."""
    return (f"ml_{label}", *bound_names(label))


def bound_names(label: str) -> tuple[str, ...]:
    """The bound columns of a label's tag, low and high at each of :data:`LEVELS`."""
    return tuple(f"ml_{label}{suffix}" for pair in LEVELS.values() for suffix in pair)


@dataclass(frozen=True)
class Candidate:
    """One way to predict a label: a regressor (a scikit-learn estimator, made anew for every
    fit, given the latent dimension) on one view of the spectra, ``view``: "latent" (the
    embeddings) or "spectra" (the flux at the model's sampling, by :func:`spectra_view`)."""

    title: str
    view: str
    make: Callable[[int], RegressorMixin]


def _neighbours() -> KNeighborsRegressor:
    return KNeighborsRegressor(n_neighbors=5, weights="distance")


def candidates() -> list[Candidate]:
    """The regressors compared for every label: nearest neighbours in the latent space as the
    service measures distances, in PCA of the flux at the same dimension, and in the
    standardised flux."""
    return [
        Candidate("5 nearest neighbours in the latent space", "latent",
                  lambda dim: make_pipeline(_neighbours())),
        Candidate("5 nearest neighbours in PCA of the flux, at the latent dimension", "spectra",
                  lambda dim: make_pipeline(PCA(dim, random_state=PCA_SEED), _neighbours())),
        Candidate("5 nearest neighbours in the standardised flux", "spectra",
                  lambda dim: make_pipeline(StandardScaler(), _neighbours())),
    ]


def spectra_view(flux: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Flux at the model's sampling as the regressors on the spectra read it: masked pixels at
    the continuum (1, the normalised flux's level), so a gap reads as no line."""
    return np.where(mask, 1.0, flux).astype(np.float32)


def out_of_fold(make: Callable[[], RegressorMixin], features: np.ndarray, target: np.ndarray,
                groups: np.ndarray, folds: int = FOLDS) -> np.ndarray:
    """Every row's prediction by a regressor fitted on the other folds (split by ``groups``):
    no row, nor any row of its star, is predicted by a model that saw it."""
    predicted = np.full(len(target), np.nan)
    for fit_rows, test_rows in GroupKFold(n_splits=folds).split(features, target, groups):
        model = make().fit(features[fit_rows], target[fit_rows])
        predicted[test_rows] = model.predict(features[test_rows])
    return predicted


@dataclass
class LabelTagger:
    """One label's served regressor, fitted on every labelled spectrum, and its calibration."""

    label: str
    candidate: str
    view: str
    model: Pipeline
    calibrator: ConformalRegressor
    overall: ConformalRegressor
    #: The sorted absolute out-of-fold residuals (learnt scale) by class, "" for all of them:
    #: what the intervals are calibrated on, kept for the PIT of :meth:`pit`.
    residuals: dict[str, np.ndarray]
    #: Out-of-fold median absolute error of each candidate, by title.
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def classes(self) -> tuple[str, ...]:
        """The classes with intervals of their own; the others use all the residuals."""
        return tuple(name for name in self.residuals if name)

    def estimate(self, features: np.ndarray) -> np.ndarray:
        """The served regressor's predictions, in the learnt scale (log10 for Teff)."""
        return self.model.predict(features)

    def with_bounds(self, estimate: np.ndarray, star_class: np.ndarray | None
                    ) -> dict[str, np.ndarray]:
        """The tag and its conformal bounds by column name, in the label's unit, for
        predictions in the learnt scale of stars of the given classes."""
        bins = self._bins(star_class, len(estimate))
        columns = {f"ml_{self.label}": estimate}
        for confidence, (low, high) in LEVELS.items():
            bounds = np.empty((len(estimate), 2))
            binned = bins != ""
            if binned.any():
                bounds[binned] = self.calibrator.predict_int(
                    estimate[binned], bins=bins[binned], confidence=confidence)
            if (~binned).any():
                bounds[~binned] = self.overall.predict_int(estimate[~binned], confidence=confidence)
            columns[f"ml_{self.label}{low}"] = bounds[:, 0]
            columns[f"ml_{self.label}{high}"] = bounds[:, 1]
        return {name: _in_unit(self.label, values) for name, values in columns.items()}

    def pit(self, estimate: np.ndarray, truth: np.ndarray, star_class: np.ndarray | None
            ) -> np.ndarray:
        """The probability integral transform of each true value under the predictive
        distribution the intervals come from (residuals symmetric about the estimate): uniform
        on [0, 1] when the intervals are calibrated."""
        bins = self._bins(star_class, len(estimate))
        offset = _learnt(self.label, np.asarray(truth, float)) - estimate
        share = np.array([np.searchsorted(self.residuals[b], abs(o), side="right")
                          / len(self.residuals[b]) for b, o in zip(bins, offset, strict=True)])
        return 0.5 + 0.5 * np.sign(offset) * share

    def _bins(self, star_class: np.ndarray | None, count: int) -> np.ndarray:
        """The calibration bin of each row: its class when that class has its own intervals."""
        if star_class is None:
            return np.full(count, "", dtype=object)
        star_class = np.asarray(star_class, dtype=object)
        return np.where(np.isin(star_class, list(self.classes)), star_class, "").astype(object)


def _learnt(label: str, values: np.ndarray) -> np.ndarray:
    """Values in the scale the label is learnt in."""
    return np.log10(values) if label in LOG_LABELS else values


def _in_unit(label: str, values: np.ndarray) -> np.ndarray:
    """Learnt-scale values back in the label's unit."""
    return 10.0 ** values if label in LOG_LABELS else values


def fit_label(label: str, values: np.ndarray, views: Mapping[str, np.ndarray], groups: np.ndarray,
              star_class: np.ndarray | None, dimension: int,
              choices: Sequence[Candidate] | None = None) -> tuple[LabelTagger, np.ndarray]:
    """The best candidate for ``label`` (by out-of-fold median absolute error on the rows whose
    value is known), fitted on all of them and calibrated on its out-of-fold residuals in the
    classes of ``star_class`` (for Teff, the classes of its own predictions); and its
    out-of-fold predictions, in the learnt scale, NaN where the label is unknown."""
    choices = list(choices or candidates())
    known = np.isfinite(values)
    target = _learnt(label, values[known])
    predictions, scores = {}, {}
    for candidate in choices:
        if candidate.view in views:
            predictions[candidate.title] = out_of_fold(
                lambda c=candidate: c.make(dimension), views[candidate.view][known], target,
                groups[known])
            scores[candidate.title] = float(np.median(np.abs(predictions[candidate.title] - target)))
    best = min(scores, key=scores.__getitem__)
    chosen = next(c for c in choices if c.title == best)
    oof = np.full(len(values), np.nan)
    oof[known] = predictions[best]
    if star_class is None and label == CLASS_LABEL:
        star_class = spectral_class(_in_unit(label, oof))
    classes = (np.full(len(values), "", dtype=object) if star_class is None
               else np.asarray(star_class, dtype=object))[known]
    residuals = np.abs(target - predictions[best])
    by_class = {name: np.sort(residuals[classes == name]) for name in CLASSES
                if np.sum(classes == name) >= MIN_CLASS_RESIDUALS}
    binned = np.isin(classes, list(by_class))
    calibrator = ConformalRegressor().fit(residuals[binned], bins=classes[binned]) if (
        by_class) else ConformalRegressor().fit(residuals)
    model = chosen.make(dimension).fit(views[chosen.view][known], target)
    return LabelTagger(label, best, chosen.view, model, calibrator,
                       ConformalRegressor().fit(residuals), {"": np.sort(residuals)} | by_class,
                       scores), oof


@dataclass
class Tagger:
    """The taggers of every label. Stars fall in their class by the Teff tagger's estimate."""

    labels: dict[str, LabelTagger]

    def estimates(self, views: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every label's estimate, in the learnt scale, for rows given in each view."""
        return {label: tagger.estimate(views[tagger.view]) for label, tagger in self.labels.items()}

    def star_class(self, estimates: Mapping[str, np.ndarray]) -> np.ndarray | None:
        """The class of each row by its estimated Teff; None without a Teff tagger."""
        if CLASS_LABEL not in estimates:
            return None
        return spectral_class(_in_unit(CLASS_LABEL, estimates[CLASS_LABEL]))

    def tag(self, views: Mapping[str, np.ndarray],
            out_of_fold: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Every tag column (values and bounds, in the labels' units) for rows given in each
        view the taggers use. Where ``out_of_fold`` gives a label's estimate (learnt scale, NaN
        elsewhere), it replaces the served regressor's: a labelled archive spectrum is tagged
        by a model that did not see its star, as its interval was calibrated."""
        estimates = self.estimates(views)
        for label, estimate in (out_of_fold or {}).items():
            estimates[label] = np.where(np.isfinite(estimate), estimate, estimates[label])
        star_class = self.star_class(estimates)
        columns: dict[str, np.ndarray] = {}
        for label, tagger in self.labels.items():
            columns |= tagger.with_bounds(estimates[label], star_class)
        return columns

    @property
    def views(self) -> set[str]:
        """The views of the spectra the taggers need."""
        return {tagger.view for tagger in self.labels.values()}


def fit_tagger(labels: Mapping[str, np.ndarray], views: Mapping[str, np.ndarray],
               groups: np.ndarray, dimension: int, choices: Sequence[Candidate] | None = None
               ) -> tuple[Tagger, dict[str, np.ndarray]]:
    """A tagger for every label, Teff first: its out-of-fold estimates put the stars in the
    classes the other labels calibrate in. Also returns each label's out-of-fold estimates
    (learnt scale, NaN where the label is unknown), for :meth:`Tagger.tag`."""
    fitted: dict[str, LabelTagger] = {}
    estimates: dict[str, np.ndarray] = {}
    star_class = None
    for label in sorted(labels, key=lambda name: name != CLASS_LABEL):
        fitted[label], estimates[label] = fit_label(
            label, np.asarray(labels[label], float), views, groups, star_class, dimension, choices)
        if label == CLASS_LABEL:
            star_class = spectral_class(_in_unit(label, estimates[label]))
    return Tagger(fitted), estimates


def cross_validated_tags(labels: Mapping[str, np.ndarray], views: Mapping[str, np.ndarray],
                         groups: np.ndarray, dimension: int, folds: int = FOLDS,
                         choices: Sequence[Candidate] | None = None
                         ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
    """Tags of every row by a tagger fitted, chosen and calibrated without its star (folds split
    by ``groups``): what the archive's tags are worth on stars the tagger never saw. Returns the
    tag columns, each label's PIT and the class each row was tagged in."""
    count = len(groups)
    columns: dict[str, np.ndarray] = {}
    pits = {label: np.full(count, np.nan) for label in labels}
    star_class = np.full(count, "", dtype=object)
    splits = list(GroupKFold(n_splits=folds).split(np.zeros(count), groups=groups))
    for fit_rows, test_rows in tracked(splits, "cross-validate tags", unit="fold"):
        tagger, _ = fit_tagger(
            {label: np.asarray(v, float)[fit_rows] for label, v in labels.items()},
            {name: view[fit_rows] for name, view in views.items()}, groups[fit_rows], dimension,
            choices)
        test_views = {name: view[test_rows] for name, view in views.items()}
        estimates = tagger.estimates(test_views)
        classes = tagger.star_class(estimates)
        if classes is not None:
            star_class[test_rows] = classes
        for label, label_tagger in tagger.labels.items():
            for name, values in label_tagger.with_bounds(estimates[label], classes).items():
                columns.setdefault(name, np.full(count, np.nan))[test_rows] = values
            pits[label][test_rows] = label_tagger.pit(
                estimates[label], np.asarray(labels[label], float)[test_rows], classes)
    return columns, pits, star_class


@dataclass
class Tagging:
    """What ``vo-ml tag`` learnt for one table, kept beside the archive so the service tags
    uploaded spectra as the table's own were: the tagger (None when the table has no labels),
    the anomaly scale and the model whose embeddings both read."""

    model_id: str
    tagger: Tagger | None
    anomaly: AnomalyScale
    #: The layout of what is saved; a file of another layout is made again by ``vo-ml tag``.
    layout: int = TAGGING_LAYOUT

    def save(self, path: Path) -> None:
        """Write it to ``path`` whole (a reader sees the old file or the new one)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with replacing(path) as new:
            joblib.dump(self, new.path)

    @classmethod
    def load(cls, path: Path) -> Tagging | None:
        """The tagging saved at ``path``, or None when there is none or it was saved in another
        layout (by another version of vo_ml)."""
        kept = joblib.load(path) if path.is_file() else None
        return kept if getattr(kept, "layout", None) == TAGGING_LAYOUT else None


def tagging_path(db: str | Path, table: str) -> Path:
    """Where the tagging of ``table`` is kept: ``<db>.tags/<table>.joblib``."""
    return Path(f"{db}.tags") / f"{table}.joblib"
