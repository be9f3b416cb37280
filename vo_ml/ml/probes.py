"""Same-star retrieval across instruments and epochs: do real spectra from elsewhere find their
star, or stars like it, among the archive's?

Probe files are read and prepared exactly as the archive's own spectra were (the preprocessing
its store recorded at ingest), then placed in every representation's space: the models' latent
spaces and, at equal dimension, PCA and the raw flux. The probes are public spectra of stars
MILES holds or resembles, in the layout of a real-spectra folder (``--real-spectra``):

- ``mangadap_test_spectra/xsl_spectrum_X0360_uvb.fits``: X-shooter, BD+01 2916, which is MILES
  m0505: how far down the ranking of the archive is the same star?
- ``harps_s1d/fits``: 24 HARPS nights of alpha Cen B (K1V, Teff about 5200 K; object HD128621 in
  ``harps_s1d/observations.csv``): do the nearest dwarfs of each night have its temperature, and,
  encoded together with the archive, are the nights each other's neighbours? The other object
  there, Gl 581 (an M dwarf), is a check of its own.
- ``lamost_laspec/KIC8098300/*/*``: eight LAMOST epochs (low and medium resolution) of one star:
  encoded together with the archive, are they each other's neighbours?

A file that cannot be read or prepared is listed with its reason and left out.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vo_ml.ml.evaluation import Representation, distances, nearest_rows
from vo_ml.progress import tracked
from vo_ml.spectra.encodable import encodable, recorded_preprocessing
from vo_ml.spectra.grid import Preprocessing
from vo_ml.spectra.readers import SpectrumReadError, read_spectrum
from vo_ml.spectra.record import Spectrum
from vo_ml.spectra.store import SpectrumStore

__all__ = ["ProbeSet", "Prepared", "store_preprocessing", "read_prepared", "prepare_files", "retrieval",
           "markdown", "XSHOOTER_MATCH_TOP", "TEFF_TOLERANCE", "DWARF_LOGG"]

XSHOOTER_FILE = "mangadap_test_spectra/xsl_spectrum_X0360_uvb.fits"
#: BD+01 2916's MILES spectrum: its publisher DID contains this.
XSHOOTER_MATCH = "m0505"
#: Acceptance: the same star is within this many nearest archive rows.
XSHOOTER_MATCH_TOP = 3
HARPS_FOLDER = "harps_s1d"
ALPHA_CEN_B = "HD128621"
#: alpha Cen B's effective temperature (K), and how far the median of its neighbours may be.
ALPHA_CEN_B_TEFF = 5200.0
TEFF_TOLERANCE = 300.0
#: Gl 581's effective temperature (K), for the M-dwarf check.
GL581_TEFF = 3450.0
#: The Teff each HARPS group should find among its nearest dwarfs.
EXPECTED_TEFF = {"nights": ALPHA_CEN_B_TEFF, "others": GL581_TEFF}
#: Dwarfs, as a user would ask for them: ``WHERE logg >= 4``.
DWARF_LOGG = 4.0
LAMOST_EPOCHS = "lamost_laspec/KIC8098300/*/*"
#: The neighbours a probe's answer is read from.
NEIGHBOURS = 5


@dataclass(frozen=True)
class ProbeSet:
    """The probe files of a real-spectra folder, by what they test; pieces the folder lacks are
    empty and named in ``missing``."""

    folder: Path
    xshooter: tuple[Path, ...]
    nights: tuple[Path, ...]
    others: tuple[Path, ...]
    epochs: tuple[Path, ...]
    missing: tuple[str, ...] = ()

    @classmethod
    def in_folder(cls, folder: Path) -> ProbeSet:
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"--real-spectra {folder}: no such folder; give the folder that "
                                    f"holds {HARPS_FOLDER}/, lamost_laspec/ and mangadap_test_spectra/")
        missing = []
        xshooter = folder / XSHOOTER_FILE
        if not xshooter.is_file():
            missing.append(XSHOOTER_FILE)
        nights, others = _harps_by_object(folder / HARPS_FOLDER, missing)
        epochs = tuple(sorted(p for p in folder.glob(LAMOST_EPOCHS) if p.is_file()))
        if not epochs:
            missing.append(LAMOST_EPOCHS)
        return cls(folder, (xshooter,) if xshooter.is_file() else (), nights, others, epochs,
                   tuple(missing))


def _harps_by_object(harps: Path, missing: list[str]) -> tuple[tuple[Path, ...], tuple[Path, ...]]:
    """The alpha Cen B files and the others, as ``observations.csv`` names their objects."""
    table = harps / "observations.csv"
    if not table.is_file():
        missing.append(f"{HARPS_FOLDER}/observations.csv")
        return (), ()
    with open(table, newline="", encoding="utf-8") as rows:
        objects = [(harps / row["file"], row["object"]) for row in csv.DictReader(rows)]
    return (tuple(path for path, name in objects if name == ALPHA_CEN_B),
            tuple(path for path, name in objects if name != ALPHA_CEN_B))


def store_preprocessing(store: SpectrumStore) -> Preprocessing:
    """The steps the store's spectra went through at ingest, for spectra from elsewhere, as the
    service's ml_encode takes them (:func:`recorded_preprocessing`)."""
    return recorded_preprocessing(store.grid.as_dict(), store.preprocess)


def read_prepared(path: Path, preprocessing: Preprocessing) -> tuple[Spectrum, np.ndarray, np.ndarray]:
    """The file's spectrum, and its flux and mask prepared as the archive's spectra were
    (:func:`encodable`); a ValueError says, in a line for the report, why it cannot be."""
    try:
        spectrum = read_spectrum(path)
        flux, mask = encodable(spectrum, preprocessing)
    except SpectrumReadError as error:
        raise ValueError(error.reason) from None
    except OSError as error:
        raise ValueError(str(error)) from None
    return spectrum, flux, mask


@dataclass
class Prepared:
    """The files of one probe group that could be prepared, and those that could not (with why)."""

    names: list[str]
    flux: np.ndarray
    mask: np.ndarray
    skipped: list[tuple[str, str]] = field(default_factory=list)


def prepare_files(paths: Sequence[Path], preprocessing: Preprocessing, folder: Path) -> Prepared:
    """Read and prepare each file; one that fails is listed with its reason, never raised."""
    names, fluxes, masks, skipped = [], [], [], []
    for path in paths:
        name = str(Path(path).relative_to(folder)) if Path(path).is_relative_to(folder) else str(path)
        try:
            _, flux, mask = read_prepared(path, preprocessing)
        except ValueError as error:
            skipped.append((name, str(error)))
            continue
        names.append(name)
        fluxes.append(flux)
        masks.append(mask)
    pixels = preprocessing.grid.pixels
    return Prepared(names, np.array(fluxes, np.float32).reshape(-1, pixels),
                    np.array(masks, bool).reshape(-1, pixels), skipped)


def retrieval(representations: Sequence[Representation], dids: np.ndarray, labels: dict[str, np.ndarray],
              probes: ProbeSet, preprocessing: Preprocessing) -> dict:
    """Every figure of the retrieval section, per representation (see the module docstring)."""
    groups = {"xshooter": probes.xshooter, "nights": probes.nights, "others": probes.others,
              "epochs": probes.epochs}
    prepared = {name: prepare_files(paths, preprocessing, probes.folder)
                for name, paths in tracked(groups.items(), "probe files", "group")}
    figures: dict = {
        "folder": str(probes.folder),
        "missing": list(probes.missing),
        "skipped": [{"file": f, "reason": r} for p in prepared.values() for f, r in p.skipped],
        "files": {name: p.names for name, p in prepared.items()},
        "by": {},
        "acceptance": {},
    }
    for representation in representations:
        points = {name: representation.encode(p.flux, p.mask) if p.names else None
                  for name, p in prepared.items()}
        answers = _answers(representation, points, dids, labels)
        figures["by"][representation.name] = answers
        figures["acceptance"][representation.name] = _accepted(answers)
    return figures


def _answers(representation: Representation, points: dict[str, np.ndarray | None], dids: np.ndarray,
             labels: dict[str, np.ndarray]) -> dict:
    """One representation's figures for every probe group that has prepared files."""
    answers: dict = {}
    for group, probe_points in points.items():
        if probe_points is None:
            continue
        answer = {"distance_ratio": _outside(representation, probe_points)}
        if group == "xshooter":
            answer |= _same_star(representation, probe_points[0], dids)
        if group in EXPECTED_TEFF:
            answer |= _nearest_dwarfs(representation, probe_points, labels, EXPECTED_TEFF[group])
        if group in ("nights", "epochs"):
            answer |= _together(representation, probe_points)
        answers[group] = answer
    return answers


def _accepted(answers: dict) -> dict:
    """The issue's acceptance for cross-instrument retrieval, where it was measured."""
    verdict = {}
    if "xshooter" in answers:
        rank = answers["xshooter"]["rank"]
        verdict[f"{XSHOOTER_MATCH} within {XSHOOTER_MATCH_TOP}"] = (rank is not None
                                                                    and rank <= XSHOOTER_MATCH_TOP)
    nights = answers.get("nights", {})
    if "passing" in nights:
        verdict["every night's dwarfs at its Teff"] = nights["passing"] == nights["count"]
    if nights.get("recall_at_1") is not None:
        verdict["nights each other's nearest"] = nights["recall_at_1"] == 1.0
    return verdict


def _outside(representation: Representation, points: np.ndarray) -> list[float]:
    """How far outside the archive each probe sits: its distance to the nearest archive row over
    the archive's median nearest-neighbour distance."""
    return (distances(points, representation.points).min(axis=1) / representation.scale).tolist()


def _same_star(representation: Representation, point: np.ndarray, dids: np.ndarray) -> dict:
    """Where the archive's spectrum of the same star ranks among the probe's neighbours."""
    distance = distances(point[None, :], representation.points)[0]
    matches = np.flatnonzero([XSHOOTER_MATCH in str(did) for did in dids])
    order = np.argsort(distance)
    rank = int(1 + np.sum(distance < distance[matches].min())) if matches.size else None
    return {"rank": rank, "of": int(distance.size),
            "match_distance": float(distance[matches].min()) if matches.size else None,
            "nearest": [str(dids[i]) for i in order[:XSHOOTER_MATCH_TOP]],
            "nearest_distance": float(distance[order[0]])}


def _nearest_dwarfs(representation: Representation, points: np.ndarray,
                    labels: dict[str, np.ndarray], expected: float) -> dict:
    """The median Teff of each probe's nearest archive dwarfs (passing within TEFF_TOLERANCE of
    the ``expected`` Teff), and the median log g of its nearest rows whatever their label."""
    distance = distances(points, representation.points)
    dwarfs = np.nan_to_num(labels["logg"], nan=-np.inf) >= DWARF_LOGG
    teff = np.nanmedian(labels["teff"][nearest_rows(np.where(dwarfs, distance, np.inf), NEIGHBOURS)], axis=1)
    logg = np.nanmedian(labels["logg"][nearest_rows(distance, NEIGHBOURS)], axis=1)
    passing = np.abs(teff - expected) <= TEFF_TOLERANCE
    return {"dwarf_teff": teff.tolist(), "logg": logg.tolist(), "expected_teff": expected,
            "teff_min": float(teff.min()), "teff_median": float(np.median(teff)),
            "teff_max": float(teff.max()), "passing": int(passing.sum()), "count": int(teff.size)}


def _together(representation: Representation, points: np.ndarray) -> dict:
    """Spectra of one star encoded together with the archive: the share whose nearest neighbour
    (itself aside) is another of them, and the share of their 5 nearest that are."""
    if len(points) < 2:
        return {"recall_at_1": None, "recall_at_5": None}
    everything = np.concatenate([representation.points, points])
    distance = distances(points, everything)
    own = len(representation.points) + np.arange(len(points))
    distance[np.arange(len(points)), own] = np.inf
    ours = nearest_rows(distance, NEIGHBOURS) >= len(representation.points)
    return {"recall_at_1": float(ours[:, 0].mean()), "recall_at_5": float(ours.mean())}


def markdown(figures: dict | None, skipped_because: str | None = None) -> list[str]:
    """The retrieval section of the report."""
    lines = ["## Same star across instruments and epochs", ""]
    if figures is None:
        return lines + [f"Not measured: {skipped_because}", ""]
    lines += [f"Probe files from `{figures['folder']}`, each prepared as the archive's spectra were "
              "and ranked against every archive row by Euclidean distance. *Outside* is a probe's "
              "distance to its nearest archive row over the archive's median nearest-neighbour "
              "distance (above 1: farther from the archive than its spectra are from each other).", ""]
    by = figures["by"]
    lines += _xshooter_table(by) + _dwarf_table(by, "nights", "alpha Cen B, HARPS") \
        + _dwarf_table(by, "others", "Gl 581 (M dwarf), HARPS") + _together_table(by) \
        + _acceptance_table(figures["acceptance"])
    for missing in figures["missing"]:
        lines.append(f"- not in the folder: `{missing}`")
    for skipped in figures["skipped"]:
        lines.append(f"- skipped `{skipped['file']}`: {skipped['reason']}")
    return lines + [""]


def _xshooter_table(by: dict) -> list[str]:
    rows = [(name, a["xshooter"]) for name, a in by.items() if "xshooter" in a]
    if not rows:
        return []
    lines = [f"### X-shooter BD+01 2916 -> MILES {XSHOOTER_MATCH} (accepted within the "
             f"{XSHOOTER_MATCH_TOP} nearest)", "",
             f"| neighbours by | rank of {XSHOOTER_MATCH} | distance to it | nearest | outside |",
             "|---|---|---|---|---|"]
    for name, x in rows:
        rank = "not in the archive" if x["rank"] is None else f"{x['rank']} of {x['of']}"
        match = "" if x["match_distance"] is None else f"{x['match_distance']:.3g}"
        nearest = ", ".join(did.rsplit("?", 1)[-1] for did in x["nearest"])
        lines.append(f"| {name} | {rank} | {match} | {nearest} | {x['distance_ratio'][0]:.2f} |")
    return lines + [""]


def _dwarf_table(by: dict, group: str, title: str) -> list[str]:
    rows = [(name, a[group]) for name, a in by.items() if "dwarf_teff" in a.get(group, {})]
    if not rows:
        return []
    teff = rows[0][1]["expected_teff"]
    lines = [f"### {title}: the {NEIGHBOURS} nearest dwarfs (log g >= {DWARF_LOGG:g})", "",
             f"Median Teff of each spectrum's {NEIGHBOURS} nearest dwarfs (passing: within "
             f"{TEFF_TOLERANCE:.0f} K of {teff:.0f} K), and the median log g of its {NEIGHBOURS} "
             "nearest rows whatever their label.", "",
             "| neighbours by | spectra | Teff min / median / max | passing | log g median | outside |",
             "|---|---|---|---|---|---|"]
    for name, g in rows:
        lines.append(f"| {name} | {g['count']} | {g['teff_min']:.0f} / {g['teff_median']:.0f} / "
                     f"{g['teff_max']:.0f} | {g['passing']} of {g['count']} | "
                     f"{np.median(g['logg']):.2f} | {np.median(g['distance_ratio']):.2f} |")
    return lines + [""]


def _together_table(by: dict) -> list[str]:
    rows = [(name, a.get("nights", {}), a.get("epochs", {})) for name, a in by.items()]
    if not any("recall_at_1" in n or "recall_at_1" in e for _, n, e in rows):
        return []
    lines = ["### Encoded together with the archive: are spectra of one star each other's neighbours?",
             "", "Recall@1: share whose nearest neighbour (itself aside) is another spectrum of the "
             "star; recall@5: share of their 5 nearest that are.", "",
             "| neighbours by | alpha Cen B nights @1 / @5 | KIC 8098300 epochs @1 / @5 | epochs outside |",
             "|---|---|---|---|"]
    for name, nights, epochs in rows:
        outside = f"{np.median(epochs['distance_ratio']):.2f}" if "distance_ratio" in epochs else ""
        lines.append(f"| {name} | {_recalls(nights)} | {_recalls(epochs)} | {outside} |")
    return lines + [""]


def _acceptance_table(acceptance: dict) -> list[str]:
    verdicts = list(dict.fromkeys(v for verdict in acceptance.values() for v in verdict))
    if not verdicts:
        return []
    lines = ["### Acceptance", "", "| neighbours by | " + " | ".join(verdicts) + " |",
             "|---|" + "---|" * len(verdicts)]
    for name, verdict in acceptance.items():
        lines.append(f"| {name} | " + " | ".join("yes" if verdict.get(v) else "no" for v in verdicts) + " |")
    return lines + [""]


def _recalls(group: dict) -> str:
    if group.get("recall_at_1") is None:
        return "n/a"
    return f"{group['recall_at_1']:.2f} / {group['recall_at_5']:.2f}"
