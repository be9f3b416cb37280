"""How physical a latent space is: do neighbours share the labels of the star they surround?

The score is the median, over query stars and their ``k`` nearest neighbours, of the relative
difference of a label (|dTeff|/Teff) or its absolute difference (log g, [Fe/H]). The same score on
PCA projections and on the raw flux, computed on the same spectra, gives the baselines.

:func:`evaluate` writes the report of ``vo-ml evaluate``: models are trained without a held-out
share of the stars (picked by star, so no spectrum of a query star is ever seen in training),
and only those stars ask for neighbours, among all spectra. PCA is fitted on the training stars
too. Plots show the latent maps coloured by each label, reconstructions of held-out spectra, and
reconstruction error against latent dimension.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vo_ml.spectra.grid import downsample
from vo_ml.spectra.store import SpectrumStore

__all__ = ["nearest_neighbours", "neighbour_label_error", "pca_projection", "FGK", "LABELS",
           "evaluate", "Representation"]

#: Effective temperatures of F, G and K stars, in K.
FGK = (3900.0, 7500.0)
#: The labels scored, and whether each is compared relatively (Teff) or absolutely.
LABELS = {"teff": True, "logg": False, "feh": False}
NEIGHBOURS = (1, 5, 10)
#: How the baselines see spectra: the dense family's sampling (4,096 / 4 pixels for MILES).
BASELINE_DOWNSAMPLE = 4
REPORT_NAME = "report.md"


def nearest_neighbours(points: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` nearest other points of every point (Euclidean), shape (n, k)."""
    squared = np.sum(points**2, axis=1)
    distances = squared[:, None] + squared[None, :] - 2.0 * points @ points.T
    np.fill_diagonal(distances, np.inf)
    return np.argsort(distances, axis=1)[:, :k]


def neighbour_label_error(
    points: np.ndarray, label: np.ndarray, queries: np.ndarray, k: int = 5, relative: bool = False
) -> float:
    """Median label difference between each query point and its ``k`` neighbours.

    ``queries`` is a boolean selection of query points; neighbours come from all points, and
    pairs where either label is unknown (NaN) are left out.
    """
    neighbours = nearest_neighbours(points, k)[queries]
    own = label[queries][:, None]
    difference = np.abs(label[neighbours] - own)
    if relative:
        difference = difference / own
    return float(np.nanmedian(difference))


def pca_projection(data: np.ndarray, dimensions: int, fit: np.ndarray | None = None) -> np.ndarray:
    """The data projected on its first principal components, fitted on the rows ``fit`` (all
    rows when None)."""
    basis = data if fit is None else data[fit]
    centre = basis.mean(axis=0)
    _, _, components = np.linalg.svd(basis - centre, full_matrices=False)
    return (data - centre) @ components[:dimensions].T


def _pca_reconstruction_rms(data: np.ndarray, good: np.ndarray, dimensions: int, fit: np.ndarray,
                            rows: np.ndarray) -> float:
    """Median RMS over good pixels of the PCA reconstruction of ``rows``, fitted on ``fit``."""
    centre = data[fit].mean(axis=0)
    _, _, components = np.linalg.svd(data[fit] - centre, full_matrices=False)
    basis = components[:dimensions]
    rebuilt = (data[rows] - centre) @ basis.T @ basis + centre
    squared = np.square(rebuilt - data[rows]) * good[rows]
    return float(np.median(np.sqrt(squared.sum(axis=1) / np.maximum(good[rows].sum(axis=1), 1))))


@dataclass
class Representation:
    """Points in some space for every store row, and where they came from."""

    name: str
    dimensions: int
    points: np.ndarray
    kind: str  # "latent", "pca" or "raw"
    family: str = ""
    map_xy: np.ndarray | None = None
    model_dir: Path | None = None
    recon_rms: float | None = None
    scores: dict = field(default_factory=dict)


def score(representation: Representation, labels: dict[str, np.ndarray], queries: np.ndarray,
          neighbours: Sequence[int] = NEIGHBOURS) -> dict:
    """Median label differences of the query rows' neighbours, for each k and label."""
    return {k: {label: neighbour_label_error(representation.points, labels[label], queries, k, relative)
                for label, relative in LABELS.items()} for k in neighbours}


def evaluate(store: SpectrumStore, labels: dict[str, np.ndarray], targets: Sequence[str | None],
             models: Sequence[Path], held_out: np.ndarray, out: Path) -> Path:
    """Score ``models`` (trained without the ``held_out`` rows) against PCA and raw flux, and
    write the Markdown report, its JSON figures and its plots into ``out``."""
    from vo_ml.ml.embedding import embed_store
    from vo_ml.ml.training import load_card

    out.mkdir(parents=True, exist_ok=True)
    flux, mask = downsample(*store.read(0, len(store)), BASELINE_DOWNSAMPLE)
    good = (~mask).astype(np.float64)
    training = ~held_out
    fgk = (labels["teff"] >= FGK[0]) & (labels["teff"] < FGK[1])
    representations = []
    for model in models:
        embedded = embed_store(store, model)
        card = load_card(model)
        representations.append(Representation(
            f"{card['config']['name']}-{card['latent_dim']} latent", card["latent_dim"],
            embedded.latent, "latent", card["config"]["name"], embedded.map_xy, model,
            float(np.median(embedded.recon_error[held_out]))))
    dimensions = sorted({r.dimensions for r in representations} | {2, 16})
    for dimension in dimensions:
        representations.append(Representation(
            f"PCA-{dimension}", dimension, pca_projection(flux, dimension, training), "pca", "PCA",
            recon_rms=_pca_reconstruction_rms(flux, good, dimension, training, held_out)))
    representations.append(Representation("raw flux", flux.shape[1], flux, "raw", "raw"))
    for representation in representations:
        representation.scores = {"held-out FGK": score(representation, labels, held_out & fgk),
                                 "all FGK": score(representation, labels, fgk, (5,))}
    figures = {"held_out_stars": int(held_out.sum()), "held_out_fgk": int((held_out & fgk).sum()),
               "fgk": int(fgk.sum()), "spectra": len(store),
               "representations": [{"name": r.name, "dimensions": r.dimensions, "kind": r.kind,
                                    "recon_rms": r.recon_rms, "scores": r.scores,
                                    "model": r.model_dir.name if r.model_dir else None}
                                   for r in representations]}
    (out / "report.json").write_text(json.dumps(figures, indent=2), encoding="utf-8")
    latents = [r for r in representations if r.kind == "latent"]
    _plot_maps(latents, labels, out / "latent_maps.png")
    _plot_reconstructions(store, latents, np.flatnonzero(held_out & fgk), out / "reconstructions.png")
    _plot_recon_error(representations, out / "recon_error.png")
    report = out / REPORT_NAME
    report.write_text(_markdown(figures, representations), encoding="utf-8")
    return report


def _markdown(figures: dict, representations: list[Representation]) -> str:
    lines = [
        "# Latent-space evaluation",
        "",
        f"{figures['spectra']} spectra; {figures['held_out_stars']} held out by star (never seen in "
        f"training, nor by PCA), of which {figures['held_out_fgk']} FGK "
        f"({FGK[0]:.0f} <= Teff < {FGK[1]:.0f} K) ask for neighbours among all spectra.",
        "Each cell: median over query stars and their k nearest neighbours of "
        "|dTeff|/Teff, |dlogg|, |d[Fe/H]|.",
        "",
        "## Held-out FGK stars",
        "",
        "| neighbours by | dims | " + " | ".join(f"k={k}" for k in NEIGHBOURS) + " |",
        "|---|---|" + "---|" * len(NEIGHBOURS),
    ]
    ordered = sorted(representations, key=lambda r: (r.dimensions, r.kind != "latent", r.name))
    for r in ordered:
        cells = [" / ".join(_format(r.scores["held-out FGK"][k])) for k in NEIGHBOURS]
        lines.append(f"| {r.name} | {r.dimensions} | " + " | ".join(cells) + " |")
    lines += ["", "## All FGK stars, k = 5 (training stars included)", "",
              "| neighbours by | dims | dTeff/Teff | dlogg | d[Fe/H] |", "|---|---|---|---|---|"]
    for r in ordered:
        lines.append(f"| {r.name} | {r.dimensions} | " + " | ".join(_format(r.scores["all FGK"][5])) + " |")
    lines += ["", "## Reconstruction error against latent dimension", "",
              "Median RMS over good pixels of held-out spectra, in units of the normalised flux.", "",
              "| model | dims | RMS |", "|---|---|---|"]
    for r in ordered:
        if r.recon_rms is not None:
            lines.append(f"| {r.name} | {r.dimensions} | {r.recon_rms:.4f} |")
    lines += ["", "![latent maps](latent_maps.png)", "",
              "![reconstructions](reconstructions.png)", "", "![reconstruction error](recon_error.png)", ""]
    return "\n".join(lines)


def _format(scores: dict) -> list[str]:
    return [f"{scores['teff']:.4f}", f"{scores['logg']:.3f}", f"{scores['feh']:.3f}"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot


def _plot_maps(latents: list[Representation], labels: dict[str, np.ndarray], path: Path) -> None:
    plt = _pyplot()
    figure, axes = plt.subplots(len(latents), 3, figsize=(12, 3.6 * len(latents)), squeeze=False)
    for row, representation in zip(axes, latents, strict=True):
        for axis, (label, title) in zip(row, (("teff", "Teff (K)"), ("logg", "log g"),
                                               ("feh", "[Fe/H]")), strict=True):
            known = np.isfinite(labels[label])
            xy = representation.map_xy
            points = axis.scatter(xy[known, 0], xy[known, 1], c=labels[label][known], s=6,
                                  cmap="viridis" if label != "teff" else "plasma")
            figure.colorbar(points, ax=axis, label=title)
            axis.set(title=f"{representation.name} ({representation.dimensions}-D)",
                     xlabel="ml_x", ylabel="ml_y")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def _plot_reconstructions(store: SpectrumStore, latents: list[Representation], rows: np.ndarray,
                          path: Path) -> None:
    from vo_ml.ml.embedding import reconstruct

    plt = _pyplot()
    examples = rows[np.linspace(0, rows.size - 1, 3).astype(int)] if rows.size else rows
    figure, axes = plt.subplots(len(examples), 1, figsize=(12, 3 * max(1, len(examples))), squeeze=False)
    centres = store.grid.centres
    for axis, row in zip(axes[:, 0], examples, strict=True):
        flux, mask = store.read(int(row), int(row) + 1)
        axis.plot(centres, np.where(mask[0], np.nan, flux[0]), color="black", lw=0.6, label="observed")
        for representation in latents:
            model_flux, model_mask, rebuilt = reconstruct(flux, mask, representation.model_dir)
            step = store.grid.pixels // model_flux.shape[1]
            x = centres[: model_flux.shape[1] * step].reshape(-1, step).mean(axis=1)
            axis.plot(x, np.where(model_mask[0], np.nan, rebuilt[0]), lw=0.6, label=representation.name)
        axis.set(title=f"held-out spectrum {store.dids[row]}", xlabel="wavelength (A)",
                 ylabel="normalised flux")
        axis.legend(fontsize=7, ncol=3)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def _plot_recon_error(representations: list[Representation], path: Path) -> None:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 4))
    families: dict[str, list[Representation]] = {}
    for r in representations:
        if r.recon_rms is not None:
            families.setdefault(r.family, []).append(r)
    for name, members in families.items():
        members.sort(key=lambda r: r.dimensions)
        axis.plot([r.dimensions for r in members], [r.recon_rms for r in members],
                  marker="s" if name == "PCA" else "o", label=name)
    axis.set(xscale="log", yscale="log", xlabel="latent dimension", ylabel="median RMS (held out)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
