"""How well can any predictor of the spectrum match the MILES catalogue's labels? Spectral twins.

    python docs/evaluation/label_noise.py /tmp/demo16b/miles.duckdb

The argument is the demo archive (DuckDB, table ``miles.spectra``; its ``snr`` is DER_SNR of
the MILES file); the store the taggers read, ``<db stem>.miles.spectra.x4.zarr``, sits beside
it, and the MILES FITS files and parameter table are read from vo_ml's cache (fetched if
missing).

Issue 16 asks for FGK robust sigmas of 80 K / 0.15 / 0.08 dex against the catalogue labels.
The labels have errors of their own, and no predictor of the spectrum can follow them. Two
different stars (different target names) whose spectra agree to within their noise are
"twins": any predictor reads the same spectrum for both, give or take noise, so predicts
nearly the same value, and the catalogue difference dL between them reappears in the errors
(e_i - e_j = p_i - p_j - dL, with p_i ~ p_j). With independent label errors the robust sigma
of any predictor's error on such stars is at least about robust_sigma(dL) / sqrt(2); whatever
their correlation, at least about robust_sigma(dL) / 2 (for standard deviations,
sd(e_i - e_j) <= sd(e_i) + sd(e_j)).

Twins are defined by a chi-square: both spectra continuum-normalised as the archive's store
is (90th-percentile envelope in 60 stretches, telluric band masked), each pixel's noise the
file's flux noise (median flux / snr, constant in flux as DER_SNR assumes) over its continuum,
and chi2/dof = mean over the pixels good in both of (f_i - f_j)^2 / (s_i^2 + s_j^2). A pair
of spectra of one star would give chi2/dof ~ 1. Each FGK star (catalogue Teff, bounds of
vo_ml.ml.tags.CLASSES) is paired with its nearest FGK star by chi2/dof; unordered pairs are
counted once. This is done at full resolution (the FITS pixels, 0.9 A) and at the x4 store's
sampling (~3.8 A) the served taggers read, for several thresholds, with bootstrap 95% intervals
(pairs resampled) on the robust sigmas.

Then: could the dL of twins be real differences the noise hides? Out-of-fold predictors
(5 nearest neighbours in PCA of the x4 flux, the served kind, and ridge regression on PCA of
the full-resolution flux) are compared on the twins: if dL were visible in the spectra, their
prediction differences would follow it. The dL of the three labels are correlated with each
other (a catalogue's degenerate solutions move Teff, log g and [Fe/H] together) and compared
between high- and low-S/N twins (a difference hidden by noise shrinks as the S/N grows).
"""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb
import numpy as np
import zarr
from astropy.io import fits
from sklearn.decomposition import PCA
from sklearn.linear_model import RidgeCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from vo_ml.ml.tags import CLASSES, candidates, out_of_fold, robust_sigma, spectra_view
from vo_ml.spectra.grid import CONTINUUM_SMOOTHING, Grid, in_windows, normalise_continuum
from vo_ml.spectra.miles import fetch_miles, miles_files, miles_id

#: As the archive's store was prepared (its zarr attributes): stretches, line spread, telluric.
STRETCHES, FWHM, TELLURIC = 60, 2.5, ((6860.0, 6925.0),)
LABELS = {"teff": "K", "logg": "dex", "feh": "dex"}
#: Twin thresholds on chi2/dof, and shares of the closest pairs.
THRESHOLDS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
SHARES = (0.05, 0.1, 0.2)
BOOTSTRAP, SEED = 2000, 16


def full_resolution(folder: Path, obs_ids: list[str], snr: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Wavelength, continuum-normalised flux, its noise and the good pixels of each MILES file,
    on the files' own linear grid (no resampling, so pixel noise stays independent)."""
    paths = {miles_id(path): path for path in miles_files(folder)}
    fluxes, noises, goods = [], [], []
    for obs_id, ratio in zip(obs_ids, snr, strict=True):
        with fits.open(paths[obs_id.removeprefix("m")]) as hdus:
            header, flux = hdus[0].header, np.asarray(hdus[0].data, np.float64)
            wavelength = header["CRVAL1"] + header["CDELT1"] * (np.arange(flux.size)
                                                                + 1 - header["CRPIX1"])
        mask = ~np.isfinite(flux) | (flux <= 0) | in_windows(wavelength, TELLURIC)
        flux = np.where(mask, np.nan, flux)
        normalised = normalise_continuum(wavelength, flux, mask, STRETCHES,
                                         CONTINUUM_SMOOTHING * FWHM / header["CDELT1"])
        continuum = flux / normalised
        fluxes.append(normalised)
        noises.append(np.nanmedian(flux) / ratio / continuum)
        goods.append(~mask & np.isfinite(normalised))
    return wavelength, np.array(fluxes), np.array(noises), np.array(goods)


def at_x4(store: Path, dids: list[str], wavelength: np.ndarray, noise: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The x4 store's flux and good pixels in ``dids`` order, and each pixel's noise: the full
    resolution noise interpolated to it over the root of the file pixels it averages."""
    group = zarr.open(str(store), mode="r")
    order = {did: row for row, did in enumerate(map(str, group["did"][:]))}
    rows = [order[did] for did in dids]
    flux = np.asarray(group["flux"][:], np.float64)[rows]
    good = ~np.asarray(group["mask"][:])[rows]
    grid = Grid.from_config(group.attrs["grid"])
    widths = np.diff(grid.edges) / (wavelength[1] - wavelength[0])
    binned = np.array([np.interp(grid.centres, wavelength[np.isfinite(row)], row[np.isfinite(row)])
                       for row in noise])
    return flux, binned / np.sqrt(widths), good


def chi2_matrix(flux: np.ndarray, noise: np.ndarray, good: np.ndarray) -> np.ndarray:
    """chi2/dof of every pair of spectra over the pixels good in both (inf on the diagonal)."""
    flux, variance = np.where(good, flux, 0.0), np.where(good, noise**2, 1.0)
    found = np.empty((len(flux), len(flux)))
    for row in range(len(flux)):
        both = good[row] & good
        term = (flux[row] - flux) ** 2 / (variance[row] + variance)
        found[row] = np.where(both, term, 0.0).sum(axis=1) / both.sum(axis=1)
    np.fill_diagonal(found, np.inf)
    return found


def cluster_mates(names: np.ndarray, feh: np.ndarray) -> np.ndarray:
    """Which pairs of stars are members of one cluster: both named "... Cl" by MILES, with the
    same [Fe/H]. The catalogue gives a cluster's members its [Fe/H] (and their Teff and log g
    from one photometric calibration), so their label differences are not independent errors."""
    member = np.array([name.rstrip().endswith(" Cl") for name in names])
    return member[:, None] & member[None, :] & (feh[:, None] == feh[None, :])


def twin_pairs(chi2: np.ndarray, apart: np.ndarray) -> np.ndarray:
    """Each star's nearest other star by chi2/dof among those ``apart`` allows, as unordered
    pairs (i, j, chi2/dof) counted once, closest first."""
    chi2 = np.where(apart, chi2, np.inf)
    nearest = np.argmin(chi2, axis=1)
    pairs = {tuple(sorted((row, int(other)))) for row, other in enumerate(nearest)}
    found = np.array([(i, j, chi2[i, j]) for i, j in pairs])
    return found[np.argsort(found[:, 2])]


def bootstrap(values: np.ndarray, rng: np.random.Generator) -> tuple[float, float, float]:
    """Robust sigma of ``values`` and its bootstrap 95% interval."""
    draws = [robust_sigma(rng.choice(values, values.size)) for _ in range(BOOTSTRAP)]
    return robust_sigma(values), *np.percentile(draws, [2.5, 97.5])


def selections(pairs: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """The twin sets reported: chi2/dof thresholds, then shares of the closest pairs."""
    found = [(f"chi2/dof <= {limit:g}", pairs[:, 2] <= limit) for limit in THRESHOLDS]
    for share in SHARES:
        chosen = np.zeros(len(pairs), bool)
        chosen[: int(round(share * len(pairs)))] = True
        found.append((f"closest {share:.0%} (chi2/dof <= {pairs[chosen, 2].max():.2f})", chosen))
    return found


def bound_table(pairs: np.ndarray, labels: dict[str, np.ndarray], snr: np.ndarray,
                rng: np.random.Generator) -> None:
    """Robust sigma(dL)/sqrt2 and /2, with bootstrap intervals, for every twin selection, and
    the median S/N of the noisier star of its pairs."""
    print("| twins | pairs | median lower S/N | " + " | ".join(
        f"{label}: rs(dL)/sqrt2 [95%] | /2" for label in LABELS) + " |")
    print("|---|---|---|" + "---|---|" * len(LABELS))
    first, second = pairs[:, 0].astype(int), pairs[:, 1].astype(int)
    weakest = np.minimum(snr[first], snr[second])
    for title, chosen in selections(pairs):
        cells = []
        for label, values in labels.items():
            difference = (values[first] - values[second])[chosen]
            difference = difference[np.isfinite(difference)]
            if difference.size < 5:
                cells.append("- | -")
                continue
            sigma, low, high = bootstrap(difference, rng)
            digits = 0 if label == "teff" else 3
            cells.append(f"{sigma / np.sqrt(2):.{digits}f} [{low / np.sqrt(2):.{digits}f}-"
                         f"{high / np.sqrt(2):.{digits}f}] (n={difference.size}) | "
                         f"{sigma / 2:.{digits}f}")
        lower = f"{np.median(weakest[chosen]):.0f}" if chosen.any() else "-"
        print(f"| {title} | {int(chosen.sum())} | {lower} | " + " | ".join(cells) + " |")


def predictors(labels: dict[str, np.ndarray], x4_view: np.ndarray, full: np.ndarray,
               groups: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """Out-of-fold predictions of every label (by star) by two predictors of the spectrum: the
    served kind (5 nearest neighbours in PCA of the x4 flux) and ridge on PCA of the full
    resolution flux."""
    knn = next(c for c in candidates() if "PCA" in c.title)
    found: dict[str, dict[str, np.ndarray]] = {}
    for label, values in labels.items():
        known = np.isfinite(values)
        target = np.log10(values[known]) if label == "teff" else values[known]
        for title, make, view in (
                ("kNN on PCA of x4 flux", lambda: knn.make(32), x4_view),
                ("ridge on PCA(64) of full flux",
                 lambda: make_pipeline(StandardScaler(), PCA(64, random_state=SEED),
                                       RidgeCV(np.logspace(-3, 3, 13))), full)):
            predicted = np.full(values.size, np.nan)
            predicted[known] = out_of_fold(make, view[known], target, groups[known])
            found.setdefault(title, {})[label] = 10**predicted if label == "teff" else predicted
    return found


def visibility(pairs: np.ndarray, labels: dict[str, np.ndarray], snr: np.ndarray,
               predicted: dict[str, dict[str, np.ndarray]]) -> None:
    """Is the dL of twins seen in the spectra? Predictor differences against dL, predictor
    errors on the twins, dL across labels, dL by S/N."""
    first, second = pairs[:, 0].astype(int), pairs[:, 1].astype(int)
    print("\n| predictor | label | corr(dL, dp) | slope dp/dL | rs(dp) | rs(dL) | "
          "rs(error) on twin stars |")
    print("|---|---|---|---|---|---|---|")
    for title, by_label in predicted.items():
        for label, values in labels.items():
            dl = values[first] - values[second]
            dp = by_label[label][first] - by_label[label][second]
            ok = np.isfinite(dl) & np.isfinite(dp)
            stars = np.unique(pairs[ok, :2].astype(int))
            error = robust_sigma((by_label[label] - values)[stars])
            slope = np.polyfit(dl[ok], dp[ok], 1)[0]
            print(f"| {title} | {label} | {np.corrcoef(dl[ok], dp[ok])[0, 1]:.2f} | "
                  f"{slope:.2f} | {robust_sigma(dp[ok]):.3g} | {robust_sigma(dl[ok]):.3g} | "
                  f"{error:.3g} |")
    differences = np.array([values[first] - values[second] for values in labels.values()])
    ok = np.isfinite(differences).all(axis=0)
    correlation = np.corrcoef(differences[:, ok])
    names = list(labels)
    print(f"\ncorrelation of dL across labels ({ok.sum()} pairs): " + ", ".join(
        f"{names[a]}-{names[b]} {correlation[a, b]:.2f}" for a, b in ((0, 1), (0, 2), (1, 2))))
    weakest = np.minimum(snr[first], snr[second])
    middle = np.median(weakest)
    print(f"\nrobust sigma of dL by the pair's lower S/N (split at {middle:.0f}):")
    for title, chosen in (("low S/N", weakest < middle), ("high S/N", weakest >= middle)):
        cells = [f"{name} {robust_sigma(dl[chosen & np.isfinite(dl)]):.3g}"
                 for name, dl in zip(names, differences, strict=True)]
        print(f"  {title}: " + ", ".join(cells))


def main(db: str) -> None:
    with duckdb.connect(db, read_only=True) as connection:
        rows = connection.sql(
            "SELECT obs_id, obs_publisher_did, target_name, snr, teff, logg, feh "
            f"FROM {Path(db).stem}.miles.spectra ORDER BY obs_id").fetchall()
    obs_ids, dids, names = ([row[k] for row in rows] for k in range(3))
    snr, teff, logg, feh = (np.array([np.nan if row[k] is None else row[k] for row in rows],
                                     float) for k in range(3, 7))
    low, high = CLASSES["FGK"]
    fgk = (teff >= low) & (teff < high) & np.isfinite(snr)
    pick = np.flatnonzero(fgk)
    labels = {"teff": teff[pick], "logg": logg[pick], "feh": feh[pick]}
    names_fgk = np.array(names, dtype=object)[pick]
    apart = (names_fgk[:, None] != names_fgk[None, :]) & ~cluster_mates(names_fgk, feh[pick])
    wavelength, flux, noise, good = full_resolution(
        fetch_miles(), [obs_ids[row] for row in pick], snr[pick])
    x4_flux, x4_noise, x4_good = at_x4(
        Path(db).with_suffix("").with_name(Path(db).stem + ".miles.spectra.x4.zarr"),
        [dids[row] for row in pick], wavelength, noise)
    print(f"{pick.size} FGK stars ({low:.0f}-{high:.0f} K, catalogue Teff), "
          f"median S/N {np.median(snr[pick]):.0f}; {int((~apart).sum() - pick.size) // 2} pairs "
          "of one cluster's members left out")
    rng = np.random.default_rng(SEED)
    twins = {}
    for title, arrays in (("full resolution (FITS, 4300 px of 0.9 A)", (flux, noise, good)),
                          ("x4 store (1024 px)", (x4_flux, x4_noise, x4_good))):
        chi2 = chi2_matrix(*arrays)
        pairs = twin_pairs(chi2, apart)
        twins[title] = pairs
        print(f"\n## {title}\n\nnearest-twin chi2/dof over {len(pairs)} pairs: quartiles "
              + ", ".join(f"{q:.2f}" for q in np.percentile(pairs[:, 2], [0, 25, 50, 75])) + "\n")
        bound_table(pairs, labels, snr[pick], rng)
    full_view = np.where(good, flux, 1.0)
    predicted = predictors(labels, spectra_view(x4_flux, ~x4_good), full_view,
                           np.arange(pick.size))
    for title, pairs in twins.items():
        closest = pairs[: int(round(SHARES[-1] * len(pairs)))]
        print(f"\n## Are the twins' dL seen in the spectra? ({title}, closest "
              f"{SHARES[-1]:.0%}: {len(closest)} pairs)")
        visibility(closest, labels, snr[pick], predicted)


if __name__ == "__main__":
    main(sys.argv[1])
