"""Labelled HARPS-like stellar spectra, written as ESO Phase 3 SDP 1-D FITS files.

Real archive spectra come without trustworthy labels and in limited numbers; these synthetic ones
carry exact Teff, logg, [Fe/H], v sin i and RV, so tests can check that the pipeline recovers
physics, and benchmarks can build an archive of any size in the same format ESO serves.

The physics is a caricature, but each label acts the way it does in real stars:

* the continuum is a Planck curve at Teff, normalised to 1 at 5500 A;
* one fixed line list (built once from :data:`LINE_LIST_SEED`) holds neutral metal lines that
  strengthen in cool and metal-rich stars, ionised lines that strengthen in hot and low-gravity
  stars, the Balmer lines at their air wavelengths that strengthen with Teff, and the
  gravity-sensitive Ca II H&K, Mg b, Na D and Ca I lines whose pressure wings grow with logg;
* lines form on a log-wavelength grid, where one velocity is one pixel shift, so the RV shift is
  exact and rotation plus the R = 115,000 instrumental profile is one constant kernel;
* noise is Poisson in photon counts, with the requested S/N in the continuum at 5500 A.

The spectrum is resampled to the HARPS s1d grid: 3781-6913 A in air, 0.01 A steps, with the gap
between the two CCDs set to NaN and flagged in QUAL.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path

import dask
import numpy as np
from astropy.io import fits
from astropy.time import Time

from vo_ml.files import replacing
from vo_ml.progress import DaskProgress
from vo_ml.progress import progress as progress_display

__all__ = [
    "CCD_GAP", "LINE_FREE_WINDOW", "LINE_LIST_SEED", "QUAL_CCD_GAP", "RESOLVING_POWER",
    "LineGroup", "LineList", "ObservationMeta", "SpectrumArrays", "StellarParameters",
    "continuum", "draw_observation", "draw_parameters", "file_name", "generate_archive", "line_list",
    "noise_seed", "normalised_model", "synthesize", "wavelength_grid", "write_sdp",
]

C_KMS = 299_792.458
WAVE_START, WAVE_END, WAVE_STEP = 3781.0, 6913.0, 0.01
#: Air wavelengths (A) between the two HARPS CCDs, where the s1d spectrum has no data.
CCD_GAP = (5304.0, 5337.0)
#: A stretch kept free of lines, so the continuum S/N can be measured as observers do.
LINE_FREE_WINDOW = (5490.0, 5510.0)
#: Where the continuum is 1 and the S/N is the requested one.
REFERENCE_WAVE = 5500.0
RESOLVING_POWER = 115_000.0
QUAL_CCD_GAP = 1
FITS_BLOCK = 2880
LINE_LIST_SEED = 20_240_611
LIMB_DARKENING = 0.6
#: Depth of a saturated line core.
MAX_DEPTH = 0.9
SOLAR_TEFF, SOLAR_LOGG = 5777.0, 4.44

#: Velocity step of the internal log-wavelength grid: finer than the s1d grid everywhere.
_DV = 0.4
_LOG_START, _LOG_END = np.log(3770.0), np.log(6925.0)
_METAL_WINDOW_KMS = 60.0
_STRONG_WINDOW_KMS = 2000.0
_AMU_KMS2 = 2 * 1.380649e-23 / 1.66053907e-27 / 1e6  # 2k/m_u in (km/s)^2 per K

#: Balmer lines: name, air wavelength (A), log10 central optical depth in the Sun.
_BALMER = (("H-alpha", 6562.80, 2.5), ("H-beta", 4861.33, 2.2), ("H-gamma", 4340.47, 2.0),
           ("H-delta", 4101.74, 1.85))
#: Strong lines with pressure wings: the same, then excitation (eV) and atomic mass (u).
_GRAVITY = (("Ca II K", 3933.66, 2.6, 0.0, 40.1), ("Ca II H", 3968.47, 2.4, 0.0, 40.1),
            ("Mg b1", 5183.60, 1.9, 2.7, 24.3), ("Mg b2", 5172.68, 1.7, 2.7, 24.3),
            ("Mg b4", 5167.32, 1.4, 2.7, 24.3), ("Na D2", 5889.95, 2.0, 0.0, 23.0),
            ("Na D1", 5895.92, 1.7, 0.0, 23.0), ("Ca I", 6122.22, 1.1, 1.9, 40.1),
            ("Ca I", 6162.17, 1.2, 1.9, 40.1))


class LineGroup:
    """How a line responds to the labels; plain integers so the list stays a set of arrays."""

    NEUTRAL, ION, HYDROGEN, GRAVITY = 0, 1, 2, 3


@dataclass(frozen=True)
class StellarParameters:
    """The labels of one spectrum: Teff (K), logg (cgs), [Fe/H] (dex), v sin i, RV (km/s), S/N."""

    teff: float
    logg: float
    feh: float
    vsini: float
    rv: float
    snr: float


@dataclass(frozen=True)
class ObservationMeta:
    """What an archive file says about the observation but the star does not decide."""

    object_name: str
    ra: float
    dec: float
    mjd_obs: float
    exptime: float
    berv: float = 0.0


@dataclass(frozen=True)
class SpectrumArrays:
    """The four SDP columns: air wavelength (A), flux and error (photon counts), quality flags."""

    wave: np.ndarray
    flux: np.ndarray
    err: np.ndarray
    qual: np.ndarray


@dataclass(frozen=True)
class LineList:
    """Rest-frame lines with their solar strength and what sets their response to the labels."""

    wave: np.ndarray
    log_strength: np.ndarray
    excitation: np.ndarray
    group: np.ndarray
    damping: np.ndarray
    mass: np.ndarray


def wavelength_grid() -> np.ndarray:
    """The HARPS s1d grid (air, A), built from integers so every call gives the same values."""
    n = round((WAVE_END - WAVE_START) / WAVE_STEP) + 1
    return WAVE_START + WAVE_STEP * np.arange(n, dtype=np.float64)


def _log_grid() -> np.ndarray:
    step = _DV / C_KMS
    return np.arange(_LOG_START, _LOG_END, step)


@lru_cache(maxsize=4)
def line_list(seed: int = LINE_LIST_SEED) -> LineList:
    """A few thousand lines, the same for every spectrum so that labels alone change the spectra."""
    rng = np.random.default_rng(seed)
    metals = _random_metal_lines(rng, n_neutral=3000, n_ion=500)
    named = [_named_lines(_BALMER, LineGroup.HYDROGEN), _named_lines(_GRAVITY, LineGroup.GRAVITY)]
    parts = [metals, *named]
    return LineList(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(LineList)))


def _random_metal_lines(rng: np.random.Generator, n_neutral: int, n_ion: int) -> LineList:
    n = n_neutral + n_ion
    wave = rng.uniform(np.exp(_LOG_START), np.exp(_LOG_END), 2 * n)
    free = (wave < LINE_FREE_WINDOW[0] - 3.0) | (wave > LINE_FREE_WINDOW[1] + 3.0)
    wave = wave[free][:n]
    ion = np.arange(n) >= n_neutral
    # Many weak lines and few strong ones, as in real spectra.
    log_strength = np.where(ion, -1.5 + 2.0 * rng.random(n), -2.0 + 3.0 * rng.random(n) ** 2)
    return LineList(
        wave=wave,
        log_strength=log_strength,
        excitation=np.where(ion, rng.uniform(2.5, 4.0, n), rng.uniform(0.0, 5.0, n)),
        group=np.where(ion, LineGroup.ION, LineGroup.NEUTRAL),
        damping=rng.uniform(0.1, 0.6, n),
        mass=rng.choice([24.3, 40.1, 47.9, 52.0, 55.8, 58.7], n),
    )


def _named_lines(table: tuple, group: int) -> LineList:
    wave = np.array([row[1] for row in table])
    if group == LineGroup.HYDROGEN:
        excitation, mass, damping = np.full(wave.size, 10.2), np.full(wave.size, 1.008), 1.0
    else:
        excitation, mass, damping = np.array([r[3] for r in table]), np.array([r[4] for r in table]), 0.4
    return LineList(wave=wave, log_strength=np.array([row[2] for row in table]), excitation=excitation,
                    group=np.full(wave.size, group), damping=np.full(wave.size, damping), mass=mass)


def continuum(wave: np.ndarray, teff: float) -> np.ndarray:
    """Planck B_lambda(Teff), normalised to 1 at 5500 A: the colour of the star, not its brightness."""
    hc_k = 1.438_776_877e8  # h c / k in A K

    def planck(x: np.ndarray | float) -> np.ndarray:
        return x ** -5.0 / np.expm1(hc_k / (x * teff))

    return planck(wave) / planck(REFERENCE_WAVE)


def _line_depths(lines: LineList, p: StellarParameters) -> np.ndarray:
    """Central optical depth of each line: abundance, ionisation and excitation balance, gravity."""
    theta_shift = 5040.0 / p.teff - 5040.0 / SOLAR_TEFF
    hotter, lower_g = (p.teff - SOLAR_TEFF) / 1000.0, SOLAR_LOGG - p.logg
    neutral = p.feh - 1.0 * hotter - lines.excitation * theta_shift
    ion = p.feh + 0.4 * hotter + 0.4 * lower_g - lines.excitation * theta_shift
    hydrogen = 1.5 * hotter
    response = np.select(
        [lines.group == LineGroup.NEUTRAL, lines.group == LineGroup.ION, lines.group == LineGroup.HYDROGEN],
        [neutral, ion, hydrogen], default=neutral,
    )
    return 10.0 ** np.clip(lines.log_strength + response, -6.0, 5.0)


def _line_widths(lines: LineList, p: StellarParameters) -> tuple[np.ndarray, np.ndarray]:
    """Doppler width b (km/s) and damping ratio a = gamma / b; pressure broadening grows with logg."""
    microturbulence = np.clip(1.0 + 0.4 * (SOLAR_LOGG - p.logg), 0.5, 2.5)
    b = np.sqrt(_AMU_KMS2 * p.teff / lines.mass + microturbulence**2)
    return b, lines.damping * 10.0 ** (0.4 * (p.logg - SOLAR_LOGG)) / b


def _profile(u: np.ndarray, a: np.ndarray) -> np.ndarray:
    """A Gaussian core with Lorentzian wings, cheap enough for millions of points."""
    return np.exp(-(u**2)) + a / (np.sqrt(np.pi) * (1.0 + u**2))


def _optical_depth(lines: LineList, p: StellarParameters, n_pixels: int) -> np.ndarray:
    """Sum every line over its own window only: the cost grows with the lines, not lines x pixels."""
    depth = _line_depths(lines, p)
    b, a = _line_widths(lines, p)
    doppler = np.sqrt((1.0 + p.rv / C_KMS) / (1.0 - p.rv / C_KMS))
    centre = (np.log(lines.wave * doppler) - _LOG_START) / (_DV / C_KMS)
    strong = lines.group >= LineGroup.HYDROGEN
    tau = np.zeros(n_pixels)
    for chosen, window in ((~strong, _METAL_WINDOW_KMS), (strong, _STRONG_WINDOW_KMS)):
        tau += _windowed_sum(centre[chosen], depth[chosen], b[chosen], a[chosen], window, n_pixels)
    return tau


def _windowed_sum(centre: np.ndarray, depth: np.ndarray, b: np.ndarray, a: np.ndarray,
                  window_kms: float, n_pixels: int) -> np.ndarray:
    half = int(np.ceil(window_kms / _DV))
    pixel = np.rint(centre).astype(np.int64)[:, None] + np.arange(-half, half + 1)
    u = (pixel - centre[:, None]) * _DV / b[:, None]
    edge = _profile(np.asarray(window_kms) / b, a)[:, None]
    # Subtracting the value at the window edge makes each profile end at zero, with no step.
    values = depth[:, None] * np.clip(_profile(u, a[:, None]) - edge, 0.0, None)
    inside = (pixel >= 0) & (pixel < n_pixels)
    return np.bincount(pixel[inside], weights=values[inside], minlength=n_pixels)


def _broadening_kernel(vsini: float) -> np.ndarray:
    """Rotation (linear limb darkening) convolved with the instrumental Gaussian, on the velocity grid."""
    sigma = C_KMS / RESOLVING_POWER / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    half = int(np.ceil((vsini + 5.0 * sigma) / _DV))
    v = np.arange(-half, half + 1) * _DV
    gauss = np.exp(-0.5 * (v / sigma) ** 2)
    if vsini < _DV:
        return gauss / gauss.sum()
    x2 = np.clip(1.0 - (v / vsini) ** 2, 0.0, None)
    rotation = 2.0 * (1.0 - LIMB_DARKENING) * np.sqrt(x2) + 0.5 * np.pi * LIMB_DARKENING * x2
    kernel = np.convolve(rotation, gauss, mode="same")
    return kernel / kernel.sum()


def _fft_convolve(signal: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Linear (not circular) convolution, centred, in O(n log n) whatever the v sin i."""
    size = 1 << int(np.ceil(np.log2(signal.size + kernel.size - 1)))
    full = np.fft.irfft(np.fft.rfft(signal, size) * np.fft.rfft(kernel, size), size)
    start = kernel.size // 2
    return full[start:start + signal.size]


def normalised_model(params: StellarParameters) -> np.ndarray:
    """Noise-free line spectrum on the s1d grid, continuum = 1, NaN in the CCD gap."""
    log_grid = _log_grid()
    tau = _optical_depth(line_list(), params, log_grid.size)
    # Round-off in the FFT can leave absorption a hair outside [0, 1]; Poisson counts need >= 0.
    # The source function is not zero, so even saturated cores keep some light.
    absorbed = MAX_DEPTH * np.clip(_fft_convolve(-np.expm1(-tau), _broadening_kernel(params.vsini)), 0.0, 1.0)
    wave = wavelength_grid()
    model = 1.0 - np.interp(np.log(wave), log_grid, absorbed)
    model[_in_gap(wave)] = np.nan
    return model


def _in_gap(wave: np.ndarray) -> np.ndarray:
    return (wave >= CCD_GAP[0]) & (wave <= CCD_GAP[1])


def synthesize(params: StellarParameters, seed: int) -> SpectrumArrays:
    """One observed spectrum in photon counts; ``seed`` fixes the noise, the labels fix the rest."""
    wave = wavelength_grid()
    expected = params.snr**2 * continuum(wave, params.teff) * normalised_model(params)
    gap = _in_gap(wave)
    counts = np.random.default_rng(seed).poisson(np.where(gap, 0.0, expected)).astype(np.float64)
    counts[gap] = np.nan
    return SpectrumArrays(
        wave=wave.astype(np.float32),
        flux=counts.astype(np.float32),
        err=np.sqrt(expected).astype(np.float32),
        qual=np.where(gap, QUAL_CCD_GAP, 0).astype(np.int32),
    )


def write_sdp(path: str | Path, spectrum_arrays: SpectrumArrays, parameters: StellarParameters,
              meta: ObservationMeta) -> None:
    """Write an ESO SDP 1-D spectrum, so the archive readers see the same layout as real HARPS products.

    The data unit is written straight from numpy: astropy byte-swaps a 5 MB table row through an
    index array, which takes a second per file, longer than making the spectrum. CHECKSUM and
    DATASUM carry no date, so the same labels and seed give the same bytes. The file is written
    under a temporary name and renamed, so an interrupted run never leaves a partial file that a
    resumed run would take as done.
    """
    path = Path(path)
    data = b"".join(_big_endian(getattr(spectrum_arrays, name.lower())).tobytes() for name, *_ in _COLUMNS)
    units = ((_primary_header(spectrum_arrays, parameters, meta), b""),
             (_spectrum_header(spectrum_arrays, meta), data))
    with replacing(path) as new, open(new.path, "wb") as f:
        for header, payload in units:
            f.write(_with_checksum(header, payload))
            f.write(payload)
            f.write(bytes(-len(payload) % FITS_BLOCK))


def _with_checksum(header: fits.Header, data: bytes) -> bytes:
    """The header as bytes with DATASUM and CHECKSUM set (FITS checksum convention)."""
    datasum = _ones_complement_sum(data)
    header["DATASUM"] = (str(datasum), "data unit checksum")
    header["CHECKSUM"] = ("0" * 16, "HDU checksum")
    total = _ones_complement_sum(header.tostring().encode("ascii"), datasum)
    header["CHECKSUM"] = _encode_checksum(~total & 0xFFFFFFFF)
    return header.tostring().encode("ascii")


def _ones_complement_sum(block: bytes, start: int = 0) -> int:
    """32-bit ones' complement sum of big-endian words; zero padding adds nothing."""
    words = np.frombuffer(block + bytes(-len(block) % 4), dtype=">u4")
    total = int(words.sum(dtype=np.uint64)) + start
    while total >> 32:
        total = (total & 0xFFFFFFFF) + (total >> 32)
    return total


_PUNCTUATION = set(range(0x3A, 0x41)) | set(range(0x5B, 0x61))


def _encode_checksum(value: int) -> str:
    """Sixteen printable characters whose words add ``value`` to the HDU sum, making it -0."""
    chars = [0] * 16
    for i, byte in enumerate(value.to_bytes(4, "big")):
        quotient, remainder = divmod(byte, 4)
        group = [quotient + remainder + 0x30] + [quotient + 0x30] * 3
        while any(c in _PUNCTUATION for c in group):
            for k in (0, 2):
                if group[k] in _PUNCTUATION or group[k + 1] in _PUNCTUATION:
                    group[k] += 1
                    group[k + 1] -= 1
        for j, char in enumerate(group):
            chars[4 * j + i] = char
    return bytes(chars[-1:] + chars[:-1]).decode("ascii")


def _primary_header(arrays: SpectrumArrays, p: StellarParameters, meta: ObservationMeta) -> fits.Header:
    wave = arrays.wave
    header = fits.PrimaryHDU().header
    header["EXTEND"] = True
    for key, value, comment in [
        ("ORIGIN", "ESO", "European Southern Observatory"),
        ("TELESCOP", "ESO-3P6", "ESO telescope name"),
        ("INSTRUME", "HARPS", "Instrument used"),
        ("OBJECT", meta.object_name, "Target designation"),
        ("RA", meta.ra, "[deg] Target right ascension (ICRS)"),
        ("DEC", meta.dec, "[deg] Target declination (ICRS)"),
        ("EQUINOX", 2000.0, "Standard FK5 (years)"),
        ("RADESYS", "ICRS", "Coordinate reference frame"),
        ("DATE-OBS", Time(meta.mjd_obs, format="mjd").isot, "Start of observation"),
        ("MJD-OBS", meta.mjd_obs, "[d] Start of observation"),
        ("MJD-END", meta.mjd_obs + meta.exptime / 86400.0, "[d] End of observation"),
        ("EXPTIME", meta.exptime, "[s] Total integration time"),
        ("TEXPTIME", meta.exptime, "[s] Total integration time of all exposures"),
        ("PRODCATG", "SCIENCE.SPECTRUM", "Data product category"),
        ("PROCSOFT", "vo_ml.spectra.synthetic", "Software that made the product"),
        ("PROG_ID", "SYNTHETIC", "Programme identifier"),
        ("OBSTECH", "ECHELLE", "Technique of observation"),
        ("FLUXCAL", "UNCALIBRATED", "Flux in photon counts, not calibrated"),
        ("SPECSYS", "BARYCENT", "Reference frame of the spectral axis"),
        ("SPEC_RES", RESOLVING_POWER, "Resolving power"),
        ("SPEC_BIN", WAVE_STEP / 10.0, "[nm] Wavelength bin size"),
        ("WAVELMIN", float(wave[0]) / 10.0, "[nm] Minimum wavelength"),
        ("WAVELMAX", float(wave[-1]) / 10.0, "[nm] Maximum wavelength"),
        ("SNR", p.snr, "S/N per pixel of the continuum at 5500 A"),
        ("NCOMBINE", 1, "Number of raw frames combined"),
        ("EXT_OBJ", False, "Not an extended object"),
        ("CONTNORM", False, "Not continuum normalised"),
        ("TOT_FLUX", False, "Flux is not the total flux of the source"),
        ("HIERARCH ESO DRS BERV", meta.berv, "[km/s] Barycentric correction applied"),
        *_label_cards(p),
    ]:
        header[key] = (value, comment)
    return header


def _label_cards(p: StellarParameters) -> Iterator[tuple[str, float, str]]:
    units = {"teff": "[K]", "logg": "[cgs]", "feh": "[dex]", "vsini": "[km/s]", "rv": "[km/s]",
             "snr": "at 5500 A"}
    for name, value in asdict(p).items():
        yield f"HIERARCH VOML {name.upper()}", value, f"{units[name]} synthetic label"
    yield "HIERARCH VOML LINELIST SEED", LINE_LIST_SEED, "Seed of the fixed line list"


#: Column name, FITS type code, unit, SDP utype, UCD.
_COLUMNS = (
    ("WAVE", "E", "Angstrom", "spec:Data.SpectralAxis.Value", "em.wl"),
    ("FLUX", "E", "adu", "spec:Data.FluxAxis.Value", "phot.flux.density;em.wl"),
    ("ERR", "E", "adu", "spec:Data.FluxAxis.Accuracy.StatError", "stat.error;phot.flux.density;em.wl"),
    ("QUAL", "J", "", "spec:Data.FluxAxis.Accuracy.QualityStatus", "meta.code.qual"),
)


def _spectrum_header(arrays: SpectrumArrays, meta: ObservationMeta) -> fits.Header:
    """Header of the one-row table; astropy lays out NAXIS1, TFORMn and TUNITn as FITS wants."""
    n = arrays.wave.size
    columns = [fits.Column(name=name, format=f"{n}{code}", unit=unit or None)
               for name, code, unit, _, _ in _COLUMNS]
    header = fits.BinTableHDU.from_columns(columns, nrows=1, name="SPECTRUM").header
    for i, (_, _, _, utype, ucd) in enumerate(_COLUMNS, start=1):
        header[f"TUTYP{i}"] = utype
        header[f"TUCD{i}"] = ucd
    wave = arrays.wave
    header["TDMIN1"] = (float(wave[0]), "[Angstrom] Start of the spectral axis")
    header["TDMAX1"] = (float(wave[-1]), "[Angstrom] End of the spectral axis")
    header["VOCLASS"] = ("SPECTRUM v2.0", "VO data model")
    header["VOPUB"] = ("ESO/SAF", "VO publishing authority")
    header["TITLE"] = (meta.object_name, "Dataset title")
    header["APERTURE"] = (1.0 / 3600.0, "[deg] Aperture diameter (HARPS fibre)")
    header["TELAPSE"] = (meta.exptime, "[s] Total elapsed time")
    header["TMID"] = (meta.mjd_obs + meta.exptime / 172800.0, "[d] MJD mid exposure")
    header["SPEC_VAL"] = (float(wave[0] + wave[-1]) / 20.0, "[nm] Mean wavelength")
    header["SPEC_BW"] = (float(wave[-1] - wave[0]) / 10.0, "[nm] Bandwidth")
    header["NELEM"] = (n, "Length of the data arrays")
    return header


def _big_endian(values: np.ndarray) -> np.ndarray:
    return values.astype(values.dtype.newbyteorder(">"), copy=False)


def draw_parameters(seed: int, index: int) -> StellarParameters:
    """Labels of star ``index``: each star has its own stream, so archive n is a prefix of archive 2n.

    A third are giants (cool, low logg); the rest are dwarfs whose logg rises as Teff falls, so the
    pairs stay close to a real HR diagram.
    """
    rng = np.random.default_rng([seed, index, 0])
    giant = rng.random() < 1.0 / 3.0
    if giant:
        teff = rng.uniform(3500.0, 5500.0)
        logg = np.clip(1.0 + 2.5 * (teff - 3500.0) / 2000.0 + rng.normal(0.0, 0.3), 1.0, 3.8)
    else:
        teff = rng.uniform(3500.0, 7000.0)
        logg = np.clip(4.45 + 0.4 * (SOLAR_TEFF - teff) / 2300.0 + rng.normal(0.0, 0.1), 3.8, 5.0)
    return StellarParameters(
        teff=round(float(teff), 1), logg=round(float(logg), 3),
        feh=round(float(rng.uniform(-1.5, 0.5)), 3), vsini=round(float(rng.uniform(0.0, 30.0)), 2),
        rv=round(float(rng.uniform(-100.0, 100.0)), 3),
        snr=round(float(np.exp(rng.uniform(np.log(20.0), np.log(300.0)))), 1),
    )


def draw_observation(seed: int, index: int, snr: float) -> ObservationMeta:
    """Where and when star ``index`` was observed; exposure time grows with the S/N asked for."""
    rng = np.random.default_rng([seed, index, 1])
    return ObservationMeta(
        object_name=f"SYNTH-{index:07d}",
        ra=round(float(rng.uniform(0.0, 360.0)), 6),
        dec=round(float(np.degrees(np.arcsin(rng.uniform(-1.0, 0.6)))), 6),
        mjd_obs=round(float(rng.uniform(53_000.0, 60_500.0)), 6),
        exptime=round(float(np.clip(900.0 * (snr / 100.0) ** 2, 30.0, 3600.0)), 1),
        berv=round(float(rng.uniform(-30.0, 30.0)), 4),
    )


def noise_seed(seed: int, index: int) -> int:
    """The noise seed of star ``index``, written to labels.csv so one spectrum can be remade alone."""
    return int(np.random.SeedSequence([seed, index, 2]).generate_state(1)[0])


def file_name(index: int) -> str:
    """Sortable, one per star."""
    return f"synth_{index:07d}.fits"


def _write_one(out_dir: Path, seed: int, index: int) -> int:
    params = draw_parameters(seed, index)
    arrays = synthesize(params, noise_seed(seed, index))
    write_sdp(out_dir / file_name(index), arrays, params, draw_observation(seed, index, params.snr))
    return index


def generate_archive(out_dir: str | Path, n: int, seed: int, workers: int = 1,
                     scheduler: str = "processes", progress: bool = True) -> Path:
    """Write ``n`` SDP files and ``labels.csv`` to ``out_dir``; returns the path of labels.csv.

    Files that already exist are skipped, so a large generation can be stopped and resumed; as
    every star has its own random streams, the resumed archive is the same as an uninterrupted one.
    ``scheduler`` is a dask local scheduler ("processes" or "threads"); one worker runs in-process.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = [i for i in range(n) if not (out_dir / file_name(i)).exists()]
    tasks = [dask.delayed(_write_one)(out_dir, seed, i) for i in todo]
    with progress_display(len(tasks), "synthetic spectra", "file", disable=not progress) as bar:
        with DaskProgress(bar):
            dask.compute(*tasks, scheduler="sync" if workers <= 1 else scheduler, num_workers=workers)
    return _write_labels(out_dir, n, seed)


def _write_labels(out_dir: Path, n: int, seed: int) -> Path:
    path = out_dir / "labels.csv"
    names = [f.name for f in fields(StellarParameters)]
    with replacing(path) as new, open(new.path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "object", *names, "berv", "noise_seed"])
        for i in range(n):
            params = draw_parameters(seed, i)
            meta = draw_observation(seed, i, params.snr)
            writer.writerow([file_name(i), meta.object_name, *asdict(params).values(), meta.berv,
                             noise_seed(seed, i)])
    return path
