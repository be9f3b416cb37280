"""Invariance curves: does a star keep its neighbours when its spectrum is observed differently?

A seeded sample of archive stars is read again from their original files (the store holds them
prepared already), and each spectrum is perturbed as another instrument or night would change it,
before preparation: a radial velocity, noise, a lower resolution, a continuum tilt or a flux
calibration error, partial wavelength coverage. The perturbed spectrum is prepared as the
archive's were and encoded; two figures say how much its answer moved:

- recall@10: the share of the unperturbed spectrum's 10 nearest archive rows that the perturbed
  one still finds (the star's own row left out of both);
- the distance from the unperturbed spectrum's point, over the archive's median nearest-neighbour
  distance (above 1: the perturbation moves it farther than archive neighbours are apart).

Every representation (models, PCA, raw flux) sees the same perturbed spectra.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy import units as u

from vo_ml.ml.evaluation import Representation, distances, nearest_rows
from vo_ml.ml.probes import read_prepared
from vo_ml.progress import tracked
from vo_ml.spectra.encodable import encodable
from vo_ml.spectra.grid import Grid, Preprocessing, resolving_power, smooth_to_fwhm
from vo_ml.spectra.record import Spectrum
from vo_ml.spectra.velocity import doppler_to_rest

__all__ = ["Perturbation", "perturbations", "invariance", "markdown", "plot", "RECALL_THRESHOLD",
           "shifted", "noisy", "degraded", "tilted", "prepared",
           "NEIGHBOURS", "STARS", "SEED"]

#: Neighbours compared, and the share of them a perturbation must keep to be harmless.
NEIGHBOURS = 10
RECALL_THRESHOLD = 0.8
#: Acceptance for partial coverage: at most the archive's own nearest-neighbour distance away.
DISTANCE_THRESHOLD = 1.0
STARS = 100
SEED = 15

VELOCITIES_KMS = (0.0, 10.0, 30.0, 100.0, 300.0)
SIGNAL_TO_NOISE = (200.0, 100.0, 50.0, 20.0, 10.0)
RESOLVING_POWERS = (2000.0, 1500.0, 1000.0, 500.0)
TILT_EXPONENTS = (-4.0, -2.0, -1.0, 1.0, 2.0, 4.0)
#: Largest coefficient of the random cubic that stands for a flux-calibration error.
CUBIC_AMPLITUDE = 0.3
COVERAGE_PERCENT = (80.0, 60.0, 50.0, 40.0, 30.0)
#: Acceptance: the perturbations a star must keep its neighbours under (km/s, S/N), and the
#: coverage that must land within the archive's distance scale (%).
ACCEPTED_VELOCITY_KMS = 100.0
ACCEPTED_SIGNAL_TO_NOISE = 20.0
ACCEPTED_COVERAGE_PERCENT = 50.0

#: A change made to an observed spectrum: the spectrum, a random generator and the store's grid.
Change = Callable[[Spectrum, np.random.Generator, Grid], Spectrum]


@dataclass(frozen=True)
class Perturbation:
    """One level of one kind of change; ``keeps`` and ``near`` say whether acceptance asks it to
    keep recall@10 >= RECALL_THRESHOLD, or to stay within the archive's distance scale."""

    kind: str
    label: str
    change: Change
    keeps: bool = False
    near: bool = False


def perturbations() -> list[Perturbation]:
    """Every perturbation measured, mildest first within each kind."""
    found = [Perturbation("velocity", f"{v:.0f} km/s", functools.partial(shifted, velocity=v),
                          keeps=v <= ACCEPTED_VELOCITY_KMS) for v in VELOCITIES_KMS]
    found += [Perturbation("S/N", f"S/N {s:.0f}", functools.partial(noisy, snr=s),
                           keeps=s >= ACCEPTED_SIGNAL_TO_NOISE) for s in SIGNAL_TO_NOISE]
    found += [Perturbation("resolution", f"R {r:.0f}", functools.partial(degraded, power=r))
              for r in RESOLVING_POWERS]
    found += [Perturbation("tilt", f"lambda^{a:+.0f}", functools.partial(tilted, alpha=a), keeps=True)
              for a in TILT_EXPONENTS]
    found.append(Perturbation("tilt", "random cubic", _cubic, keeps=True))
    found.append(Perturbation("coverage", "100%", functools.partial(_covering, share=1.0, red=False)))
    for red in (False, True):
        found += [Perturbation("coverage", f"{'red' if red else 'blue'} {c:.0f}%",
                               functools.partial(_covering, share=c / 100, red=red),
                               near=c == ACCEPTED_COVERAGE_PERCENT) for c in COVERAGE_PERCENT]
    return found


def _angstrom(spectrum: Spectrum) -> np.ndarray:
    return spectrum.wavelength.to_value(u.AA)


def shifted(spectrum: Spectrum, rng: np.random.Generator, grid: Grid, velocity: float) -> Spectrum:
    """The star receding ``velocity`` km/s faster."""
    return dataclasses.replace(spectrum, wavelength=doppler_to_rest(_angstrom(spectrum), -velocity) * u.AA)


def noisy(spectrum: Spectrum, rng: np.random.Generator, grid: Grid, snr: float) -> Spectrum:
    """Gaussian noise of the median flux over ``snr``."""
    good = ~spectrum.mask & np.isfinite(spectrum.flux)
    sigma = np.median(spectrum.flux[good]) / snr
    return dataclasses.replace(spectrum, flux=spectrum.flux + rng.normal(0.0, sigma, spectrum.flux.shape))


def degraded(spectrum: Spectrum, rng: np.random.Generator, grid: Grid, power: float) -> Spectrum:
    """Smoothed to resolving power ``power`` (at the middle of its range), which its file then
    states."""
    wavelength = _angstrom(spectrum)
    fwhm = wavelength[wavelength.size // 2] / power
    own = resolving_power(spectrum, wavelength)
    flux = smooth_to_fwhm(wavelength, spectrum.flux, spectrum.mask, fwhm, own)
    return dataclasses.replace(spectrum, flux=flux, mask=spectrum.mask | ~np.isfinite(flux),
                               meta=dataclasses.replace(spectrum.meta, resolving_power=power))


def tilted(spectrum: Spectrum, rng: np.random.Generator, grid: Grid, alpha: float) -> Spectrum:
    """Multiplied by a power law of the wavelength, 1 in the middle of the grid."""
    middle = np.sqrt(grid.start * grid.stop)
    return dataclasses.replace(spectrum, flux=spectrum.flux * (_angstrom(spectrum) / middle) ** alpha)


def _cubic(spectrum: Spectrum, rng: np.random.Generator, grid: Grid) -> Spectrum:
    """Multiplied by a random smooth cubic across the grid, as a flux-calibration error: between
    1 - 3 CUBIC_AMPLITUDE and 1 + 3 CUBIC_AMPLITUDE, so always positive."""
    x = (_angstrom(spectrum) - 0.5 * (grid.start + grid.stop)) / (0.5 * (grid.stop - grid.start))
    c1, c2, c3 = rng.uniform(-CUBIC_AMPLITUDE, CUBIC_AMPLITUDE, 3)
    return dataclasses.replace(spectrum, flux=spectrum.flux * (1 + c1 * x + c2 * x**2 + c3 * x**3))


def _covering(spectrum: Spectrum, rng: np.random.Generator, grid: Grid, share: float, red: bool) -> Spectrum:
    """Only ``share`` of the grid's pixels, at its red or blue end: coverage as ``ml_coverage``
    counts it."""
    wavelength = _angstrom(spectrum)
    pixels = round(share * grid.pixels)
    kept = (wavelength >= grid.edges[grid.pixels - pixels] if red
            else wavelength <= grid.edges[pixels])
    error = None if spectrum.error is None else spectrum.error[kept]
    return dataclasses.replace(spectrum, wavelength=spectrum.wavelength[kept], flux=spectrum.flux[kept],
                               mask=spectrum.mask[kept], error=error)


def sample(rows: Sequence[int], stars: int = STARS, seed: int = SEED) -> np.ndarray:
    """A seeded sample of at most ``stars`` rows, in row order."""
    rows = np.asarray(rows, dtype=int)
    chosen = np.random.default_rng(seed).choice(rows.size, size=min(stars, rows.size), replace=False)
    return np.sort(rows[chosen])


def invariance(representations: Sequence[Representation], sources: Mapping[int, Path],
               preprocessing: Preprocessing, stars: int = STARS, seed: int = SEED) -> dict:
    """Every figure of the invariance section, for a seeded sample of ``stars`` of the store rows
    whose original files ``sources`` names (row -> path)."""
    rows, spectra, unreadable = _originals(sources, sample(sorted(sources), stars, seed), preprocessing)
    figures: dict = {"stars": len(rows), "seed": seed, "unreadable": unreadable, "kinds": {}}
    if not rows:
        return figures
    rows = np.array(rows)
    reference = prepared(spectra, preprocessing)[1:]
    before = {r.name: _neighbour_sets(r, r.encode(*reference), rows) for r in representations}
    for index, perturbation in tracked(list(enumerate(perturbations())), "invariance", "perturbation"):
        changed = [perturbation.change(s, np.random.default_rng([seed, index, star]), preprocessing.grid)
                   for star, s in enumerate(spectra)]
        ok, flux, mask = prepared(changed, preprocessing)
        kind = figures["kinds"].setdefault(perturbation.kind, {"levels": [], "keeps": [], "near": [],
                                                                "prepared": [], "by": {}})
        kind["levels"].append(perturbation.label)
        kind["keeps"].append(perturbation.keeps)
        kind["near"].append(perturbation.near)
        kind["prepared"].append(int(ok.sum()))
        for representation in representations:
            points, neighbours = before[representation.name]
            recall, ratio = _moved(representation, points[ok], neighbours[ok], flux, mask, rows[ok])
            by = kind["by"].setdefault(representation.name, {"recall_at_10": [], "distance_ratio": []})
            by["recall_at_10"].append(recall)
            by["distance_ratio"].append(ratio)
    figures["acceptance"] = {r.name: _accepted(figures["kinds"], r.name) for r in representations}
    return figures


def _originals(sources: Mapping[int, Path], rows: np.ndarray, preprocessing: Preprocessing
               ) -> tuple[list[int], list[Spectrum], list[dict]]:
    """The rows whose original file reads and prepares, their spectra, and the others with why."""
    kept, spectra, unreadable = [], [], []
    for row in rows:
        try:
            spectrum, _, _ = read_prepared(sources[row], preprocessing)
        except ValueError as error:
            unreadable.append({"file": str(sources[row]), "reason": str(error)})
            continue
        kept.append(int(row))
        spectra.append(spectrum)
    return kept, spectra, unreadable


def prepared(spectra: Sequence[Spectrum], preprocessing: Preprocessing
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which spectra could be prepared, and their flux and mask on the grid."""
    ok, fluxes, masks = [], [], []
    for spectrum in spectra:
        try:
            flux, mask = encodable(spectrum, preprocessing)
        except ValueError:
            ok.append(False)
            continue
        ok.append(True)
        fluxes.append(flux)
        masks.append(mask)
    pixels = preprocessing.grid.pixels
    return (np.array(ok, bool), np.array(fluxes, np.float32).reshape(-1, pixels),
            np.array(masks, bool).reshape(-1, pixels))


def _neighbour_sets(representation: Representation, points: np.ndarray, rows: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The points and the nearest archive rows of spectra that are the archive's ``rows``,
    each row's own left out."""
    distance = distances(points, representation.points)
    distance[np.arange(rows.size), rows] = np.inf
    return points, nearest_rows(distance, NEIGHBOURS)


def _moved(representation: Representation, before: np.ndarray, neighbours: np.ndarray,
           flux: np.ndarray, mask: np.ndarray, rows: np.ndarray) -> tuple[float | None, float | None]:
    """Mean recall@10 of the perturbed spectra's neighbours, and the median distance they moved
    over the archive's scale; None when no perturbed spectrum could be prepared."""
    if not rows.size:
        return None, None
    after = representation.encode(flux, mask)
    _, found = _neighbour_sets(representation, after, rows)
    kept = [np.intersect1d(a, b).size / NEIGHBOURS for a, b in zip(found, neighbours, strict=True)]
    moved = np.linalg.norm(np.asarray(after, np.float64) - before, axis=1)
    return float(np.mean(kept)), float(np.median(moved) / representation.scale)


def _accepted(kinds: dict, name: str) -> dict:
    """Whether the representation keeps its neighbours where acceptance asks, per kind, and
    whether half coverage stays within the archive's distance scale."""
    verdict = {}
    for kind, figures in kinds.items():
        by = figures["by"][name]
        recalls = [r for r, keeps in zip(by["recall_at_10"], figures["keeps"], strict=True) if keeps]
        ratios = [d for d, near in zip(by["distance_ratio"], figures["near"], strict=True) if near]
        if recalls:
            verdict[kind] = all(r is not None and r >= RECALL_THRESHOLD for r in recalls)
        if ratios:
            verdict[f"{kind} {ACCEPTED_COVERAGE_PERCENT:.0f}%"] = all(
                d is not None and d <= DISTANCE_THRESHOLD for d in ratios)
    return verdict


def markdown(figures: dict | None, skipped_because: str | None = None) -> list[str]:
    """The invariance section of the report: one table per kind of perturbation."""
    lines = ["## Invariance: does a star keep its neighbours when observed differently?", ""]
    if figures is None or not figures.get("kinds"):
        reason = skipped_because or "no archive spectrum could be read from its original file"
        return lines + [f"Not measured: {reason}", ""] + _left_out(figures)
    lines += [f"{figures['stars']} archive stars (seed {figures['seed']}) read from their original "
              "files, perturbed, prepared as the archive's spectra were and encoded. Each cell: "
              f"recall@{NEIGHBOURS} of the unperturbed spectrum's {NEIGHBOURS} nearest archive rows "
              "(the star's own row aside) / distance moved over the archive's median "
              "nearest-neighbour distance. Acceptance: recall@10 >= "
              f"{RECALL_THRESHOLD:g} under shifts up to {ACCEPTED_VELOCITY_KMS:.0f} km/s, S/N >= "
              f"{ACCEPTED_SIGNAL_TO_NOISE:.0f} and continuum tilts; {ACCEPTED_COVERAGE_PERCENT:.0f}% "
              f"coverage within {DISTANCE_THRESHOLD:g} of the archive's distance scale.", ""]
    for kind, table in figures["kinds"].items():
        names = list(table["by"])
        lines += [f"### {kind}", "", "| perturbation | prepared | " + " | ".join(names) + " |",
                  "|---|---|" + "---|" * len(names)]
        for level, label in enumerate(table["levels"]):
            cells = [_cell(table["by"][n], level) for n in names]
            lines.append(f"| {label} | {table['prepared'][level]} | " + " | ".join(cells) + " |")
        lines += ["", f"![{kind}]({plot_name(kind)})", ""]
    lines += ["### Acceptance", "", "| representation | " + " | ".join(_verdicts(figures)) + " |",
              "|---|" + "---|" * len(_verdicts(figures))]
    for name, verdict in figures["acceptance"].items():
        lines.append(f"| {name} | " + " | ".join("yes" if verdict.get(v) else "no"
                                                 for v in _verdicts(figures)) + " |")
    return lines + _left_out(figures) + [""]


def _left_out(figures: dict | None) -> list[str]:
    """The sampled stars whose original file could not be read or prepared, with why."""
    return [f"- left out `{u['file']}`: {u['reason']}" for u in (figures or {}).get("unreadable", [])]


def _verdicts(figures: dict) -> list[str]:
    return list(dict.fromkeys(v for verdict in figures["acceptance"].values() for v in verdict))


def _cell(by: dict, level: int) -> str:
    recall, ratio = by["recall_at_10"][level], by["distance_ratio"][level]
    return "n/a" if recall is None else f"{recall:.2f} / {ratio:.2f}"


def plot_name(kind: str) -> str:
    return f"invariance_{kind.replace('/', '').replace(' ', '_').lower()}.png"


def plot(figures: dict, out: Path, pyplot: object) -> list[Path]:
    """One PNG per kind of perturbation: recall@10 and distance moved against the level."""
    made = []
    for kind, table in figures.get("kinds", {}).items():
        figure, (recall, moved) = pyplot.subplots(1, 2, figsize=(11, 3.8))
        x = np.arange(len(table["levels"]))
        for name, by in table["by"].items():
            recall.plot(x, [np.nan if r is None else r for r in by["recall_at_10"]], marker="o", label=name)
            moved.plot(x, [np.nan if d is None else d for d in by["distance_ratio"]], marker="o", label=name)
        recall.axhline(RECALL_THRESHOLD, color="grey", ls=":")
        moved.axhline(DISTANCE_THRESHOLD, color="grey", ls=":")
        titles = ((recall, f"recall@{NEIGHBOURS}"), (moved, "distance moved / archive NN distance"))
        for axis, title in titles:
            axis.set_xticks(x, table["levels"], rotation=45, ha="right", fontsize=7)
            axis.set(title=f"{kind}: {title}")
        recall.set_ylim(0, 1.02)
        recall.legend(fontsize=7)
        figure.tight_layout()
        path = out / plot_name(kind)
        figure.savefig(path, dpi=90)
        pyplot.close(figure)
        made.append(path)
    return made
