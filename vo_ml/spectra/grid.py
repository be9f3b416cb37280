"""Put spectra on the common wavelength grid the models read, and normalise them.

Resampling integrates the flux over each output pixel (flux-conserving), so spectra taken at
different samplings agree where they overlap. Masks travel with the flux: an output pixel is masked
when more than half of it comes from masked or uncovered input. Normalising (by the median of the
good pixels, or by a pseudo-continuum that also takes out the flux calibration and any smooth
tilt) removes the arbitrary flux scale of archive spectra, which carries no physics here.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import numpy as np
from astropy import units as u
from scipy import ndimage

from vo_ml.spectra.record import Spectrum
from vo_ml.spectra.velocity import air_to_vacuum, doppler_to_rest, measure_velocity, vacuum_to_air

__all__ = ["Grid", "Preprocessing", "resample", "normalise_median", "normalise_continuum",
           "downsample", "smooth_to_fwhm", "sampling_resolving_power", "resolving_power",
           "in_windows"]


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


def in_windows(wavelength: np.ndarray, windows: tuple[tuple[float, float], ...]) -> np.ndarray:
    """True for wavelengths inside any of the (start, stop) windows."""
    inside = np.zeros(wavelength.shape, dtype=bool)
    for start, stop in windows:
        inside |= (wavelength >= start) & (wavelength <= stop)
    return inside


#: The share of a stretch of the grid that must be good for it to give a continuum node.
MIN_STRETCH_COVERAGE = 0.25


#: The pseudo-continuum is found on the flux smoothed by a Gaussian of this many line spreads
#: (sigma in FWHM): at S/N 20 this keeps 80% of a MILES star's ten nearest neighbours, against 42%
#: unsmoothed.
CONTINUUM_SMOOTHING = 2.0
#: Stretches of the grid the pseudo-continuum is fitted in, unless a config says otherwise.
CONTINUUM_STRETCHES = 40


def normalise_continuum(
    wavelength: np.ndarray, flux: np.ndarray, mask: np.ndarray, bins: int = CONTINUUM_STRETCHES,
    smoothing: float = 0.0,
) -> np.ndarray:
    """Divide by an upper envelope: the 90th percentile of the good pixels in each of ``bins``
    equal stretches of the grid, interpolated linearly between the stretches' centres (and held
    flat beyond the first and last). The percentile rides over absorption lines, so the
    continuum comes out near 1 whatever the flux calibration.

    The stretches are fixed on the grid, not on the good pixels: a spectrum that covers part of
    the grid gets, over that part, the continuum its whole counterpart gets. A stretch less than
    a quarter covered, or whose envelope is not positive, gives no node. The envelope is found
    on the flux smoothed by a Gaussian of ``smoothing`` pixels (sigma), as noise would otherwise
    raise the percentile, and in two passes, the second on the flux the first flattened, as a
    slope within a stretch would otherwise raise it too.
    """
    smoothed = _smoothed(flux, mask, smoothing)
    first = _envelope(wavelength, smoothed, mask, bins)
    return flux / (first * _envelope(wavelength, smoothed / first, mask, bins))


def _smoothed(flux: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """The flux convolved with a Gaussian over good pixels only (normalised convolution),
    truncated at 4 sigma or the spectrum's length: a kernel wider than the spectrum (wavelengths
    in the wrong unit, say) would only take memory and time to give its mean."""
    if sigma <= 0:
        return flux
    radius = min(int(4 * sigma + 0.5), flux.size)
    good = (~mask).astype(np.float64)
    weights = ndimage.gaussian_filter1d(good, sigma, mode="constant", radius=radius)
    summed = ndimage.gaussian_filter1d(np.where(mask, 0.0, flux), sigma, mode="constant", radius=radius)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mask, np.nan, summed / weights)


def _envelope(wavelength: np.ndarray, flux: np.ndarray, mask: np.ndarray, bins: int) -> np.ndarray:
    """The 90th-percentile envelope of :func:`normalise_continuum`, at every pixel."""
    usable = flux.size // bins * bins
    stretches = np.arange(usable).reshape(bins, -1)
    good = ~mask[stretches]
    values = np.where(good, flux[stretches], np.nan)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN stretches give NaN, dropped below
        levels = np.nanpercentile(values, 90, axis=1)
        centres = np.nanmedian(np.where(good, wavelength[stretches], np.nan), axis=1)
    nodes = (good.mean(axis=1) >= MIN_STRETCH_COVERAGE) & (levels > 0)
    if not nodes.any():
        raise ValueError(f"cannot fit a continuum: no stretch of the grid (1/{bins} of it) is "
                         "a quarter covered by good pixels with positive flux")
    return np.interp(wavelength, centres[nodes], levels[nodes])


#: Pixels per resolution element (FWHM) that spectrographs sample with: 2 (Nyquist) to 3.
PIXELS_PER_RESOLUTION_ELEMENT = 3.0


def sampling_resolving_power(wavelength: np.ndarray) -> float:
    """The resolving power a spectrum sampled at ``wavelength`` likely has: three pixels per
    resolution element, at the median sampling. Used where a file or upload says nothing of its
    resolution. A spectrum sampled at 2.8 pixels, as MILES is, is then left as the archive's own
    spectra were; one sampled at two pixels (Nyquist) is smoothed a little less than it should."""
    step = np.median(np.diff(wavelength))
    return float(np.median(wavelength) / (PIXELS_PER_RESOLUTION_ELEMENT * step))


def resolving_power(spectrum: Spectrum, wavelength: np.ndarray) -> float:
    """The spectrum's resolving power: as its file states it, else as its sampling at
    ``wavelength`` (A) suggests (:func:`sampling_resolving_power`)."""
    return spectrum.meta.resolving_power or sampling_resolving_power(wavelength)


def smooth_to_fwhm(
    wavelength: np.ndarray, flux: np.ndarray, mask: np.ndarray, fwhm: float, resolving_power: float
) -> np.ndarray:
    """Degrade a spectrum of ``resolving_power`` to a Gaussian line spread of ``fwhm`` A.

    Spectra from instruments of different resolution only compare once they share one. The
    kernel (sized at the middle of the range) is applied by normalised convolution, so masked
    pixels neither contribute nor leave holes in their neighbours (they come out NaN).
    """
    centre = wavelength[wavelength.size // 2]
    own = centre / resolving_power
    if own >= fwhm:
        return flux
    step = np.median(np.diff(wavelength))
    return _smoothed(flux, mask, np.sqrt(fwhm**2 - own**2) / (2 * np.sqrt(2 * np.log(2))) / step)


#: The frames a config may ask spectra to be put in (see :class:`Preprocessing`).
FRAMES = ("rest", "measured", "barycentric", "as-is")


@dataclass(frozen=True)
class Preprocessing:
    """Every step from an observed spectrum to the store, as an archive config names them.

    ``frame`` is ``"rest"`` (shift by the star's radial velocity, which must then be known),
    ``"measured"`` (shift by the velocity measured from the spectrum itself, see
    :mod:`vo_ml.spectra.velocity`), ``"barycentric"`` or ``"as-is"``. ``gaps`` and
    ``telluric`` are wavelength windows (A, in the grid's medium) masked before resampling,
    e.g. the HARPS CCD gap. ``normalise`` is ``"median"`` or ``"continuum"``. ``fwhm`` (A),
    when given, degrades every spectrum of higher resolution to that line spread first, so
    archives of several instruments compare; a spectrum that does not give its resolution is
    taken to sample its line spread at three pixels (:func:`sampling_resolving_power`).
    ``stretches`` is how many pieces of the grid
    the continuum is fitted in: more follow an echelle spectrum's blaze residuals better.
    """

    grid: Grid
    frame: str = "as-is"
    gaps: tuple[tuple[float, float], ...] = ()
    telluric: tuple[tuple[float, float], ...] = ()
    normalise: str = "median"
    fwhm: float | None = None
    stretches: int = CONTINUUM_STRETCHES

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
            int(steps.get("stretches", CONTINUUM_STRETCHES)),
        )
        if preprocessing.frame not in FRAMES:
            raise ValueError(f"preprocess.frame {preprocessing.frame!r}: use {', '.join(FRAMES)}")
        if preprocessing.normalise not in ("median", "continuum"):
            raise ValueError(f"preprocess.normalise {preprocessing.normalise!r}: use median or continuum")
        if not 1 <= preprocessing.stretches <= preprocessing.grid.pixels:
            raise ValueError(f"preprocess.stretches {preprocessing.stretches}: the continuum is fitted "
                             f"in 1 to {preprocessing.grid.pixels} stretches of the grid (one pixel "
                             f"each at the most); leave it out for {CONTINUUM_STRETCHES}")
        return preprocessing

    def steps(self) -> dict:
        """The ``preprocess`` section of a config that gives these steps (the grid aside)."""
        return {"frame": self.frame, "gaps": [list(w) for w in self.gaps],
                "telluric": [list(w) for w in self.telluric], "normalise": self.normalise,
                "fwhm": self.fwhm, "stretches": self.stretches}

    def apply(
        self, spectrum: Spectrum, radial_velocity: float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The spectrum on the grid, normalised: float32 flux (0 where masked) and the mask.

        In the ``measured`` frame the spectrum is put on the grid once to measure its velocity,
        then again from its own pixels at rest: it is resampled once either way.
        """
        observed = self._wavelength_in_medium(spectrum)
        if np.any(np.diff(observed) <= 0):
            raise ValueError(f"{spectrum.meta.source}: wavelengths are not strictly increasing")
        # Detector gaps and telluric bands sit at fixed observed wavelengths.
        mask = spectrum.mask | in_windows(observed, self.gaps + self.telluric)
        flux = self._at_common_resolution(spectrum, observed, mask)
        wavelength = self._in_frame(spectrum, observed, radial_velocity)
        on_grid, grid_mask = self._on_grid(spectrum, wavelength, flux, mask)
        if self.frame == "measured":
            velocity = measure_velocity(self.grid.centres, on_grid, grid_mask, self.line_spread,
                                        self.grid.medium)
            if velocity is not None:
                on_grid, grid_mask = self._on_grid(spectrum, doppler_to_rest(observed, velocity),
                                                   flux, mask)
        return np.where(grid_mask, 0.0, on_grid).astype(np.float32), grid_mask

    @property
    def line_spread(self) -> float:
        """The FWHM (A) of lines on the grid: the config's, else two pixels at its middle."""
        return self.fwhm if self.fwhm is not None else 2 * self._pixel_width

    @property
    def _pixel_width(self) -> float:
        """The width (A) of the grid's middle pixel."""
        edges = self.grid.edges
        return float(edges[self.grid.pixels // 2 + 1] - edges[self.grid.pixels // 2])

    def _at_common_resolution(self, spectrum: Spectrum, wavelength: np.ndarray,
                              mask: np.ndarray) -> np.ndarray:
        """The flux at the config's line spread, when it asks for one."""
        if self.fwhm is None:
            return spectrum.flux
        return smooth_to_fwhm(wavelength, spectrum.flux, mask, self.fwhm,
                              resolving_power(spectrum, wavelength))

    def _on_grid(self, spectrum: Spectrum, wavelength: np.ndarray, flux: np.ndarray,
                 mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Resampled onto the grid and normalised, with the grid's mask."""
        flux, mask = resample(wavelength, flux, mask, self.grid.edges)
        if mask.all():
            raise ValueError(
                f"{spectrum.meta.source}: no good pixel on the grid {self.grid.start}-"
                f"{self.grid.stop} A (spectrum covers {wavelength[0]:.1f}-{wavelength[-1]:.1f} A)")
        if self.normalise == "continuum":
            smoothing = CONTINUUM_SMOOTHING * self.line_spread / self._pixel_width
            return normalise_continuum(self.grid.centres, flux, mask, self.stretches, smoothing), mask
        return normalise_median(flux, mask), mask

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
