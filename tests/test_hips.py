"""`vo-ml hips`: the latent map as HiPS 1.0 image and catalogue surveys, written from the real
test archive and read back as files."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from astropy.io import fits
from astropy.io.votable import parse_single_table
from conftest import TABLE
from matplotlib.image import imread

from vo_ml.archive import hips as hips_module
from vo_ml.archive.backends import open_backend
from vo_ml.archive.hips import SHIFT, TILE_WIDTH, MapPatch
from vo_ml.cli import main
from vo_ml.pipeline import hips

ORDER = 4
REQUIRED = ("creator_did", "obs_title", "dataproduct_type", "hips_version", "hips_release_date",
            "hips_status", "hips_tile_format", "hips_order", "hips_frame")
TILE = re.compile(r"Norder(\d+)/Dir(\d+)/Npix(\d+)\.(png|fits|tsv)")


@pytest.fixture(scope="module")
def written(archive, tmp_path_factory):
    out = tmp_path_factory.mktemp("hips") / "map"
    hips(archive["db"], TABLE, out, order=ORDER, label="teff")
    return out


@pytest.fixture(scope="module")
def mapped(archive) -> list[str]:
    with open_backend(archive["db"], read_only=True) as backend:
        return [r[0] for r in backend.lookup(
            f"SELECT obs_publisher_did FROM {TABLE} WHERE ml_x IS NOT NULL", [])]


def properties(folder) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in (folder / "properties").read_text().splitlines()
             if line.strip() and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def tiles(folder, suffix: str) -> dict[int, list]:
    found: dict[int, list] = {}
    for path in folder.glob(f"Norder*/Dir*/Npix*{suffix}"):
        found.setdefault(int(TILE.search(path.as_posix()).group(1)), []).append(path)
    return found


def test_every_survey_has_the_required_properties_well_formed(written):
    assert sorted(p.name for p in written.iterdir()) == ["catalogue", "density", "teff"]
    for folder in written.iterdir():
        found = properties(folder)
        assert set(REQUIRED) <= found.keys(), folder.name
        assert found["creator_did"].startswith("ivo://")
        assert found["hips_version"] == "1.4"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\dZ", found["hips_release_date"])
        assert set(found["hips_status"].split()) <= {"public", "private", "master", "mirror",
                                                     "partial", "clonable", "unclonable",
                                                     "clonableOnce"}
        assert found["hips_frame"] == "equatorial"
        assert "ml_x" in found["obs_description"] and found["ml_map_scale"]
        assert int(found["hips_order"]) >= int(found["hips_order_min"])
    for name in ("density", "teff"):
        image = properties(written / name)
        assert (image["dataproduct_type"], image["hips_tile_format"]) == ("image", "png fits")
        assert (image["hips_order"], image["hips_order_min"]) == (str(ORDER), "3")
        assert image["hips_tile_width"] == str(TILE_WIDTH)
        low, high = map(float, image["hips_pixel_cut"].split())
        assert low < high
    catalogue = properties(written / "catalogue")
    assert (catalogue["dataproduct_type"], catalogue["hips_tile_format"]) == ("catalog", "tsv")


def test_tiles_follow_norder_dir_npix_for_every_image_order(written):
    for folder in written.iterdir():
        for path in folder.rglob("*"):
            relative = path.relative_to(folder).as_posix()
            if path.is_file() and relative.startswith("Norder") and "Allsky" not in relative:
                order, directory, npix, _ = TILE.fullmatch(relative).groups()
                assert int(directory) == int(npix) // 10000 * 10000
                assert int(npix) < 12 * 4 ** int(order)
    for name in ("density", "teff"):
        assert sorted(tiles(written / name, ".png")) == list(range(3, ORDER + 1))


def test_allsky_packs_the_768_tiles_27_to_a_row(written):
    for name in ("density", "teff"):
        allsky = imread(written / name / "Norder3" / "Allsky.png")
        assert allsky.shape == (29 * 64, 27 * 64, 4)
        for path in tiles(written / name, ".png")[3]:
            row, column = divmod(int(path.stem.removeprefix("Npix")), 27)
            packed = allsky[row * 64:(row + 1) * 64, column * 64:(column + 1) * 64]
            assert np.array_equal(packed, imread(path))


def test_tiles_are_pngs_of_the_tile_width_opaque_where_the_fits_tile_has_a_value(written):
    for path in [p for paths in tiles(written / "teff", ".png").values() for p in paths]:
        image = imread(path)
        assert image.shape == (TILE_WIDTH, TILE_WIDTH, 4)
        values = np.flipud(fits.getdata(path.with_suffix(".fits")))  # FITS rows run bottom up
        assert np.array_equal(image[..., 3] > 0, np.isfinite(values))
    assert (imread(written / "teff" / "Norder3" / "Allsky.png")[..., 3] == 0).any()


def test_each_order_of_density_sums_to_the_mapped_rows(written, mapped):
    for order, paths in tiles(written / "density", ".fits").items():
        area = 4 * math.pi * math.degrees(1) ** 2 / (12 * 4 ** (order + SHIFT))
        total = sum(np.nansum(fits.getdata(p)) for p in paths) * area
        assert total == pytest.approx(len(mapped), rel=1e-4), order


def test_the_mean_label_stays_within_the_labels(written, archive):
    with open_backend(archive["db"], read_only=True) as backend:
        low, high = backend.lookup(f"SELECT min(teff), max(teff) FROM {TABLE} "
                                   "WHERE ml_x IS NOT NULL", [])[0]
    values = np.concatenate([fits.getdata(p).ravel() for p in tiles(written / "teff", ".fits")[3]])
    assert low - 1e-3 <= np.nanmin(values) <= np.nanmax(values) <= high + 1e-3


def test_the_catalogue_lists_each_mapped_spectrum_once(written, mapped):
    listed = catalogue_dids(written / "catalogue")
    assert sorted(listed) == sorted(mapped)
    fields = [f.name for f in parse_single_table(written / "catalogue" / "metadata.xml").fields]
    assert fields[:6] == ["ra", "dec", "obs_publisher_did", "target_name", "ml_x", "ml_y"]
    assert {"teff", "logg", "feh"} <= set(fields)
    assert properties(written / "catalogue")["hips_cat_nrows"] == str(len(mapped))


def catalogue_dids(folder) -> list[str]:
    dids = []
    for paths in tiles(folder, ".tsv").values():
        for path in paths:
            lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
            column = lines[0].split("\t").index("obs_publisher_did")
            dids += [line.split("\t")[column] for line in lines[1:]]
    return dids


def test_a_small_tile_capacity_spreads_the_catalogue_over_orders(archive, mapped, tmp_path,
                                                                 monkeypatch):
    monkeypatch.setattr(hips_module, "CATALOGUE_ROWS_PER_TILE", 2)
    hips(archive["db"], TABLE, tmp_path / "map", label=None)
    folder = tmp_path / "map" / "catalogue"
    assert len(tiles(folder, ".tsv")) > 2
    assert sorted(catalogue_dids(folder)) == sorted(mapped)
    assert sorted(p.name for p in (tmp_path / "map").iterdir()) == ["catalogue", "density"]
    allsky = (folder / "Norder1" / "Allsky.tsv").read_text().splitlines()
    assert len(allsky) - 1 == sum(len(p.read_text().splitlines()) - 2
                                  for p in tiles(folder, ".tsv")[1])


def test_tile_pixels_run_from_the_south_corner_top_left_to_the_north_bottom_right():
    """The HiPS layout: a PNG tile's row and column interleave into the cell's nested index."""
    from cdshealpix.nested import healpix_to_lonlat

    npix = 300  # an order-3 tile in the equatorial band
    within = np.arange(TILE_WIDTH ** 2)
    cells = (npix << 2 * SHIFT) + within
    _, lat = healpix_to_lonlat(cells.astype(np.uint64), 3 + SHIFT)
    [(found, tile)] = list(hips_module._tiles(cells, lat.deg.astype(np.float32)))
    assert found == npix
    assert tile[0, 0] == tile.min() and tile[-1, -1] == tile.max()


def test_the_patch_keeps_the_maps_aspect_within_180_by_120_degrees():
    x, y = np.array([-2.0, 2.0, 0.0]), np.array([0.0, 1.0, 3.0])
    patch = MapPatch.fitting(x, y)
    ra, dec = patch.sphere(x, y)
    lon = np.where(ra > 180, ra - 360, ra)
    assert (np.ptp(lon), np.ptp(dec)) == pytest.approx((160, 120))  # 4 by 3 units, 40 deg each
    assert lon[0] > lon[1]  # ml_x grows westwards, to the right in a sky viewer


def test_a_label_that_is_no_numeric_column_fails_naming_it(archive, tmp_path, capsys):
    for label in ("target_name", "no_such_column", "embedding"):
        code = main(["hips", "--db", str(archive["db"]), "--out", str(tmp_path / "out"),
                     "--label", label])
        error = capsys.readouterr().err
        assert code == 2 and f"label '{label}'" in error and "teff" in error
    assert not (tmp_path / "out").exists()


def test_running_again_replaces_the_hips_whole(archive, tmp_path, capsys):
    out = tmp_path / "map"
    assert main(["hips", "--db", str(archive["db"]), "--out", str(out), "--label", "teff"]) == 0
    assert main(["hips", "--db", str(archive["db"]), "--out", str(out), "--label", "logg"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["catalogue", "density", "logg"]
    assert [p.name for p in tmp_path.iterdir()] == ["map"]
    assert "wrote the HiPS" in capsys.readouterr().out


def test_a_folder_of_other_files_is_never_replaced(archive, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("keep me")
    assert main(["hips", "--db", str(archive["db"]), "--out", str(tmp_path)]) == 2
    assert "not a HiPS folder" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "keep me"
