"""Put spectra on the common wavelength grid the models read, and normalise them.

Resampling integrates the flux over each output pixel (flux-conserving), so spectra taken at
different samplings agree where they overlap. Masks travel with the flux: an output pixel is masked
when more than half of it comes from masked or uncovered input. Normalising by the median of the
good pixels removes the arbitrary flux scale of archive spectra, which carries no physics here.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from astropy import units as u

from vo_ml.spectra.record import Spectrum

__all__ = ["Grid", "Preprocessing", "resample", "normalise_median", "normalise_continuum",
           "downsample", "smooth_to_fwhm", "air_to_vacuum", "vacuum_to_air", "doppler_to_rest", "in_windows"]


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

    @functools.cached_property
    def edges(self) -> np.ndarray:
        """The pixels+1 pixel boundaries, in Angstrom (computed once per grid)."""
        if self.spacing == "log":
            return np.geomspace(self.start, self.stop, self.pixels + 1)
        return np.linspace(self.start, self.stop, self.pixels + 1)

    @functools.cached_property
    def centres(self) -> np.ndarray:
        edges = self.edges
        return 0.5 * (edges[:-1] + edges[1:])

    def coarsened(self, factor: int) -> Grid:
        """The grid whose pixels are ``factor`` of these averaged (see :func:`downsample`); a
        remainder of fewer than ``factor`` pixels at the red end is dropped."""
        pixels = self.pixels // factor
        return Grid(self.start, float(self.edges[pixels * factor]), pixels, self.spacing, self.medium)

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
    good part of each output pixel. This conserves flux and is exact for identical grids. Arrays
    are reused in place: at HARPS size every temporary costs as much as the arithmetic.
    """
    in_edges = _pixel_edges(wavelength)
    widths = np.diff(in_edges)
    good_widths = np.where(mask, 0.0, widths)
    integral = np.zeros(in_edges.size)
    np.cumsum(good_widths, out=integral[1:])
    good_in_pixel = np.diff(np.interp(edges, in_edges, integral))
    np.multiply(good_widths, flux, out=good_widths, where=~mask)
    np.cumsum(good_widths, out=integral[1:])
    flux_in_pixel = np.diff(np.interp(edges, in_edges, integral))
    out_mask = good_in_pixel <= 0.5 * np.diff(edges)
    with np.errstate(invalid="ignore", divide="ignore"):
        np.divide(flux_in_pixel, good_in_pixel, out=flux_in_pixel)
    flux_in_pixel[out_mask] = np.nan
    return flux_in_pixel, out_mask


def normalise_median(flux: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Divide by the median of the good pixels, so the continuum sits near 1."""
    good = flux[~mask]
    if good.size == 0:
        raise ValueError("cannot normalise: every pixel is masked")
    median = np.median(good)
    if not median > 0:
        raise ValueError(f"cannot normalise: the median flux of the good pixels is {median}")
    return flux / median


SPEED_OF_LIGHT_KMS = 299792.458


def air_to_vacuum(wavelength: np.ndarray) -> np.ndarray:
    """Vacuum wavelengths (A) from air ones: the IAU standard (Morton 2000), inverted by Piskunov."""
    s2 = (1e4 / wavelength) ** 2
    n = 1 + 8.336624212083e-5 + 2.408926869968e-2 / (130.1065924522 - s2) \
        + 1.599740894897e-4 / (38.92568793293 - s2)
    return wavelength * n


def vacuum_to_air(wavelength: np.ndarray) -> np.ndarray:
    """Air wavelengths (A) from vacuum ones: the IAU standard (Morton 2000)."""
    s2 = (1e4 / wavelength) ** 2
    n = 1 + 8.34254e-5 + 2.406147e-2 / (130 - s2) + 1.5998e-4 / (38.9 - s2)
    return wavelength / n


def doppler_to_rest(wavelength: np.ndarray, velocity_kms: float) -> np.ndarray:
    """Wavelengths in the frame of a source receding at ``velocity_kms`` (relativistic)."""
    beta = velocity_kms / SPEED_OF_LIGHT_KMS
    return wavelength * np.sqrt((1 - beta) / (1 + beta))


def in_windows(wavelength: np.ndarray, windows: tuple[tuple[float, float], ...]) -> np.ndarray:
    """True for wavelengths inside any of the (start, stop) windows."""
    inside = np.zeros(wavelength.shape, dtype=bool)
    for start, stop in windows:
        inside |= (wavelength >= start) & (wavelength <= stop)
    return inside


def normalise_continuum(
    wavelength: np.ndarray, flux: np.ndarray, mask: np.ndarray, bins: int = 40
) -> np.ndarray:
    """Divide by an upper envelope: the 90th percentile of the good pixels in each of ``bins``
    equal stretches (the last few good pixels, fewer than ``bins``, only follow the last node),
    interpolated linearly. The percentile rides over absorption lines, so the continuum comes
    out near 1 whatever the flux calibration."""
    good = np.flatnonzero(~mask)
    if good.size < bins:
        raise ValueError(f"cannot fit a continuum: {good.size} good pixels for {bins} bins")
    pieces = good[: good.size // bins * bins].reshape(bins, -1)
    nodes = wavelength[pieces[:, pieces.shape[1] // 2]]
    levels = np.percentile(flux[pieces], 90, axis=1)
    if not np.all(levels > 0):
        raise ValueError("cannot fit a continuum: the upper envelope is not positive everywhere")
    return flux / np.interp(wavelength, nodes, levels)


def smooth_to_fwhm(
    wavelength: np.ndarray, flux: np.ndarray, mask: np.ndarray, fwhm: float, resolving_power: float
) -> np.ndarray:
    """Degrade a spectrum of ``resolving_power`` to a Gaussian line spread of ``fwhm`` A.

    Spectra from instruments of different resolution only compare once they share one. The
    kernel (sized at the middle of the range) is applied by normalised convolution, so masked
    pixels neither contribute nor leave holes in their neighbours.
    """
    centre = wavelength[wavelength.size // 2]
    own = centre / resolving_power
    if own >= fwhm:
        return flux
    step = np.median(np.diff(wavelength))
    sigma = np.sqrt(fwhm**2 - own**2) / (2 * np.sqrt(2 * np.log(2))) / step
    offsets = np.arange(-int(np.ceil(4 * sigma)), int(np.ceil(4 * sigma)) + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    good = (~mask).astype(np.float64)
    weighted = np.convolve(np.where(mask, 0.0, flux) * good, kernel, mode="same")
    weights = np.convolve(good, kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(weights > 0, weighted / weights, np.nan)


@dataclass(frozen=True)
class Preprocessing:
    """Every step from an observed spectrum to the store, as an archive config names them.

    ``frame`` is ``"rest"`` (shift by the star's radial velocity, which must then be known),
    ``"barycentric"`` or ``"as-is"``; ``gaps`` and ``telluric`` are wavelength windows (A, in the
    grid's medium) masked before resampling, e.g. the HARPS CCD gap; ``normalise`` is
    ``"median"`` or ``"continuum"``; ``fwhm`` (A), when given, degrades every spectrum of higher
    resolution to that line spread first, so archives of several instruments compare.
    """

    grid: Grid
    frame: str = "as-is"
    gaps: tuple[tuple[float, float], ...] = ()
    telluric: tuple[tuple[float, float], ...] = ()
    normalise: str = "median"
    fwhm: float | None = None

    @classmethod
    def from_config(cls, config: dict) -> Preprocessing:
        steps = config.get("preprocess", {})
        preprocessing = cls(
            Grid.from_config(config["grid"]),
            steps.get("frame", "as-is"),
            tuple(tuple(w) for w in steps.get("gaps", ())),
            tuple(tuple(w) for w in steps.get("telluric", ())),
            steps.get("normalise", "median"),
            float(steps["fwhm"]) if steps.get("fwhm") else None,
        )
        if preprocessing.frame not in ("rest", "barycentric", "as-is"):
            raise ValueError(f"preprocess.frame {preprocessing.frame!r}: use rest, barycentric or as-is")
        if preprocessing.normalise not in ("median", "continuum"):
            raise ValueError(f"preprocess.normalise {preprocessing.normalise!r}: use median or continuum")
        return preprocessing

    def steps(self) -> dict:
        """The ``preprocess`` section of a config that gives these steps (the grid aside)."""
        return {"frame": self.frame, "gaps": [list(w) for w in self.gaps],
                "telluric": [list(w) for w in self.telluric], "normalise": self.normalise,
                "fwhm": self.fwhm}

    def apply(
        self, spectrum: Spectrum, radial_velocity: float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The spectrum on the grid, normalised: float32 flux (0 where masked) and the mask."""
        source = spectrum.meta.source
        observed = self._wavelength_in_medium(spectrum)
        # Detector gaps and telluric bands sit at fixed observed wavelengths.
        mask = spectrum.mask | in_windows(observed, self.gaps + self.telluric)
        wavelength = self._in_frame(spectrum, observed, radial_velocity)
        if np.any(np.diff(wavelength) <= 0):
            raise ValueError(f"{source}: wavelengths are not strictly increasing")
        flux = spectrum.flux
        if self.fwhm is not None:
            if not spectrum.meta.resolving_power:
                raise ValueError(f"{source}: the config asks for a common resolution, but the file "
                                 "gives no resolving power (SPEC_RES)")
            flux = smooth_to_fwhm(wavelength, flux, mask, self.fwhm, spectrum.meta.resolving_power)
        flux, mask = resample(wavelength, flux, mask, self.grid.edges)
        if mask.all():
            raise ValueError(
                f"{source}: no good pixel on the grid {self.grid.start}-{self.grid.stop} A "
                f"(spectrum covers {wavelength[0]:.1f}-{wavelength[-1]:.1f} A)"
            )
        if self.normalise == "continuum":
            flux = normalise_continuum(self.grid.centres, flux, mask)
        else:
            flux = normalise_median(flux, mask)
        return np.where(mask, 0.0, flux).astype(np.float32), mask

    def _wavelength_in_medium(self, spectrum: Spectrum) -> np.ndarray:
        """Wavelengths in A, in the grid's medium."""
        wavelength = spectrum.wavelength.to_value(u.AA)
        if spectrum.medium != self.grid.medium:
            wavelength = (air_to_vacuum if self.grid.medium == "vacuum" else vacuum_to_air)(wavelength)
        return wavelength

    def _in_frame(self, spectrum: Spectrum, wavelength: np.ndarray,
                  radial_velocity: float | None) -> np.ndarray:
        """Wavelengths moved to the configured frame."""
        if self.frame == "rest" and spectrum.frame != "rest":
            if radial_velocity is None:
                raise ValueError(
                    f"{spectrum.meta.source}: the config asks for the rest frame but the star's "
                    "radial velocity is not known; give it in the catalogue or use frame: as-is")
            return doppler_to_rest(wavelength, radial_velocity)
        if self.frame == "barycentric" and spectrum.frame == "topocentric":
            raise ValueError(
                f"{spectrum.meta.source}: the spectrum is topocentric and no barycentric "
                "correction is known; use frame: as-is")
        return wavelength


def downsample(flux: np.ndarray, mask: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Average ``factor`` neighbouring pixels over the good ones; masked where none is good.

    This is how the dense family sees spectra: the store keeps full resolution, and each model
    asks for the sampling it needs.
    """
    if factor == 1:
        return flux.astype(np.float32, copy=False), mask
    usable = flux.shape[1] - flux.shape[1] % factor
    good = ~mask[:, :usable]
    values = np.where(good, flux[:, :usable], np.float32(0))
    # Strided sums: reducing a trailing axis of length `factor` is several times slower.
    sums = values[:, 0::factor].astype(np.float32)
    counts = good[:, 0::factor].astype(np.uint16)
    for offset in range(1, factor):
        sums += values[:, offset::factor]
        counts += good[:, offset::factor]
    out_mask = counts == 0
    np.divide(sums, np.maximum(counts, 1), out=sums)
    sums[out_mask] = 0.0
    return sums, out_mask
