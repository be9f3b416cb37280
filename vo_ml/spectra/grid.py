"""Put spectra on the common wavelength grid the models read, and normalise them.

Resampling integrates the flux over each output pixel (flux-conserving), so spectra taken at
different samplings agree where they overlap. Masks travel with the flux: an output pixel is masked
when more than half of it comes from masked or uncovered input. Normalising by the median of the
good pixels removes the arbitrary flux scale of archive spectra, which carries no physics here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy import units as u

from vo_ml.spectra.readers import Spectrum

__all__ = ["Grid", "resample", "normalise_median", "to_grid"]


@dataclass(frozen=True)
class Grid:
    """A wavelength grid, linear or uniform in log-lambda, in Angstrom in the given medium."""

    start: float
    stop: float
    pixels: int
    spacing: str = "log"
    medium: str = "air"

    @classmethod
    def from_config(cls, config: dict) -> Grid:
        spacing = config.get("spacing", "log")
        if spacing not in ("log", "linear"):
            raise ValueError(f"grid spacing {spacing!r}: use 'log' or 'linear'")
        grid = cls(float(config["start"]), float(config["stop"]), int(config["pixels"]), spacing,
                   config.get("medium", "air"))
        if not 0 < grid.start < grid.stop or grid.pixels < 2:
            raise ValueError(f"grid {config}: need 0 < start < stop and at least 2 pixels")
        return grid

    @property
    def edges(self) -> np.ndarray:
        """The pixels+1 pixel boundaries, in Angstrom."""
        if self.spacing == "log":
            return np.geomspace(self.start, self.stop, self.pixels + 1)
        return np.linspace(self.start, self.stop, self.pixels + 1)

    @property
    def centres(self) -> np.ndarray:
        edges = self.edges
        return 0.5 * (edges[:-1] + edges[1:])

    def as_dict(self) -> dict:
        return {"start": self.start, "stop": self.stop, "pixels": self.pixels,
                "spacing": self.spacing, "medium": self.medium}


def _pixel_edges(centres: np.ndarray) -> np.ndarray:
    """Boundaries halfway between pixel centres, extrapolated by half a pixel at both ends."""
    middle = 0.5 * (centres[1:] + centres[:-1])
    first = centres[0] - (middle[0] - centres[0])
    last = centres[-1] + (centres[-1] - middle[-1])
    return np.concatenate(([first], middle, [last]))


def resample(
    wavelength: np.ndarray, flux: np.ndarray, mask: np.ndarray, edges: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mean flux density of each output pixel between ``edges``, and its mask.

    The integral of the input flux density (masked pixels counted as zero) is interpolated at the
    output edges; the same is done for the good-pixel weight, and the ratio is the mean over the
    good part of each output pixel. This conserves flux and is exact for identical grids.
    """
    in_edges = _pixel_edges(wavelength)
    widths = np.diff(in_edges)
    good = (~mask).astype(np.float64)
    flux_integral = np.concatenate(([0.0], np.cumsum(np.where(mask, 0.0, flux) * widths)))
    good_integral = np.concatenate(([0.0], np.cumsum(good * widths)))
    flux_in_pixel = np.diff(np.interp(edges, in_edges, flux_integral))
    good_in_pixel = np.diff(np.interp(edges, in_edges, good_integral))
    good_fraction = good_in_pixel / np.diff(edges)
    out_mask = good_fraction <= 0.5
    with np.errstate(invalid="ignore", divide="ignore"):
        out_flux = np.where(out_mask, np.nan, flux_in_pixel / good_in_pixel)
    return out_flux, out_mask


def normalise_median(flux: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Divide by the median of the good pixels, so the continuum sits near 1."""
    good = flux[~mask]
    if good.size == 0:
        raise ValueError("cannot normalise: every pixel is masked")
    median = np.median(good)
    if not median > 0:
        raise ValueError(f"cannot normalise: the median flux of the good pixels is {median}")
    return flux / median


def to_grid(spectrum: Spectrum, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """The spectrum on ``grid``, median-normalised, as float32 flux and a boolean mask.

    Wavelengths are converted to the grid's unit; pixels outside the spectrum's range are masked.
    """
    if spectrum.medium != grid.medium:
        raise ValueError(
            f"{spectrum.meta.source}: spectrum is in {spectrum.medium} and the grid in {grid.medium}"
        )
    wavelength = spectrum.wavelength.to_value(u.AA)
    if np.any(np.diff(wavelength) <= 0):
        raise ValueError(f"{spectrum.meta.source}: wavelengths are not strictly increasing")
    flux, mask = resample(wavelength, spectrum.flux, spectrum.mask, grid.edges)
    if mask.all():
        raise ValueError(
            f"{spectrum.meta.source}: no good pixel on the grid {grid.start}-{grid.stop} A "
            f"(spectrum covers {wavelength[0]:.1f}-{wavelength[-1]:.1f} A)"
        )
    flux = normalise_median(flux, mask)
    return np.where(mask, 0.0, flux).astype(np.float32), mask
