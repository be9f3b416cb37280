"""Figures the service sends as PNG bytes: why two spectra are similar, and a spectrum's preview.

Colours are from the Okabe & Ito palette, which readers with any common colour-vision deficiency
tell apart; the two spectra also differ in line style, so the figure survives grey-scale printing.
"""

from __future__ import annotations

import io

import numpy as np

from vo_ml.ml.explain import OTHER, Explanation, WindowShare
from vo_ml.ml.report import pyplot

__all__ = ["DPI", "EXPLANATION_SIZE", "PREVIEW_SIZE", "TOP_WINDOWS", "explanation_png", "preview_png"]

#: Okabe & Ito colours.
BLUE, ORANGE, VERMILLION, GREY = "#0072B2", "#E69F00", "#D55E00", "#999999"
DPI = 100
#: Figure sizes in inches; at :data:`DPI` the PNGs are 100 times as many pixels.
EXPLANATION_SIZE = (10.0, 5.5)
PREVIEW_SIZE = (10.0, 3.5)
#: Named windows shaded and labelled on the attribution strip.
TOP_WINDOWS = 5


def explanation_png(explanation: Explanation, labels: tuple[str, str], top: int = TOP_WINDOWS) -> bytes:
    """Both spectra overlaid (``labels``: the spectrum's name, then the reference's) over the
    strip of each pixel's share of d^2, with the ``top`` named windows by share shaded and
    named: where the latent distance comes from."""
    plt = pyplot()
    figure, (spectra, strip) = plt.subplots(2, 1, figsize=EXPLANATION_SIZE, dpi=DPI, sharex=True,
                                            gridspec_kw={"height_ratios": (3, 1.4)})
    wavelength = explanation.wavelength
    spectra.plot(wavelength, explanation.ref_flux, color=BLUE, lw=0.8, label=labels[1])
    spectra.plot(wavelength, explanation.flux, color=ORANGE, lw=0.8, ls="--", label=labels[0])
    strip.plot(wavelength, np.where(explanation.good, explanation.share, np.nan), color=VERMILLION, lw=0.8)
    strip.axhline(0.0, color=GREY, lw=0.5)
    for row in _leading(explanation, top):
        for axes in (spectra, strip):
            axes.axvspan(row.start, row.stop, color=GREY, alpha=0.25, lw=0)
        strip.annotate(f"{row.name} {row.share:.0%}", ((row.start + row.stop) / 2, 0.97),
                       xycoords=("data", "axes fraction"), ha="center", va="top", rotation=90, fontsize=7)
    _shade(spectra, wavelength, ~explanation.good, "masked in either")
    squared = "d\N{SUPERSCRIPT TWO}"
    spectra.set(ylabel="normalised flux",
                title=f"Where the latent distance comes from: {squared} = {explanation.distance2:.3g}")
    spectra.legend(loc="lower right", fontsize=8)
    strip.set(xlabel=f"wavelength (\N{ANGSTROM SIGN}, {explanation.medium})",
              ylabel=f"share of {squared}\nper pixel")
    return _png(figure)


def preview_png(wavelength: np.ndarray, flux: np.ndarray, mask: np.ndarray, reconstruction: np.ndarray,
                title: str) -> bytes:
    """A spectrum (``mask`` True where bad) with the model's reconstruction of it, its masked
    ranges shaded. The reconstruction is drawn where the spectrum is good only: in a range no
    training spectrum covers (tellurics) the model's output means nothing."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=PREVIEW_SIZE, dpi=DPI)
    axes.plot(wavelength, np.where(mask, np.nan, flux), color=BLUE, lw=0.8, label="spectrum")
    axes.plot(wavelength, np.where(mask, np.nan, reconstruction), color=ORANGE, lw=0.8, ls="--",
              label="model reconstruction")
    _shade(axes, wavelength, np.asarray(mask, bool), "masked")
    axes.set(xlabel="wavelength (\N{ANGSTROM SIGN})", ylabel="normalised flux", title=title)
    axes.legend(loc="lower right", fontsize=8)
    return _png(figure)


def _leading(explanation: Explanation, top: int) -> list[WindowShare]:
    """The ``top`` named windows by share that overlap none with a larger share, so that their
    names do not collide."""
    chosen: list[WindowShare] = []
    for row in explanation.windows():
        if row.name != OTHER and all(row.stop <= kept.start or row.start >= kept.stop for kept in chosen):
            chosen.append(row)
    return chosen[:top]


def _shade(axes: object, wavelength: np.ndarray, bad: np.ndarray, label: str) -> None:
    """Shade every run of ``bad`` pixels, labelled once in the legend."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], bad.astype(np.int8), [0]])))
    for number, (start, stop) in enumerate(zip(edges[::2], edges[1::2], strict=True)):
        axes.axvspan(wavelength[start], wavelength[stop - 1], color=GREY, alpha=0.5, lw=0, hatch="//",
                     fill=False, label=None if number else label)


def _png(figure: object) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=DPI)
    pyplot().close(figure)
    return buffer.getvalue()
