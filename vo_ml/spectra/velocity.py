"""Radial velocities measured from the spectrum itself, by cross-correlation with a line mask.

Spectrograph pipelines (the HARPS DRS among them) measure velocities by cross-correlating the
spectrum with a mask of stellar lines; this is that method at the archive's resolution. The mask
holds the strong lines every FGK(M) spectrum shows (Balmer, Ca II H and K, Ca I, Mg b, Na D and
a dozen Fe I lines), each a Gaussian as wide as the line spread, so a measurement needs neither a
catalogue nor a template from the archive: archive spectra and uploads are measured alike, which
is what similarity needs. The correlation runs on a grid uniform in log-lambda (a velocity shift is
a pixel shift there), in Fourier space, with the masked pixels left out of both the spectrum and
the normalisation of every lag.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import signal

__all__ = ["LINE_MASK_AIR", "SPEED_OF_LIGHT_KMS", "VELOCITY_LIMIT_KMS", "VELOCITY_STEP_KMS",
           "air_to_vacuum", "doppler_to_rest", "measure_velocity", "vacuum_to_air"]

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


#: Rest wavelengths (A, air) of the lines of the mask.
LINE_MASK_AIR = (
    3933.66, 3968.47, 4045.81, 4101.74, 4226.73, 4271.76, 4307.90, 4325.76, 4340.47, 4383.55,
    4404.75, 4861.33, 4957.60, 5012.07, 5167.32, 5172.68, 5183.60, 5227.19, 5269.54, 5328.04,
    5371.49, 5397.13, 5405.77, 5429.70, 5446.92, 5889.95, 5895.92, 6122.22, 6162.17, 6439.08,
    6494.98, 6562.79, 8498.02, 8542.09, 8662.14,
)
#: Sampling of the correlation, and the largest velocity looked for (the fastest halo stars).
VELOCITY_STEP_KMS = 5.0
VELOCITY_LIMIT_KMS = 600.0


@functools.lru_cache(maxsize=16)
def _line_mask(start: float, stop: float, fwhm: float, medium: str) -> tuple[np.ndarray, np.ndarray]:
    """The log-lambda sampling between ``start`` and ``stop`` and the mask's depth on it."""
    step = np.log1p(VELOCITY_STEP_KMS / SPEED_OF_LIGHT_KMS)
    log_wavelength = np.arange(np.log(start), np.log(stop), step)
    lines = np.asarray(LINE_MASK_AIR)
    if medium == "vacuum":
        lines = air_to_vacuum(lines)
    sigma = fwhm / (2 * np.sqrt(2 * np.log(2)))
    wavelength = np.exp(log_wavelength)
    depth = np.zeros(wavelength.size)
    for line in lines[(lines > start) & (lines < stop)]:
        near = np.abs(wavelength - line) < 5 * sigma
        depth[near] += np.exp(-0.5 * ((wavelength[near] - line) / sigma) ** 2)
    return log_wavelength, depth


def measure_velocity(wavelength: np.ndarray, flux: np.ndarray, mask: np.ndarray, fwhm: float,
                     medium: str = "air") -> float | None:
    """The velocity (km/s, positive receding) that best aligns the continuum-normalised ``flux``
    (at a line spread of about ``fwhm`` A) with the line mask; None when no line of the mask
    falls on a good pixel.

    The peak is looked for within +-VELOCITY_LIMIT_KMS and refined by a parabola through the
    three highest samples.
    """
    log_wavelength, template = _line_mask(float(wavelength[0]), float(wavelength[-1]), fwhm, medium)
    log_grid = np.log(wavelength)
    good = np.interp(log_wavelength, log_grid, (~mask).astype(np.float64)) > 0.5
    depth = np.where(good, 1.0 - np.interp(log_wavelength, log_grid, np.where(mask, 1.0, flux)), 0.0)
    depth[good] -= np.median(depth[good]) if good.any() else 0.0
    lags = int(VELOCITY_LIMIT_KMS / VELOCITY_STEP_KMS)
    overlap = signal.correlate(good.astype(np.float64), template**2, mode="full", method="fft")
    product = signal.correlate(depth, template, mode="full", method="fft")
    centre = template.size - 1
    window = slice(centre - lags, centre + lags + 1)
    norm = np.sqrt(np.maximum(overlap[window], 0.0))
    if norm.max(initial=0.0) == 0:  # no line of the mask meets a good pixel at any lag
        return None
    ccf = np.where(norm > 1e-3 * norm.max(), product[window] / np.maximum(norm, 1e-30), -np.inf)
    peak = int(np.argmax(ccf))
    shift = float(peak - lags)
    if 0 < peak < ccf.size - 1 and np.isfinite(ccf[peak - 1:peak + 2]).all():
        before, at, after = ccf[peak - 1:peak + 2]
        curvature = before - 2 * at + after
        if curvature < 0:
            shift += 0.5 * (before - after) / curvature
    # signal.correlate(a, b)[centre + k] sums a[n + k] b[n]: the spectrum's lines sit k samples
    # redward of the mask's, a recession of k steps. Observed over rest wavelength is then
    # exp(k step) = sqrt((1 + beta) / (1 - beta)), so beta = tanh(k step): the velocity
    # doppler_to_rest takes out (c z, the redshift's, is larger by c beta^2 / 2).
    return float(np.tanh(shift * np.log1p(VELOCITY_STEP_KMS / SPEED_OF_LIGHT_KMS)) * SPEED_OF_LIGHT_KMS)
