"""``POST /explore/<table>/place``: a spectrum file placed on the latent map among its nearest
archive spectra, with the trust measures of ml_encode, through the session archive's service."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from astropy.io.votable import parse
from conftest import DATA, MILES, TABLE, TAU_CETI

PLACE = f"/explore/{TABLE}/place"
HELD_OUT = DATA / "miles_held_out"


def _place(client, path: Path, url: str = PLACE):
    return client.post(url, data={"SPECTRUM": (io.BytesIO(path.read_bytes()), path.name)},
                       content_type="multipart/form-data")


def _rows(client, query: str):
    response = client.post("/tap/sync", data={"LANG": "ADQL", "QUERY": query, "MAXREC": "10000"})
    assert response.status_code == 200, response.text
    return parse(io.BytesIO(response.data)).get_first_table().to_table()


def test_an_archive_spectrum_lands_on_its_own_place_next_to_itself(client):
    response = _place(client, MILES / "MILES_res2.50_star_m0067V.fits")
    assert response.status_code == 200, response.text
    placed = response.json
    own = _rows(client, f"SELECT ml_x, ml_y FROM {TABLE} WHERE obs_publisher_did = '{TAU_CETI}'")
    assert placed["ml_x"] == pytest.approx(float(own["ml_x"][0]), abs=1e-4)
    assert placed["ml_y"] == pytest.approx(float(own["ml_y"][0]), abs=1e-4)
    neighbours = placed["neighbours"]
    assert len(neighbours) == 10
    assert neighbours[0]["obs_publisher_did"] == TAU_CETI
    assert neighbours[0]["distance"] == pytest.approx(0, abs=1e-3)
    assert neighbours[0]["target_name"] == "HD010700"
    distances = [n["distance"] for n in neighbours]
    assert distances == sorted(distances) and distances[1] > 0
    assert 0.95 < placed["coverage"] <= 1 and placed["encode_error"] > 0
    assert 0 <= placed["typicality"] <= 100 and placed["warnings"] == []


@pytest.mark.parametrize(("star", "teff"), [("m0416", 5401), ("m0807", 4634)])
def test_a_held_out_star_lands_among_stars_of_its_temperature(client, star, teff):
    response = _place(client, HELD_OUT / f"MILES_res2.50_star_{star}V.fits")
    assert response.status_code == 200, response.text
    placed = response.json
    dids = ", ".join(f"'{n['obs_publisher_did']}'" for n in placed["neighbours"])
    teffs = _rows(client, f"SELECT teff FROM {TABLE} WHERE obs_publisher_did IN ({dids})")["teff"]
    known = np.ma.filled(teffs.astype(float), np.nan)  # a few stars have no catalogue Teff
    assert len(known) == 10 and np.isfinite(known).sum() >= 7
    assert np.nanmedian(np.abs(known - teff)) < 800
    assert placed["coverage"] > 0.95 and placed["typicality"] > 1
    assert all(np.isfinite([placed["ml_x"], placed["ml_y"]]))


@pytest.mark.parametrize(("url", "data", "status", "named"), [
    (PLACE, {}, 400, "SPECTRUM"),
    (PLACE, {"SPECTRUM": (io.BytesIO(b"not a spectrum"), "mine.fits")}, 400, "mine.fits"),
    ("/explore/miles.nothing/place", None, 404, "miles.nothing"),
    ("/explore/ivoa.ObsCore/place", None, 404, "no embeddings"),
])
def test_bad_requests_are_dali_errors_naming_the_problem(client, url, data, status, named):
    response = (_place(client, MILES / "MILES_res2.50_star_m0067V.fits", url) if data is None
                else client.post(url, data=data, content_type="multipart/form-data"))
    assert response.status_code == status
    assert 'name="QUERY_STATUS" value="ERROR"' in response.text and named in response.text
