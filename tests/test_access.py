"""Every row says where its file is and what it is, and pyvo downloads it from there.

access_url is stored relative to the service at ingest and goes out absolute: in TAP sync and
async results, in ivoa.obscore and in SSA results, so ``getdataurl()`` of any record fetches
the file the row was ingested from.
"""

from __future__ import annotations

import sqlite3
from urllib.parse import quote

import pytest
import pyvo
import requests
from conftest import MILES, TABLE, TAU_CETI

from vo_ml.service import jobs

TAU_CETI_FILE = MILES / "MILES_res2.50_star_m0067V.fits"
ROW = f"FROM {TABLE} WHERE obs_publisher_did = '{TAU_CETI}'"


@pytest.fixture(scope="module")
def root(tap_url) -> str:
    return tap_url.removesuffix("/tap")


def _downloads_tau_ceti(record: pyvo.dal.Record) -> None:
    answer = requests.get(record.getdataurl(), timeout=30)
    assert answer.status_code == 200 and answer.content == TAU_CETI_FILE.read_bytes()


def test_tap_rows_give_the_absolute_url_and_the_type_of_their_file(service, root):
    (row,) = service.search(f"SELECT access_url, access_format {ROW}")
    assert row["access_url"] == f"{root}/ssa/data?ID={quote(TAU_CETI, safe='')}"
    assert row["access_format"] == "application/fits"
    (record,) = service.search(f"SELECT * {ROW}")
    _downloads_tau_ceti(record)


def test_async_results_give_absolute_urls_too(service):
    job = service.submit_job(f"SELECT obs_publisher_did, access_url, access_format {ROW}")
    try:
        job.run().wait(phases=["COMPLETED", "ERROR"], timeout=120)
        job.raise_if_error()
        (record,) = job.fetch_result()
    finally:
        job.delete()
    _downloads_tau_ceti(record)


def test_every_obscore_row_has_a_url_that_serves_its_file(service, root):
    rows = service.search("SELECT obs_publisher_did, access_url, access_format FROM ivoa.obscore")
    assert len(rows) == len(list(MILES.glob("*.fits")))
    assert all(row["access_url"] == f"{root}/ssa/data?ID={quote(row['obs_publisher_did'], safe='')}"
               and row["access_format"] == "application/fits" for row in rows)
    (record,) = service.search(f"SELECT * FROM ivoa.obscore WHERE obs_publisher_did = '{TAU_CETI}'")
    _downloads_tau_ceti(record)


def test_ssa_records_download_their_file(root):
    (record,) = pyvo.dal.SSAService(f"{root}/ssa").search(TARGETNAME="HD010700")
    assert record.format == "application/fits"
    _downloads_tau_ceti(record)


def test_urls_are_made_absolute_under_the_host_each_request_was_sent_to(client):
    """Without SERVICE_BASE_URL, the base is the request's own host (Flask's test client asks
    http://localhost/), here in a CSV result."""
    answer = client.get("/tap/sync", query_string={
        "LANG": "ADQL", "QUERY": f"SELECT access_url {ROW}", "RESPONSEFORMAT": "csv"})
    assert answer.status_code == 200
    assert answer.text.splitlines()[1].strip('"') == \
        f"http://localhost/ssa/data?ID={quote(TAU_CETI, safe='')}"


def test_a_job_store_of_an_older_version_gains_the_base_url_column(tmp_path):
    """Jobs kept by a version that did not record base URLs stay readable, and new ones record it."""
    older = jobs._SCHEMA.replace(",\n    base_url TEXT", "")
    assert "base_url" not in older
    with sqlite3.connect(tmp_path / "jobs.sqlite3") as db:
        db.executescript(older)
        db.execute("INSERT INTO jobs (job_id, phase, parameters, creation_time, execution_duration, "
                   "destruction) VALUES ('old', 'PENDING', '[]', ?, 60, ?)",
                   [jobs.iso(jobs.utc_now()), jobs.iso(jobs.utc_now())])
    store = jobs.JobStore(tmp_path)
    assert store.get("old").base_url is None
    job = store.create([("QUERY", "SELECT 1")], {}, 60, jobs.utc_now(), "https://archive.example/vo")
    assert store.get(job.job_id).base_url == "https://archive.example/vo"
