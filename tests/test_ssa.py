"""SSA 1.1 with pyvo as the client over HTTP, through the routes, and fetch_ssa filling a cache.

MILES spectra have no coordinates or dates, so POS and TIME are tested on a small HARPS archive
of our own: the committed s1d file plus copies with other targets, positions and dates. One copy
is deleted after ingest, to see how the service and the fetcher treat a file that has gone.
"""

from __future__ import annotations

import io
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.io.votable import parse
from astropy.time import Time
from conftest import HARPS_CUT, MILES, serving, vo_ml
from pyvo.dal import DALAccessError, DALOverflowWarning, DALQueryError, SSAService

from vo_ml.spectra.readers import read_spectrum
from vo_ml.spectra.record import file_checksum
from vo_ml.spectra.ssa import fetch_ssa

HARPS_POS = SkyCoord(219.875072, -60.8301, unit="deg")
#: The HARPS copies: file stem, target, (RA, Dec) and days added to the MJD of the original.
HARPS_COPIES = {"copy": ("HD000001", (150.0, 20.0), 100.0), "gone": ("HD000002", (10.0, -5.0), 200.0)}
HARPS_DID = "ivo://vo-ml.example/harps?"
MILES_SOURCE = MILES / "MILES_res2.50_star_m0019V.fits"


@pytest.fixture(scope="module")
def ssa_url(tap_url) -> str:
    return tap_url.removesuffix("/tap") + "/ssa"


@pytest.fixture(scope="module")
def harps_archive(tmp_path_factory) -> Path:
    """A HARPS archive of three spectra with coordinates; the source of 'gone' is deleted.

    `vo-ml ingest` runs in its own process: its worker pool forks, which is not safe in a test
    process that may have loaded TensorFlow's threads for the MILES archive.
    """
    from vo_ml.resources import config_file, load_yaml

    folder = tmp_path_factory.mktemp("harps")
    sources = folder / "sources"
    sources.mkdir()
    (sources / "original.fits").write_bytes(HARPS_CUT.read_bytes())
    for stem, values in HARPS_COPIES.items():
        _harps_copy(sources / f"{stem}.fits", *values)
    config = load_yaml(config_file("harps"))
    config["grid"].update(start=3790.0, stop=3970.0, pixels=2000)
    (folder / "harps.yaml").write_text(yaml.safe_dump(config))
    db = folder / "harps.duckdb"
    ingested = vo_ml("ingest", sources, "--db", db, "--config", folder / "harps.yaml", cwd=folder)
    assert ingested.returncode == 0 and "3 ingested" in ingested.stdout, ingested.stdout + ingested.stderr
    (sources / "gone.fits").unlink()
    return db


def _harps_copy(path: Path, target: str, position: tuple[float, float], days: float) -> None:
    with fits.open(HARPS_CUT) as hdus:
        header = hdus[0].header
        header["OBJECT"], (header["RA"], header["DEC"]) = target, position
        header["MJD-OBS"] += days
        hdus.writeto(path)


@pytest.fixture(scope="module")
def harps_url(harps_archive) -> str:
    """`vo-ml serve` on the HARPS archive; yields its SSA URL."""
    with serving(harps_archive) as root:
        yield f"{root}/ssa"


def _dids(results) -> list[str]:
    return [str(record.getbyutype("ssa:Curation.PublisherDID", decode=True)) for record in results]


def _query_status(document: bytes) -> list[tuple[str, str | None]]:
    resource = parse(io.BytesIO(document)).resources[0]
    return [(i.value, i.content) for i in resource.infos if i.name == "QUERY_STATUS"]


def test_band_selects_the_spectra_overlapping_it(ssa_url):
    service = SSAService(ssa_url)
    assert len(service.search(band=(3.6e-7, 3.7e-7) * u.m)) == 91
    assert len(service.search(band=(8e-7, 9e-7))) == 0
    assert len(service.search(BAND="/3.6e-7")) == 91
    assert len(service.search(BAND="7.5e-7/")) == 0
    assert len(service.search(BAND="5e-7")) == 91


def test_targetname_finds_one_star_with_the_ssa_fields_pyvo_reads(ssa_url):
    results = SSAService(ssa_url).search(TARGETNAME="hd003008")
    assert len(results) == 1
    record = results[0]
    assert record.title == "MILES HD003008 m0019"
    assert record.format == "application/fits"
    assert record.getdataurl() == f"{ssa_url}/data?ID=ivo%3A%2F%2Fvo-ml.example%2Fmiles%3Fm0019"
    assert _dids(results) == ["ivo://vo-ml.example/miles?m0019"]
    assert np.isnan(record.ra) and np.isnan(record.dec)
    assert record.getbyutype("ssa:Char.SpectralAxis.Coverage.Bounds.Start") == pytest.approx(3.5405e-7)
    assert results.fieldname_with_utype("ssa:Char.SpectralAxis.ResPower") == "em_res_power"


def test_pos_finds_the_spectra_inside_the_cone(harps_url):
    service = SSAService(harps_url)
    near = service.search(pos=HARPS_POS, diameter=0.1 * u.deg)
    assert _dids(near) == [HARPS_DID + "original"]
    assert (near[0].ra, near[0].dec) == pytest.approx((219.875072, -60.8301))
    assert _dids(service.search(pos=(150.02, 20.0))) == [HARPS_DID + "copy"]
    assert _dids(service.search(POS="150.5,20;ICRS", SIZE=1.2)) == [HARPS_DID + "copy"]
    assert _dids(service.search(pos=(150.5, 20.0))) == []


def test_the_cone_edge_is_the_great_circle_distance_astropy_gives(harps_url):
    """The copy at (150, 20) seen from (150.5, 20.3): inside a cone a micro-degree wider than
    its separation, outside one a micro-degree narrower."""
    centre = SkyCoord(150.5, 20.3, unit="deg")
    separation = centre.separation(SkyCoord(150.0, 20.0, unit="deg")).deg
    service = SSAService(harps_url)
    for radius, found in ((separation + 1e-6, [HARPS_DID + "copy"]), (separation - 1e-6, [])):
        assert _dids(service.search(POS="150.5,20.3", SIZE=2 * radius)) == found


def test_time_accepts_iso_and_mjd_with_open_ends(harps_url):
    service = SSAService(harps_url)
    march = service.search(time=Time(["2012-03-24T00:00:00", "2012-03-25T00:00:00"]))
    assert _dids(march) == [HARPS_DID + "original"]
    assert march[0].dateobs.isot.startswith("2012-03-24T08:37")
    assert _dids(service.search(TIME="56100/56150")) == [HARPS_DID + "copy"]
    assert sorted(_dids(service.search(TIME="56100/"))) == [HARPS_DID + "copy", HARPS_DID + "gone"]
    assert _dids(service.search(TIME="/2012-03-25", TARGETNAME="HD 128621")) == [HARPS_DID + "original"]


def test_format_metadata_gives_the_fields_and_no_rows(ssa_url):
    results = SSAService(ssa_url).search(format="metadata")
    assert len(results) == 0
    assert results.fieldname_with_utype("ssa:Access.Reference") == "access_url"
    assert results.getdesc("target_pos").ucd == "pos.eq;meta.main"
    assert len(SSAService(ssa_url).search(format="fits", MAXREC=200)) == 91
    assert len(SSAService(ssa_url).search(format="compliant")) == 0


def test_maxrec_cuts_the_result_and_says_so(client):
    response = client.get("/ssa", query_string={"REQUEST": "queryData", "MAXREC": 5})
    assert response.status_code == 200
    assert _query_status(response.data)[-1][0] == "OVERFLOW"
    assert len(parse(io.BytesIO(response.data)).get_first_table().array) == 5


@pytest.mark.parametrize(("parameters", "named"), [
    ({"REQUEST": "queryData", "POS": "abc"}, "POS='abc' is not 'ra,dec' in degrees"),
    ({"REQUEST": "queryData", "POS": "nan,nan"}, "POS='nan,nan' is not 'ra,dec' in degrees"),
    ({"REQUEST": "queryData", "POS": "10,20;GALACTIC"}, "POS='10,20;GALACTIC'"),
    ({"REQUEST": "queryData", "POS": "10,95"}, "POS='10,95'"),
    ({"REQUEST": "queryData", "POS": "10,20", "SIZE": "-1"}, "SIZE='-1'"),
    ({"REQUEST": "queryData", "BAND": "blue"}, "BAND='blue' is not 'lo/hi'"),
    ({"REQUEST": "queryData", "BAND": "5e-7/4e-7"}, "BAND='5e-7/4e-7' starts after it ends"),
    ({"REQUEST": "queryData", "TIME": "yesterday"}, "TIME='yesterday'"),
    ({"REQUEST": "queryData", "FORMAT": "image/jpeg"}, "FORMAT='image/jpeg'"),
    ({"REQUEST": "queryData", "MAXREC": "many"}, "MAXREC='many'"),
    ({"REQUEST": "getData"}, "REQUEST='getData' is not supported"),
    ({"POS": "10,20"}, "missing parameter REQUEST"),
])
def test_bad_parameters_are_dali_errors_naming_the_parameter(client, parameters, named):
    response = client.get("/ssa", query_string=parameters)
    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("application/x-votable+xml")
    [(status, message)] = _query_status(response.data)
    assert status == "ERROR"
    assert named in message


def test_pyvo_raises_the_service_message(ssa_url):
    with pytest.raises(DALQueryError, match="BAND='blue'"):
        SSAService(ssa_url).search(BAND="blue")


def test_data_returns_the_ingested_file_unchanged(ssa_url):
    [record] = SSAService(ssa_url).search(TARGETNAME="HD003008")
    response = requests.get(record.getdataurl(), timeout=30)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/fits"
    assert response.content == MILES_SOURCE.read_bytes()


@pytest.mark.parametrize("did", ["ivo://vo-ml.example/miles?m9999", "/etc/passwd", str(MILES_SOURCE)])
def test_data_refuses_an_id_that_names_no_spectrum(client, did):
    response = client.get("/ssa/data", query_string={"ID": did})
    assert response.status_code == 404
    [(status, message)] = _query_status(response.data)
    assert status == "ERROR" and "is not the publisher DID of any spectrum" in message


def test_data_says_gone_for_a_file_deleted_after_ingest(harps_url):
    response = requests.get(f"{harps_url}/data", params={"ID": HARPS_DID + "gone"}, timeout=30)
    assert response.status_code == 410
    assert "moved or deleted since it was ingested" in _query_status(response.content)[0][1]


def test_fetch_ssa_caches_spectra_that_read_back_as_the_sources(ssa_url, tmp_path):
    sources = {file_checksum(path): path for path in MILES.glob("*.fits")}
    with pytest.warns(DALOverflowWarning):
        paths, failures = fetch_ssa(ssa_url, tmp_path, band=(4e-7, 5e-7), maxrec=4)
    assert failures == [] and len(paths) == 4
    assert all(path.parent == tmp_path and path.suffix == ".fits" for path in paths)
    for path in paths:
        downloaded, source = read_spectrum(path), read_spectrum(sources[file_checksum(path)])
        np.testing.assert_array_equal(downloaded.wavelength, source.wavelength)
        np.testing.assert_array_equal(downloaded.flux, source.flux)

    stamps = {path: path.stat().st_mtime_ns for path in tmp_path.iterdir()}
    with pytest.warns(DALOverflowWarning):
        again, failures = fetch_ssa(ssa_url, tmp_path, band=(4e-7, 5e-7), maxrec=4)
    assert again == paths and failures == []
    assert {path: path.stat().st_mtime_ns for path in tmp_path.iterdir()} == stamps


def test_fetch_ssa_records_a_failed_download_and_carries_on(harps_url, tmp_path):
    paths, failures = fetch_ssa(harps_url, tmp_path, target="HD000002")
    assert paths == []
    [(url, reason)] = failures
    assert url.endswith("ID=ivo%3A%2F%2Fvo-ml.example%2Fharps%3Fgone") and "410" in reason
    paths, failures = fetch_ssa(harps_url, tmp_path, time=("2012-01-01T00:00:00", "2013-12-31T00:00:00"))
    assert len(paths) == 3 - len(failures) == 2
    assert sorted(p.name.rsplit("-", 1)[0] for p in paths) == ["vo-ml.example_harps_copy",
                                                           "vo-ml.example_harps_original"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_fetch_ssa_gives_up_on_a_service_that_never_answers(tmp_path):
    """pyvo's search has no timeout of its own: a silent service used to hang the ingest."""
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/ssa"
        outcome = []
        search = threading.Thread(target=lambda: outcome.append(_error_of(fetch_ssa, url, tmp_path,
                                                                            timeout=1)))
        search.start()
        search.join(timeout=30)
        assert not search.is_alive(), "fetch_ssa still waits for a service that never answers"
    assert isinstance(outcome[0], DALAccessError) and "timed out" in str(outcome[0])


def _error_of(function, *arguments, **options) -> Exception | None:
    try:
        function(*arguments, **options)
    except Exception as error:
        return error
    return None
