"""The archive's latent map as HiPS (IVOA HiPS 1.0): image surveys of the density of spectra and
of the mean of a label, and a catalogue of the spectra, for Aladin and other HiPS viewers.

The map is a plane, HiPS a sphere, so the map is laid on a patch of the sphere (:class:`MapPatch`):
scaled by one factor on both axes, so shapes keep their aspect ratio, until its extent fills
at most ``PATCH_WIDTH`` degrees of longitude or ``PATCH_HEIGHT`` of latitude, centred on
(0, 0). Longitude runs against ``ml_x``, so a viewer, which draws the sky east to the left, shows
the map as it is plotted. Latitudes stay within 60 degrees of the equator, where a degree of
longitude is at least half a degree on the sphere; every ``properties`` file states the scale
and the centre, so a position can be read back as ``ml_x``, ``ml_y``.

Image tiles are ``TILE_WIDTH`` (64) pixels wide, not the usual 512: a map has thousands to
hundreds of thousands of points, not gigapixels, and at order 3 a 64-pixel tile makes
pixels of about 0.9 degree, a 2-D histogram of some 200 by 130 bins over the patch; each
order deeper halves the pixel. Tiles are PNG (viridis, transparent where there is no value) and
FITS (the values themselves); ``Norder3/Allsky`` packs the 768 tiles of order 3, 27 to a row.
The catalogue lists each spectrum once: a tile takes at most ``CATALOGUE_ROWS_PER_TILE`` of
its cell's spectra, highest S/N first, and leaves the rest to the tiles of the next order, as
catalogue HiPS do (the spec's section 4.2.2), so a viewer shows the best spectra first.
"""

from __future__ import annotations

import math
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import Latitude, Longitude
from astropy.io import fits
from astropy.io.votable.exceptions import VOWarning
from astropy.io.votable.tree import Field, Resource, TableElement, VOTableFile

from vo_ml import __version__
from vo_ml.archive.backend import Backend
from vo_ml.archive.references import did_authority
from vo_ml.archive.tap_schema import Column
from vo_ml.files import replacing_folder
from vo_ml.progress import Progress, progress

__all__ = ["TILE_WIDTH", "MIN_ORDER", "MAX_ORDER", "CATALOGUE_ROWS_PER_TILE", "LatentMap",
           "MapPatch", "HipsSummary", "read_latent_map", "write_hips"]

TILE_WIDTH = 64
#: log2 of the tile width: a tile of order k holds the HEALPix pixels of order k + SHIFT.
SHIFT = TILE_WIDTH.bit_length() - 1
#: The shallowest image order: HiPS clients start at order 3, whose tiles Allsky packs.
MIN_ORDER = 3
#: Order 13 makes pixels of about 27 arcseconds, far finer than any map needs.
MAX_ORDER = 13
PATCH_WIDTH = 180.0
PATCH_HEIGHT = 120.0
ALLSKY_TILES_PER_ROW = 27
#: A catalogue tile's most rows; the spec calls a few hundred a good compromise.
CATALOGUE_ROWS_PER_TILE = 200
CATALOGUE_MIN_ORDER = 1
#: The deepest catalogue order: its tiles take every spectrum left, however many share a cell.
CATALOGUE_MAX_ORDER = 11
#: The surveys smooth the points over bins in which half of them have this many or more.
SPECTRA_PER_BIN = 10
#: The PNG colours of the density span this many decades below its highest value; the far
#: tails of the smoothing below them take the darkest colour.
DENSITY_DECADES = 3
#: Tiles interpolated together: 64 tiles of 4096 pixels keep the arrays to some 50 MB.
TILES_AT_ONCE = 64
#: The labels the catalogue lists where the table has them.
LABELS = ("teff", "logg", "feh")
_NUMERIC = ("short", "int", "long", "float", "double")
_SQUARE_DEGREES = 4 * math.pi * math.degrees(1) ** 2
_COLOURS = "viridis"


@dataclass(frozen=True)
class MapPatch:
    """Where the map lies on the sphere: ``scale`` degrees per map unit about ``centre``."""

    scale: float
    centre: tuple[float, float]

    @classmethod
    def fitting(cls, x: np.ndarray, y: np.ndarray) -> MapPatch:
        """The largest patch of at most PATCH_WIDTH by PATCH_HEIGHT degrees that holds the map."""
        span_x, span_y = np.ptp(x), np.ptp(y)
        scales = [limit / span for limit, span in ((PATCH_WIDTH, span_x), (PATCH_HEIGHT, span_y))
                  if span > 0]
        centre = ((x.min() + x.max()) / 2, (y.min() + y.max()) / 2)
        return cls(float(min(scales, default=1.0)), (float(centre[0]), float(centre[1])))

    def sphere(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(RA, Dec) in degrees of map positions; RA in [0, 360)."""
        ra = np.mod(-self.scale * (x - self.centre[0]), 360.0)
        return ra, self.scale * (y - self.centre[1])

    def describe(self) -> str:
        return (f"RA = -{self.scale:.6g} * (ml_x - {self.centre[0]:.6g}) (mod 360), "
                f"Dec = {self.scale:.6g} * (ml_y - {self.centre[1]:.6g}), in degrees")


@dataclass
class LatentMap:
    """The mapped rows of a table: the catalogue's columns (``obs_publisher_did``, ``ml_x``,
    ``ml_y`` among them) with their published metadata, and the label an image survey averages."""

    table: str
    model_id: str
    columns: dict[str, np.ndarray]
    fields: dict[str, Column]
    label: str | None = None

    @property
    def x(self) -> np.ndarray:
        return self.columns["ml_x"]

    @property
    def y(self) -> np.ndarray:
        return self.columns["ml_y"]

    @property
    def authority(self) -> str:
        """The IVOA authority of the table's publisher DIDs, which names the HiPS too."""
        dids = self.columns["obs_publisher_did"]
        return did_authority(str(dids[0]) if len(dids) else "ivo://vo-ml.example")


@dataclass
class HipsSummary:
    """What :func:`write_hips` wrote: the surveys' folders, the points, and the tiles by survey."""

    out: Path
    points: int
    tiles: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        tiles = ", ".join(f"{name} {count} tiles" for name, count in self.tiles.items())
        return f"wrote the HiPS of {self.points} mapped spectra in {self.out}: {tiles}"


def read_latent_map(backend: Backend, table_name: str, label: str | None = "teff") -> LatentMap:
    """The map position and catalogue columns of every mapped row of ``table_name``.

    ``label`` must be a numeric column of the table, for the survey of its mean; None for none.
    """
    table = backend.read_tap_schema().table(table_name)
    existing = set(backend.table_columns(table_name))
    if table is None or "ml_x" not in existing:
        raise ValueError(f"{table_name} has no map (ml_x, ml_y): run 'vo-ml embed' first")
    published = [c for c in table.columns if c.name in existing]
    if label is not None:
        _check_label(published, label, table_name)
    have = {c.name for c in published}
    names = [name for name in dict.fromkeys(("obs_publisher_did", "target_name", "ml_x", "ml_y",
                                             *LABELS, label, "snr")) if name in have]
    result = backend.execute(f"SELECT {', '.join(names)} FROM {table_name} "
                             "WHERE ml_x IS NOT NULL AND ml_y IS NOT NULL ORDER BY obs_publisher_did")
    columns = {name: _filled(column) for name, column in zip(names, result.columns, strict=True)}
    model = backend.current_model(table_name) or {}
    return LatentMap(table_name, model.get("model_id", "unknown"), columns,
                     {name: table.column(name) for name in names}, label)


def _check_label(columns: list[Column], label: str, table: str) -> None:
    numeric = [c.name for c in columns if c.datatype in _NUMERIC and not c.is_array
               and c.name not in ("ml_x", "ml_y")]
    if label not in numeric:
        raise ValueError(f"label {label!r} is not a numeric column of {table}: give one of "
                         f"{', '.join(numeric)}")


def _filled(column: np.ma.MaskedArray) -> np.ndarray:
    """Numbers with NaN for NULL; strings with '' for NULL."""
    if column.dtype.kind in "iuf":
        return np.ma.filled(column.astype(float), np.nan)
    return np.ma.filled(column, "")


def write_hips(latent: LatentMap, out: Path, order: int = MIN_ORDER) -> HipsSummary:
    """Write ``out``/density, ``out``/<label> and ``out``/catalogue, image tiles to ``order``.

    ``out`` is replaced whole: the new HiPS is built beside it and renamed into place, so a
    crash leaves the old one or the new one. Only a folder this function wrote (or an empty
    one) is replaced, never a folder of other files given by mistake.
    """
    if not MIN_ORDER <= order <= MAX_ORDER:
        raise ValueError(f"order {order}: give an order from {MIN_ORDER} to {MAX_ORDER}")
    out = Path(out)
    _check_replaceable(out)
    patch = MapPatch.fitting(latent.x, latent.y) if len(latent.x) else MapPatch(1.0, (0.0, 0.0))
    ra, dec = patch.sphere(latent.x, latent.y)
    surveys = [_density(ra, dec, order)]
    if latent.label:
        surveys.append(_label_mean(ra, dec, latent.columns[latent.label], latent.label,
                                   latent.fields[latent.label].unit or "", order))
    catalogue = _catalogue_tiles(ra, dec, latent.columns.get("snr"))
    summary = HipsSummary(out, len(ra))
    total = sum(s.tile_count for s in surveys) + sum(len(t) for t in catalogue.values())
    with replacing_folder(out) as scratch, progress(total, f"hips {out.name}", "tile") as bar:
        for survey in surveys:
            summary.tiles[survey.name] = _write_image_survey(scratch / survey.name, survey,
                                                             latent, patch, bar)
        summary.tiles["catalogue"] = _write_catalogue(scratch / "catalogue", catalogue, ra, dec,
                                                      latent, patch, bar)
        if out.exists():
            shutil.rmtree(out)
    return summary


def _check_replaceable(out: Path) -> None:
    if out.exists() and any(out.iterdir()) and not (out / "density" / "properties").is_file():
        raise ValueError(f"{out} exists and is not a HiPS folder vo-ml wrote: give a new folder "
                         "(the command replaces it whole)")


# -- image surveys -------------------------------------------------------------------------


@dataclass
class _ImageSurvey:
    """An image survey's pixel values, by order: the HEALPix cells (nested, at the order's pixel
    order) that have a value, and the values; with how they are coloured and described."""

    name: str
    title: str
    description: str
    unit: str
    pixels: dict[int, tuple[np.ndarray, np.ndarray]]
    colour: _Colouring

    @property
    def cut(self) -> tuple[float, float]:
        return self.colour.cut

    @property
    def tile_count(self) -> int:
        return sum(len(np.unique(cells >> 2 * SHIFT)) for cells, _ in self.pixels.values())

    @property
    def order(self) -> int:
        return max(self.pixels)


def _cells(ra: np.ndarray, dec: np.ndarray, depth: int) -> np.ndarray:
    """The nested HEALPix cell of each position at ``depth``."""
    if not len(ra):
        return np.zeros(0, dtype=np.int64)
    from cdshealpix.nested import lonlat_to_healpix

    cells = lonlat_to_healpix(Longitude(ra, u.deg), Latitude(dec, u.deg), depth)
    return np.asarray(cells, dtype=np.int64)


def _pixel_area(pixel_order: int) -> float:
    """The area of one HEALPix pixel of ``pixel_order``, in square degrees."""
    return _SQUARE_DEGREES / (12 * 4 ** pixel_order)


@dataclass
class _Bins:
    """Points counted (and a value summed) in the HEALPix cells of one order, the cells sorted."""

    order: int
    cells: np.ndarray
    counts: np.ndarray
    sums: np.ndarray

    @classmethod
    def of(cls, cells: np.ndarray, cell_order: int, order: int, values: np.ndarray) -> _Bins:
        """The bins of ``order`` of points whose cells of ``cell_order`` are ``cells``."""
        binned, inverse = np.unique(cells >> 2 * (cell_order - order), return_inverse=True)
        return cls(order, binned, np.bincount(inverse, minlength=len(binned)).astype(float),
                   np.bincount(inverse, weights=values, minlength=len(binned)))

    def coarser(self, order: int) -> _Bins:
        """The same points in the bins of a shallower ``order``."""
        binned, inverse = np.unique(self.cells >> 2 * (self.order - order), return_inverse=True)
        return _Bins(order, binned, np.bincount(inverse, weights=self.counts),
                     np.bincount(inverse, weights=self.sums))

    def at(self, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The counts and sums of ``cells`` (zero where no point fell); there are bins."""
        where = np.clip(np.searchsorted(self.cells, cells), 0, len(self.cells) - 1)
        hit = self.cells[where] == cells
        return np.where(hit, self.counts[where], 0.0), np.where(hit, self.sums[where], 0.0)


def _smoothing_order(cells: np.ndarray, cell_order: int) -> int:
    """The deepest order at which half the points, or more, share their bin with
    SPECTRA_PER_BIN - 1 others or more: the scale the surveys smooth the points over, finer
    where there are more of them."""
    for order in range(cell_order, 0, -1):
        _, inverse, counts = np.unique(cells >> 2 * (cell_order - order), return_inverse=True,
                                       return_counts=True)
        if len(cells) and np.median(counts[inverse]) >= SPECTRA_PER_BIN:
            return order
    return 0


def _smoothed(bins: _Bins, order: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The counts and sums of ``bins`` at the pixels of tiles of ``order``, interpolated
    bilinearly between bin centres (as a viewer would draw them) where the pixels are finer than
    the bins, else summed: (pixel cells, counts, sums), for the pixels some point reaches."""
    from cdshealpix.nested import bilinear_interpolation, healpix_to_lonlat

    depth = order + SHIFT
    if depth <= bins.order:
        merged = bins.coarser(depth)
        return merged.cells, merged.counts, merged.sums
    found = [], [], []
    reached = _reached_tiles(bins, order)
    for tiles in np.array_split(reached, max(1, len(reached) // TILES_AT_ONCE)):
        cells = ((tiles[:, None] << 2 * SHIFT) + np.arange(TILE_WIDTH ** 2)).ravel()
        if not len(cells):
            continue
        lon, lat = healpix_to_lonlat(cells.astype(np.uint64), depth)
        neighbours, weights = bilinear_interpolation(lon, lat, bins.order)
        neighbours = np.ma.filled(np.ma.asarray(neighbours).astype(np.int64), -1)
        weights = np.ma.filled(np.ma.asarray(weights, dtype=float), 0.0)
        # Where a neighbour is missing (next to the corners of HEALPix's base cells), the
        # others share its weight, or the field would dip along those lines.
        weights /= np.maximum(weights.sum(axis=1, keepdims=True), 1e-300)
        counts, sums = (np.sum(weights * part, axis=1) for part in bins.at(neighbours))
        some = counts > 0
        for store, part in zip(found, (cells, counts, sums), strict=True):
            store.append(part[some])
    return tuple(np.concatenate(parts) if parts else np.zeros(0) for parts in found)


def _reached_tiles(bins: _Bins, order: int) -> np.ndarray:
    """The tiles of ``order`` that interpolation between the bins can reach: those overlapping
    a bin that holds points or one next to it."""
    from cdshealpix.nested import neighbours

    if not len(bins.cells):
        return np.zeros(0, dtype=np.int64)
    around = np.ma.filled(np.ma.asarray(neighbours(bins.cells.astype(np.uint64), bins.order))
                          .astype(np.int64), -1).ravel()
    near = np.unique(around[around >= 0])
    if order >= bins.order:
        return ((near[:, None] << 2 * (order - bins.order))
                + np.arange(4 ** (order - bins.order))).ravel()
    return np.unique(near >> 2 * (bins.order - order))


def _density(ra: np.ndarray, dec: np.ndarray, order: int) -> _ImageSurvey:
    """Spectra per square degree of the map's patch: the points binned at the smoothing order,
    interpolated between the bins, and scaled so that each order's values, times the pixel area,
    sum to the number of spectra."""
    deepest = order + SHIFT
    cells = _cells(ra, dec, deepest)
    bins = _Bins.of(cells, deepest, _smoothing_order(cells, deepest), np.zeros(len(cells)))
    pixels = {}
    for k in range(MIN_ORDER, order + 1):
        found, counts, _ = _smoothed(bins, k)
        area = _pixel_area(k + SHIFT)
        pixels[k] = found, counts * (len(ra) / max(counts.sum(), 1e-300)) / area
    values = np.concatenate([v for _, v in pixels.values()])
    high = float(values.max()) if len(values) else 1.0
    cut = (high / 10 ** DENSITY_DECADES, high)
    colour = _Colouring(np.geomspace(*cut, 256), np.linspace(0, 1, 256))
    return _ImageSurvey(
        "density", "density of spectra", f"Spectra per square degree of the map's patch, "
        f"smoothed over HEALPix bins of order {bins.order} (about {_bin_size(bins.order):.2g} "
        "degrees; half the spectra share their bin with "
        f"{SPECTRA_PER_BIN - 1} others or more), scaled so that each order sums to the number of "
        "spectra; FITS tiles hold the values, PNG tiles colour them on a logarithmic scale "
        f"over the {DENSITY_DECADES} decades below the highest.",
        "deg-2", pixels, colour)


def _label_mean(ra: np.ndarray, dec: np.ndarray, values: np.ndarray, label: str, unit: str,
                order: int) -> _ImageSurvey:
    """The mean ``label`` of the spectra near each pixel: the sums and counts of the label's
    bins, interpolated alike, divided; blank where no spectrum with a value reaches."""
    known = np.isfinite(values)
    deepest = order + SHIFT
    cells = _cells(ra[known], dec[known], deepest)
    bins = _Bins.of(cells, deepest, _smoothing_order(cells, deepest), values[known])
    pixels = {}
    for k in range(MIN_ORDER, order + 1):
        found, counts, sums = _smoothed(bins, k)
        pixels[k] = found, sums / counts
    colour = _Colouring.by_percentile(values[known])
    low, high = colour.cut
    return _ImageSurvey(
        label, f"mean {label}", f"The mean {label} of the spectra, smoothed over HEALPix bins "
        f"of order {bins.order} (about {_bin_size(bins.order):.2g} degrees), blank where none "
        f"with a value reaches; the PNG tiles colour it by percentile of the spectra's values, "
        f"from {low:.4g} (1st) to {high:.4g} (99th).", unit, pixels, colour)


def _bin_size(order: int) -> float:
    return math.sqrt(_pixel_area(order))


def _write_image_survey(folder: Path, survey: _ImageSurvey, latent: LatentMap, patch: MapPatch,
                        bar: Progress) -> int:
    """Write one image survey's tiles, Allsky and properties; return the number of tiles."""
    written = 0
    colour = survey.colour
    for k, (cells, values) in survey.pixels.items():
        tiles = dict(_tiles(cells, values))
        if k == MIN_ORDER:
            _write_allsky(folder / f"Norder{k}", tiles, colour)
        for npix, tile in tiles.items():
            path = _tile_path(folder, k, npix)
            path.parent.mkdir(parents=True, exist_ok=True)
            colour.save_png(path.with_suffix(".png"), tile)
            _save_fits(path.with_suffix(".fits"), tile, survey.unit)
            bar.update(1)
        written += len(tiles)
    folder.mkdir(parents=True, exist_ok=True)
    _write_properties(folder / "properties", _image_properties(survey, latent, patch, written))
    return written


def _tiles(cells: np.ndarray, values: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """Each tile that has a value, as its HEALPix index and pixel array, in the PNG orientation
    (first row on top): pixel (row, column) is the cell whose nested index within the tile
    interleaves the row's bits (even bits) with the column's (odd bits). This is the layout of
    HiPS tiles that Aladin writes, which puts the cell's south corner top left and its north
    corner bottom right."""
    tile_of = cells >> 2 * SHIFT
    within = cells & (TILE_WIDTH ** 2 - 1)
    rows, columns = _deinterleave(within), _deinterleave(within >> 1)
    order = np.argsort(tile_of, kind="stable")
    starts = np.flatnonzero(np.diff(tile_of[order], prepend=-1))
    for group in np.split(order, starts[1:]):
        tile = np.full((TILE_WIDTH, TILE_WIDTH), np.nan, dtype=np.float32)
        tile[rows[group], columns[group]] = values[group]
        yield int(tile_of[group[0]]), tile


def _deinterleave(bits: np.ndarray) -> np.ndarray:
    """The even bits of ``bits`` packed together (bit 2i becomes bit i)."""
    packed = np.zeros_like(bits)
    for i in range(SHIFT):
        packed |= ((bits >> 2 * i) & 1) << i
    return packed


def _tile_path(folder: Path, order: int, npix: int, suffix: str = "") -> Path:
    """NorderK/DirD/NpixN, D being N rounded down to ten thousand (the spec's section 4.1)."""
    return folder / f"Norder{order}" / f"Dir{npix // 10000 * 10000}" / f"Npix{npix}{suffix}"


class _Colouring:
    """Values to viridis RGBA, transparent where there is none: each of the increasing
    ``levels`` takes the colour at its ``fraction`` of the map, values between them in between."""

    def __init__(self, levels: np.ndarray, fractions: np.ndarray) -> None:
        from matplotlib import colormaps

        self._levels, self._fractions = levels, fractions
        self._map = colormaps[_COLOURS]

    @classmethod
    def by_percentile(cls, values: np.ndarray) -> _Colouring:
        """Colours spread evenly over the values' 1st to 99th percentiles, so that a skewed label
        (most stars cool, a few very hot) still shows its differences."""
        if not len(values):
            return cls(np.array([0.0, 1.0]), np.array([0.0, 1.0]))
        percents = np.linspace(1, 99, 99)
        levels, first = np.unique(np.percentile(values, percents), return_index=True)
        return cls(levels, (percents[first] - 1) / 98)

    @property
    def cut(self) -> tuple[float, float]:
        return float(self._levels[0]), float(self._levels[-1])

    def rgba(self, values: np.ndarray) -> np.ndarray:
        known = np.isfinite(values)
        scaled = np.interp(np.where(known, values, self._levels[0]), self._levels, self._fractions)
        rgba = self._map(scaled, bytes=True)
        rgba[~known, 3] = 0
        return rgba

    def save_png(self, path: Path, values: np.ndarray) -> None:
        from matplotlib.image import imsave

        imsave(path, self.rgba(values))


def _save_fits(path: Path, tile: np.ndarray, unit: str) -> None:
    """The tile as FITS: the same picture, its rows stored bottom up as FITS has them."""
    hdu = fits.PrimaryHDU(np.flipud(tile))
    if unit:
        hdu.header["BUNIT"] = unit
    hdu.writeto(path)


def _write_allsky(folder: Path, tiles: dict[int, np.ndarray], colour: _Colouring) -> None:
    """Norder3/Allsky.png: the 768 tiles of order 3 left to right, 27 to a row, top row first
    (29 rows, the last one part full); tiles without values are blank. Tiles are TILE_WIDTH
    (64) wide, the size Allsky tiles have, so they go in as they are. No Allsky.fits: clients
    start with the first format listed, PNG, and a float Allsky would weigh 13 MB, nearly all
    blank."""
    count = 12 * 4 ** MIN_ORDER
    rows = -(-count // ALLSKY_TILES_PER_ROW)
    allsky = np.full((rows * TILE_WIDTH, ALLSKY_TILES_PER_ROW * TILE_WIDTH), np.nan, np.float32)
    for npix, tile in tiles.items():
        row, column = divmod(npix, ALLSKY_TILES_PER_ROW)
        allsky[row * TILE_WIDTH:(row + 1) * TILE_WIDTH,
               column * TILE_WIDTH:(column + 1) * TILE_WIDTH] = tile
    folder.mkdir(parents=True, exist_ok=True)
    colour.save_png(folder / "Allsky.png", allsky)


# -- the catalogue ---------------------------------------------------------------------------


def _catalogue_tiles(ra: np.ndarray, dec: np.ndarray, snr: np.ndarray | None
                     ) -> dict[int, dict[int, np.ndarray]]:
    """The rows of each catalogue tile, by order and cell: every tile takes the best
    CATALOGUE_ROWS_PER_TILE of its cell's rows not listed at a shallower order (highest S/N
    first, rows without one last), the deepest order all that are left."""
    deepest = _cells(ra, dec, CATALOGUE_MAX_ORDER)
    quality = np.nan_to_num(snr, nan=-np.inf) if snr is not None else np.zeros(len(ra))
    left = np.argsort(-quality, kind="stable")
    orders: dict[int, dict[int, np.ndarray]] = {}
    for k in range(CATALOGUE_MIN_ORDER, CATALOGUE_MAX_ORDER + 1):
        if not len(left):
            break
        cells = deepest[left] >> 2 * (CATALOGUE_MAX_ORDER - k)
        order = np.argsort(cells, kind="stable")
        starts = np.flatnonzero(np.diff(cells[order], prepend=-1))
        rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.append(starts, len(order))))
        taken = rank < CATALOGUE_ROWS_PER_TILE if k < CATALOGUE_MAX_ORDER else rank >= 0
        orders[k] = {int(cells[g[0]]): left[g] for g in _groups(order[taken], cells)}
        staying = np.ones(len(left), dtype=bool)
        staying[order[taken]] = False
        left = left[staying]
    return orders


def _groups(members: np.ndarray, keys: np.ndarray) -> list[np.ndarray]:
    """``members`` (sorted by key) split where their key changes."""
    breaks = np.flatnonzero(np.diff(keys[members])) + 1
    return [g for g in np.split(members, breaks) if len(g)]


def _write_catalogue(folder: Path, tiles: dict[int, dict[int, np.ndarray]], ra: np.ndarray,
                     dec: np.ndarray, latent: LatentMap, patch: MapPatch, bar: Progress) -> int:
    """The catalogue's TSV tiles, an Allsky.tsv for orders 1 and 2 (what clients read there),
    metadata.xml and properties; return the number of tiles."""
    names = ["ra", "dec", *latent.columns]
    values = {"ra": ra, "dec": dec, **latent.columns}
    header = "\t".join(names) + "\n"
    total_by_order = {k: _cell_counts(ra, dec, k) for k in tiles}
    for k, cells in tiles.items():
        allsky = []
        for npix, rows in cells.items():
            lines = [_tsv_line(values, names, row) for row in rows]
            total = total_by_order[k][npix]
            path = _tile_path(folder, k, npix, ".tsv")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"# Completeness = {total - len(rows)} / {total}\n{header}"
                            + "".join(lines), encoding="utf-8")
            allsky.extend(lines)
            bar.update(1)
        if k < MIN_ORDER:
            (folder / f"Norder{k}" / "Allsky.tsv").write_text(header + "".join(allsky),
                                                              encoding="utf-8")
    folder.mkdir(parents=True, exist_ok=True)
    _write_metadata(folder, names, latent)
    count = sum(len(cells) for cells in tiles.values())
    _write_properties(folder / "properties", _catalogue_properties(
        latent, patch, max(tiles, default=CATALOGUE_MIN_ORDER), count))
    return count


def _cell_counts(ra: np.ndarray, dec: np.ndarray, order: int) -> dict[int, int]:
    cells, counts = np.unique(_cells(ra, dec, order), return_counts=True)
    return dict(zip(cells.tolist(), counts.tolist(), strict=True))


def _tsv_line(values: dict[str, np.ndarray], names: list[str], row: int) -> str:
    return "\t".join(_tsv_value(values[name][row]) for name in names) + "\n"


def _tsv_value(value: object) -> str:
    """A TSV field: numbers to 10 significant digits, empty for NULL, no tabs or line ends."""
    if isinstance(value, float | np.floating):
        return "" if not np.isfinite(value) else f"{value:.10g}"
    return " ".join(str(value).split())


def _write_metadata(folder: Path, names: list[str], latent: LatentMap) -> None:
    """The columns as a VOTable with no rows: names, types, units, UCDs and descriptions from
    TAP_SCHEMA, and the two positions marked as the sources' coordinates. The spec names it
    metadata.xml; Aladin has long read Metadata.xml, so both are written."""
    votable = VOTableFile()
    resource = Resource()
    votable.resources.append(resource)
    table = TableElement(votable, name=latent.table.replace(".", "_"))
    resource.tables.append(table)
    with warnings.catch_warnings():  # units astropy cannot parse, e.g. log(cm.s**-2), stay as given
        warnings.simplefilter("ignore", VOWarning)
        for name in names:
            table.fields.append(_field(votable, name, latent))
    table.create_arrays(0)
    for file_name in ("metadata.xml", "Metadata.xml"):
        votable.to_xml(str(folder / file_name))


def _field(votable: VOTableFile, name: str, latent: LatentMap) -> Field:
    """The FIELD of one catalogue column; ra and dec say they are map positions."""
    if name in ("ra", "dec"):
        ucd, source = {"ra": ("pos.eq.ra;meta.main", "ml_x"),
                       "dec": ("pos.eq.dec;meta.main", "ml_y")}[name]
        described = Field(votable, name=name, datatype="double", unit="deg", ucd=ucd)
        described.description = (f"{source} on the HiPS sphere, not a position on the sky "
                             "(properties: ml_map_scale, ml_map_centre)")
        return described
    column = latent.fields[name]
    text = column.datatype in ("char", "unicodeChar")
    described = Field(votable, name=name, datatype=column.datatype, arraysize="*" if text else None,
                  unit=column.unit, ucd=column.ucd)
    described.description = column.description
    return described


# -- properties ------------------------------------------------------------------------------


def _common_properties(latent: LatentMap, patch: MapPatch, name: str, title: str) -> dict:
    """The keywords every survey of the map has (HiPS 1.0, section 4.4.1), and the map's
    placement (ml_map_*, keywords of vo_ml's own, which the spec allows)."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%MZ")
    return {
        "creator_did": f"ivo://{latent.authority}/{latent.table}/ml_map/{name}",
        "obs_collection": latent.table,
        "obs_title": f"{latent.table} latent map: {title}",
        "prov_progenitor": f"{latent.table}, map of model {latent.model_id}",
        "hips_version": "1.4",
        "hips_builder": f"vo_ml {__version__}",
        "hips_creation_date": now,
        "hips_release_date": now,
        "hips_status": "public master clonableOnce",
        "hips_frame": "equatorial",
        "hips_initial_ra": "0",
        "hips_initial_dec": "0",
        "hips_initial_fov": f"{PATCH_WIDTH + 20:g}",
        "ml_map_scale": f"{patch.scale:.10g}",
        "ml_map_centre": f"{patch.centre[0]:.10g} {patch.centre[1]:.10g}",
    }


def _placement(latent: LatentMap, patch: MapPatch) -> str:
    return (f"Not a sky survey: each spectrum of {latent.table} sits where model "
            f"{latent.model_id} maps it, {patch.describe()}.")


def _image_properties(survey: _ImageSurvey, latent: LatentMap, patch: MapPatch,
                      tiles: int) -> dict:
    sky_fraction = len(np.unique(survey.pixels[survey.order][0] >> 2 * SHIFT)) / (
        12 * 4 ** survey.order)
    return _common_properties(latent, patch, survey.name, survey.title) | {
        "obs_description": f"{_placement(latent, patch)} {survey.description}",
        "dataproduct_type": "image",
        "hips_order": str(survey.order),
        "hips_order_min": str(MIN_ORDER),
        "hips_tile_width": str(TILE_WIDTH),
        "hips_tile_format": "png fits",
        "hips_pixel_bitpix": "-32",
        "hips_pixel_cut": f"{survey.cut[0]:.6g} {survey.cut[1]:.6g}",
        "hips_data_range": f"{survey.cut[0]:.6g} {survey.cut[1]:.6g}",
        "hips_pixel_scale": f"{math.sqrt(_pixel_area(survey.order + SHIFT)):.6g}",
        "hips_sampling": "none",
        "hips_nb_tiles": str(tiles),
        "moc_sky_fraction": f"{sky_fraction:.6g}",
        **({"hips_bunit": survey.unit} if survey.unit else {}),
    }


def _catalogue_properties(latent: LatentMap, patch: MapPatch, order: int, tiles: int) -> dict:
    return _common_properties(latent, patch, "catalogue", "spectra") | {
        "obs_description": f"{_placement(latent, patch)} The columns ra and dec hold that "
                           f"position; a tile lists at most {CATALOGUE_ROWS_PER_TILE} spectra, "
                           "highest S/N first, and leaves the rest to deeper orders.",
        "dataproduct_type": "catalog",
        "hips_order": str(order),
        "hips_order_min": str(CATALOGUE_MIN_ORDER),
        "hips_tile_format": "tsv",
        "hips_cat_nrows": str(len(latent.x)),
        "hips_nb_tiles": str(tiles),
    }


def _write_properties(path: Path, properties: dict) -> None:
    width = max(map(len, properties))
    path.write_text("".join(f"{key:<{width}} = {value}\n" for key, value in properties.items()),
                    encoding="utf-8")
