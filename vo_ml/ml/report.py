"""The report of ``vo-ml evaluate``, and the figures saved with a trained model.

:func:`evaluate` scores models trained without a held-out share of the stars (picked by star, so
no spectrum of a query star is ever seen in training); only those stars ask for neighbours, among
all spectra. PCA is fitted on the training stars too. Plots show the latent maps coloured by each
label, reconstructions of held-out spectra, and reconstruction error against latent dimension.
The report goes on to same-star retrieval across instruments (:mod:`vo_ml.ml.probes`),
invariance curves (:mod:`vo_ml.ml.invariance`) and the uses and limitations they show
(:mod:`vo_ml.ml.uses`); every figure is in ``report.json``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from vo_ml.ml import invariance, probes, uses
from vo_ml.ml.cards import load_card
from vo_ml.ml.embedding import embed_store, latent_vectors, reconstruct
from vo_ml.ml.evaluation import FGK, LABELS, NEIGHBOURS, Encoder, Representation, score
from vo_ml.ml.models import downsampling
from vo_ml.ml.projection import PrincipalComponents
from vo_ml.spectra.grid import downsample
from vo_ml.spectra.store import SpectrumStore

__all__ = ["evaluate", "plot_training_curve", "model_view", "pyplot", "View", "REPORT_NAME",
           "BASELINE_DOWNSAMPLE"]

#: How the baselines see spectra: the dense family's sampling (4,096 / 4 pixels for MILES).
BASELINE_DOWNSAMPLE = 4
REPORT_NAME = "report.md"


@dataclass(frozen=True)
class View:
    """Every spectrum at one sampling, its good-pixel weights and its PCA over training rows;
    masked pixels hold the ``mean`` spectrum of the training rows (as the models fill them)."""

    factor: int
    flux: np.ndarray
    good: np.ndarray
    mean: np.ndarray
    pca: PrincipalComponents

    def seen(self, flux: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Spectra on the store's grid as this view holds its own."""
        flux, mask = downsample(flux, mask, self.factor)
        return np.where(mask, self.mean, flux)

    def pca_encoder(self, dimensions: int) -> Encoder:
        return lambda flux, mask: self.pca.project(self.seen(flux, mask), dimensions)

    def raw_encoder(self) -> Encoder:
        return self.seen

    def pca_reconstruction_rms(self, dimensions: int, rows: np.ndarray) -> float:
        """Median RMS over good pixels of the PCA reconstruction of ``rows``."""
        squared = np.square(self.pca.reconstruct(self.flux[rows], dimensions) - self.flux[rows])
        good = self.good[rows]
        return float(np.median(np.sqrt((squared * good).sum(axis=1) / np.maximum(good.sum(axis=1), 1))))


def model_view(store: SpectrumStore, factor: int, fit: np.ndarray) -> View:
    """Every spectrum as a model of that sampling sees it, masked pixels set to the mean spectrum
    of the ``fit`` rows (as the models do), with its PCA fitted on those rows."""
    flux, mask = store.coarsened(factor).read(0, len(store))
    good = (~mask).astype(np.float64)
    mean = (flux[fit] * good[fit]).sum(axis=0) / np.maximum(good[fit].sum(axis=0), 1)
    flux = np.where(mask, mean, flux)
    return View(factor, flux, good, mean, PrincipalComponents.fit(flux[fit]))


def evaluate(store: SpectrumStore, labels: dict[str, np.ndarray], targets: Sequence[str | None],
             models: Sequence[Path], held_out: np.ndarray, out: Path,
             probe_set: probes.ProbeSet | None = None, sources: Mapping[int, Path] | None = None,
             invariance_stars: int = invariance.STARS) -> Path:
    """Score ``models`` (trained without the ``held_out`` rows) against PCA and raw flux, and
    write the Markdown report, its JSON figures and its plots into ``out``.

    Neighbours of a query star are never other spectra of the same star (``targets``). With
    ``probe_set`` (probe files from other instruments, see :mod:`vo_ml.ml.probes`), the report measures
    same-star retrieval across instruments; with ``sources`` (store row -> original file), the
    invariance of ``invariance_stars`` of those rows (none: the section is left out)."""
    out.mkdir(parents=True, exist_ok=True)
    training = ~held_out
    groups = np.array([t or f"row-{i}" for i, t in enumerate(targets)], dtype=object)
    views: dict[int, View] = {}

    def view_at(factor: int) -> View:
        if factor not in views:
            views[factor] = model_view(store, factor, training)
        return views[factor]

    baseline = view_at(BASELINE_DOWNSAMPLE)
    pixels = baseline.flux.shape[1]
    fgk = (labels["teff"] >= FGK[0]) & (labels["teff"] < FGK[1])
    representations = []
    cards = [load_card(Path(model)) for model in models]
    for model, card, name in zip(models, cards, _model_names(cards), strict=True):
        embedded = embed_store(store, model)
        view = view_at(downsampling(card["config"]))
        representations.append(Representation(
            name, card["latent_dim"],
            embedded.latent, "latent", card["config"]["name"], embedded.map_xy, Path(model).resolve(),
            float(np.median(embedded.recon_error[held_out])),
            view.pca_reconstruction_rms(card["latent_dim"], held_out), view.flux.shape[1],
            encode=functools.partial(latent_vectors, model_dir=Path(model).resolve())))
    dimensions = sorted({r.dimensions for r in representations} | {2, 16})
    for dimension in dimensions:
        representations.append(Representation(
            f"PCA-{dimension}", dimension, baseline.pca.project(baseline.flux, dimension), "pca", "PCA",
            recon_rms=baseline.pca_reconstruction_rms(dimension, held_out), pixels=pixels,
            encode=baseline.pca_encoder(dimension)))
    representations.append(Representation("raw flux", pixels, baseline.flux, "raw", "raw", pixels=pixels,
                                          encode=baseline.raw_encoder()))
    for representation in representations:
        representation.scores = {"held-out FGK": score(representation, labels, held_out & fgk, groups),
                                 "all FGK": score(representation, labels, fgk, groups, (5,))}
    figures = {"held_out_stars": len(set(groups[held_out])), "held_out_spectra": int(held_out.sum()),
               "held_out_fgk": int((held_out & fgk).sum()), "fgk": int(fgk.sum()), "spectra": len(store),
               "representations": [{"name": r.name, "dimensions": r.dimensions, "kind": r.kind,
                                    "pixels": r.pixels, "recon_rms": r.recon_rms,
                                    "pca_recon_rms": r.pca_recon_rms, "scores": r.scores,
                                    "model": r.model_dir.name if r.model_dir else None}
                                   for r in representations]}
    figures["training"] = _training(representations, cards)
    preprocessing = probes.store_preprocessing(store)
    figures["preprocessing"] = preprocessing.steps()
    if probe_set is not None:
        figures["retrieval"] = probes.retrieval(representations, store.dids, labels, probe_set,
                                                preprocessing)
    if sources and invariance_stars > 0:
        figures["invariance"] = invariance.invariance(representations, sources, preprocessing,
                                                      invariance_stars)
    figures = json.loads(json.dumps(figures))  # the report reads what report.json says
    (out / "report.json").write_text(json.dumps(figures, indent=2), encoding="utf-8")
    latents = [r for r in representations if r.kind == "latent"]
    _plot_maps(latents, labels, out / "latent_maps.png")
    _plot_reconstructions(store, latents, np.flatnonzero(held_out & fgk), out / "reconstructions.png")
    _plot_recon_error(representations, out / "recon_error.png")
    if "invariance" in figures:
        invariance.plot(figures["invariance"], out, pyplot())
    report = out / REPORT_NAME
    report.write_text("\n".join([
        _markdown(figures, representations),
        *_training_markdown(figures["training"]),
        *probes.markdown(figures.get("retrieval"), "no --real-spectra folder was given."),
        *invariance.markdown(figures.get("invariance"), _no_invariance(sources, invariance_stars)),
        *uses.markdown(figures)]), encoding="utf-8")
    return report


def _model_names(cards: Sequence[dict]) -> list[str]:
    """Each model's name in the report: its config's name and latent size, and its seed when
    the same model was trained with several."""
    names = [_model_name(card) for card in cards]
    return [f"{name} (seed {card['config']['training']['seed']})" if names.count(name) > 1 else name
            for name, card in zip(names, cards, strict=True)]


def _model_name(card: dict) -> str:
    """A model's name in the report, its seed aside: its config's name and latent size."""
    return f"{card['config']['name']}-{card['latent_dim']} latent"


def _training(representations: Sequence[Representation], cards: Sequence[dict]) -> dict:
    """How each model (the latent ``representations``, one for each of ``cards``, in their
    order; the baselines after them have no card) trained (epochs, best validation loss, the
    validation loss's largest rise after warm-up), and how far models differing only in their
    seed agree: the spread (max - min) / min of their best validation loss, reconstruction error
    and k = 5 label scores on held-out stars."""
    latents = [r for r in representations if r.kind == "latent"]
    models = [{"name": r.name, "seed": card["config"]["training"]["seed"],
               "epochs": card["metrics"]["epochs"], "best_epoch": card["metrics"]["best_epoch"],
               "best_val_loss": card["metrics"]["best_val_loss"],
               "val_loss_peak": card["metrics"].get("val_loss_peak"), "recon_rms": r.recon_rms,
               "k5": r.scores["held-out FGK"][5]}
              for r, card in zip(latents, cards, strict=True)]
    groups: dict[str, list[dict]] = {}
    for model, card in zip(models, cards, strict=True):
        groups.setdefault(_model_name(card), []).append(model)

    def spread(values: list[float]) -> float:
        return float((max(values) - min(values)) / min(values)) if min(values) > 0 else float("nan")

    seeds = {name: {"seeds": [m["seed"] for m in group],
                    "best_val_loss": spread([m["best_val_loss"] for m in group]),
                    "recon_rms": spread([m["recon_rms"] for m in group]),
                    **{label: spread([m["k5"][label] for m in group]) for label in LABELS}}
             for name, group in groups.items() if len(group) > 1}
    return {"models": models, "seeds": seeds}


def _training_markdown(training: dict) -> list[str]:
    lines = ["## Training", "",
             "Epochs run, the best epoch (0: the untrained model, which is PCA), the best validation "
             "loss, and the validation loss's largest rise after warm-up over its lowest value so far.",
             "", "| model | epochs | best epoch | best val loss | largest rise |", "|---|---|---|---|---|"]
    for model in training["models"]:
        peak = model["val_loss_peak"]
        lines.append(f"| {model['name']} | {model['epochs']} | {model['best_epoch']} | "
                     f"{model['best_val_loss']:.3e} | {'-' if peak is None else f'{peak:.3f}'} |")
    if training["seeds"]:
        header = " | ".join(f"k=5 {label}" for label in LABELS)
        lines += ["", "Models that differ only in their seed: spread (max - min) / min of each figure.", "",
                  f"| model | seeds | best val loss | recon RMS | {header} |",
                  "|---|---|---|---|" + "---|" * len(LABELS)]
        for name, seeds in training["seeds"].items():
            lines.append(f"| {name} | {', '.join(map(str, seeds['seeds']))} | {seeds['best_val_loss']:.1%} | "
                         f"{seeds['recon_rms']:.1%} | "
                         + " | ".join(f"{seeds[label]:.1%}" for label in LABELS) + " |")
    return [*lines, ""]


def _no_invariance(sources: Mapping[int, Path] | None, stars: int) -> str | None:
    """Why the invariance section is empty, when it is."""
    if stars <= 0:
        return "--invariance-stars 0 was given."
    if not sources:
        return "the archive records no original file for its spectra."
    return None


def _markdown(figures: dict, representations: list[Representation]) -> str:
    lines = [
        "# Latent-space evaluation",
        "",
        f"{figures['spectra']} spectra; {figures['held_out_spectra']} spectra of {figures['held_out_stars']} "
        "stars held out by star (never seen in training, nor by PCA), of which "
        f"{figures['held_out_fgk']} FGK ({FGK[0]:.0f} <= Teff < {FGK[1]:.0f} K) ask for neighbours "
        "among all spectra, other spectra of the same star excluded.",
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
              "Median RMS over good pixels of held-out spectra, in units of the normalised flux, "
              "at the model's own sampling, beside PCA of the same dimension at that sampling.", "",
              "| model | dims | pixels | RMS | PCA RMS |", "|---|---|---|---|---|"]
    for r in ordered:
        if r.kind == "latent":
            lines.append(f"| {r.name} | {r.dimensions} | {r.pixels} | {r.recon_rms:.4f} | "
                         f"{r.pca_recon_rms:.4f} |")
    lines += ["", "![latent maps](latent_maps.png)", "",
              "![reconstructions](reconstructions.png)", "", "![reconstruction error](recon_error.png)", ""]
    return "\n".join(lines)


def _format(scores: dict) -> list[str]:
    return [f"{scores['teff']:.4f}", f"{scores['logg']:.3f}", f"{scores['feh']:.3f}"]


def pyplot() -> ModuleType:
    """pyplot drawing to files only, imported when a figure is made (it is slow to import)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as module

    return module


def plot_training_curve(history: dict, model_id: str, path: Path) -> None:
    """Training and validation loss by epoch, saved beside a trained model."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(6, 4))
    epochs = np.arange(1, len(history["loss"]) + 1)
    axes.plot(epochs, history["loss"], label="training")
    if history.get("val_loss"):
        axes.plot(epochs, history["val_loss"], label="validation (held-out stars)")
    axes.set(xlabel="epoch", ylabel="masked Huber loss", yscale="log", title=model_id)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _plot_maps(latents: list[Representation], labels: dict[str, np.ndarray], path: Path) -> None:
    plt = pyplot()
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
    plt = pyplot()
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
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6, 4))
    families: dict[str, list[Representation]] = {}
    for r in representations:
        if r.kind == "latent":
            families.setdefault(r.family, []).append(r)
    for name, members in families.items():
        members.sort(key=lambda r: r.dimensions)
        dims = [r.dimensions for r in members]
        line, = axis.plot(dims, [r.recon_rms for r in members], marker="o", label=f"{name} autoencoder")
        axis.plot(dims, [r.pca_recon_rms for r in members], marker="s", ls="--", color=line.get_color(),
                  label=f"PCA at {name}'s sampling ({members[0].pixels} px)")
    axis.set(xscale="log", yscale="log", xlabel="latent dimension", ylabel="median RMS (held out)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
