"""The MILES parameter table and the wheel the demo fetches MILES from."""

from __future__ import annotations

import zipfile

import pytest
from conftest import MILES

from vo_ml.spectra import miles
from vo_ml.spectra.miles import MilesDescriber, fetch_miles, miles_files, miles_id, miles_labels


def test_parameter_table_parses_every_star_with_its_labels():
    ids = [miles_id(f) for f in miles_files(MILES)]
    stars = miles_labels(MILES / miles.PARAMETER_TABLE, ids)
    assert len(stars) == 985
    assert stars["0001"] == miles.MilesStar("0001", "HD224930", "G3 V", 5305.0, 4.49, -0.75)
    assert stars["0067"].name == "HD010700"
    assert stars["0838"].feh is None and stars["0838"].teff == 2748.0


def test_the_misprinted_id_goes_to_the_one_unclaimed_file():
    stars = miles_labels(MILES / miles.PARAMETER_TABLE, ["0221"])
    assert stars["0221"].name == "HD044691A"
    assert stars["0221"].teff == 7950.0


def test_describer_gives_catalogue_values_and_nothing_for_foreign_files():
    describe = MilesDescriber(MILES)
    row = describe(MILES / "MILES_res2.50_star_m0067V.fits", None)
    assert row == {"obs_id": "m0067", "target_name": "HD010700", "teff": 5264.0, "logg": 4.36,
                   "feh": -0.5}
    assert describe(MILES / "other.fits", None) == {}


def test_fetch_unpacks_the_miles_folder_of_a_wheel(tmp_path, monkeypatch):
    """A wheel laid out as sdss-mangadap's, built from the fixtures, unpacks to a complete cache."""
    files = miles_files(MILES)
    wheel = tmp_path / "sdss_mangadap-4.5.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.write(MILES / miles.PARAMETER_TABLE, miles.WHEEL_FOLDER + miles.PARAMETER_TABLE)
        for path in files:
            archive.write(path, miles.WHEEL_FOLDER + path.name)
        archive.writestr("mangadap/other/ignored.fits", b"not MILES")
    monkeypatch.setattr(miles, "_download_wheel", lambda into: wheel)
    monkeypatch.setattr(miles, "STARS", len(files))
    cache = fetch_miles(tmp_path / "cache")
    assert sorted(p.name for p in miles_files(cache)) == sorted(p.name for p in files)
    assert (cache / miles.PARAMETER_TABLE).read_bytes() == (MILES / miles.PARAMETER_TABLE).read_bytes()
    assert not (cache / "other").exists()
    assert fetch_miles(tmp_path / "cache") == cache


def test_download_failure_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(miles, "WHEEL_REQUIREMENT", "sdss-mangadap==0.0.0.does.not.exist")
    with pytest.raises(RuntimeError, match="--source"):
        fetch_miles(tmp_path / "cache")
