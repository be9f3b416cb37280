"""TAP output formats, uploads and VOTable validity, through the service's routes.

VOTables are checked with ``stilts votlint`` (Debian package ``stilts``, installed by the
``stilts`` fixture when missing), every other format with the library that reads it.
"""

from __future__ import annotations

import functools
import http.server
import io
import threading

import numpy as np
import pyarrow.parquet as pq
import pytest
from astropy.io import fits
from astropy.io.votable import parse_single_table
from astropy.table import Table
from conftest import TABLE, copy_archive, votlint
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

QUERY = f"SELECT TOP 7 obs_publisher_did, target_name, teff, embedding FROM {TABLE} ORDER BY teff"


@pytest.fixture(scope="module")
def reference(service) -> Table:
    return service.search(QUERY).to_table()


def _sync(client: FlaskClient, query: str, **params: str) -> TestResponse:
    return client.post("/tap/sync", data={"LANG": "ADQL", "QUERY": query, **params})


@pytest.mark.parametrize("fmt", ["votable", "votable/td",
                                 "application/x-votable+xml;serialization=TABLEDATA"])
def test_votable_serialisations_hold_the_same_rows_and_pass_votlint(client, reference, stilts,
                                                                     tmp_path, fmt):
    response = _sync(client, QUERY, RESPONSEFORMAT=fmt)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/x-votable+xml")
    table = parse_single_table(io.BytesIO(response.data)).to_table()
    assert list(table["obs_publisher_did"]) == list(reference["obs_publisher_did"])
    np.testing.assert_allclose(np.asarray(table["embedding"]), np.asarray(reference["embedding"]))
    assert votlint(stilts, response.data, tmp_path) == ""


def test_overflow_and_error_documents_pass_votlint(client, stilts, tmp_path):
    overflow = _sync(client, f"SELECT * FROM {TABLE}", MAXREC="2")
    error = _sync(client, f"SELECT snrr FROM {TABLE}")
    obscore = _sync(client, "SELECT TOP 3 * FROM ivoa.obscore")
    assert b'value="OVERFLOW"' in overflow.data and error.status_code == 400
    for answer, rows in ((overflow, 2), (obscore, 3)):
        assert answer.status_code == 200, answer.text
        assert len(parse_single_table(io.BytesIO(answer.data)).array) == rows
    for document in (overflow.data, error.data, obscore.data):
        assert votlint(stilts, document, tmp_path) == ""


def test_votlint_does_report_a_broken_document(client, stilts, tmp_path):
    """The control for the votlint checks above: a datatype VOTable does not have ("real")
    is an error."""
    good = _sync(client, QUERY).data
    broken = good.replace(b'datatype="double"', b'datatype="real"', 1)
    assert "ERROR" in votlint(stilts, broken, tmp_path)


def test_csv_and_tsv_hold_the_rows_with_arrays_as_space_separated_values(client, reference):
    for fmt, delimiter, mime in (("csv", ",", "text/csv"), ("tsv", "\t", "text/tab-separated-values")):
        response = _sync(client, QUERY, RESPONSEFORMAT=fmt)
        assert response.status_code == 200 and response.headers["Content-Type"].startswith(mime)
        table = Table.read(response.text, format="ascii.csv" if fmt == "csv" else "ascii.tab",
                           delimiter=delimiter)
        assert list(table["obs_publisher_did"]) == list(reference["obs_publisher_did"])
        first = np.array(table["embedding"][0].split(), dtype=float)
        np.testing.assert_allclose(first, np.asarray(reference["embedding"][0]), rtol=1e-6)


def test_fits_and_parquet_hold_the_rows_and_the_units(client, reference):
    response = _sync(client, QUERY, RESPONSEFORMAT="fits")
    assert response.headers["Content-Type"] == "application/fits"
    with fits.open(io.BytesIO(response.data)) as hdus:
        rows = hdus[1].data
        assert list(rows["obs_publisher_did"]) == list(reference["obs_publisher_did"])
        assert hdus[1].columns["teff"].unit == "K"
    response = _sync(client, QUERY, RESPONSEFORMAT="parquet")
    table = pq.read_table(io.BytesIO(response.data))
    assert table.column("obs_publisher_did").to_pylist() == list(reference["obs_publisher_did"])
    assert table.schema.field("teff").metadata[b"unit"] == b"K"


def test_an_unknown_format_is_refused_naming_the_known_ones(client):
    response = _sync(client, QUERY, RESPONSEFORMAT="xlsx")
    assert response.status_code == 400 and b"parquet" in response.data


def test_an_inline_upload_joins_the_archive(service, reference):
    mine = Table({"did": list(reference["obs_publisher_did"][:3]), "weight": [1.0, 2.0, 3.0]})
    joined = service.search(
        f"SELECT s.target_name, u.weight FROM {TABLE} AS s JOIN TAP_UPLOAD.mine AS u "
        "ON s.obs_publisher_did = u.did ORDER BY u.weight", uploads={"mine": mine}).to_table()
    assert list(joined["weight"]) == [1.0, 2.0, 3.0]
    assert list(joined["target_name"]) == list(reference["target_name"][:3])


def test_an_upload_by_url_is_fetched(client, reference, tmp_path):
    path = tmp_path / "refs.vot"
    Table({"did": list(reference["obs_publisher_did"][:2])}).write(path, format="votable")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/refs.vot"
        response = _sync(client, "SELECT did FROM TAP_UPLOAD.refs", UPLOAD=f"refs,{url}")
    finally:
        server.shutdown()
    table = parse_single_table(io.BytesIO(response.data)).to_table()
    assert list(table["did"]) == list(reference["obs_publisher_did"][:2])


def test_upload_errors_name_the_table_and_what_to_do(client):
    missing = _sync(client, "SELECT * FROM TAP_UPLOAD.t", UPLOAD="t,param:nothere")
    assert missing.status_code == 400 and b"no file part named 'nothere'" in missing.data
    not_votable = client.post("/tap/sync", data={
        "LANG": "ADQL", "QUERY": "SELECT * FROM TAP_UPLOAD.t", "UPLOAD": "t,param:f",
        "f": (io.BytesIO(b"not a votable"), "f.vot")})
    assert not_votable.status_code == 400 and b"UPLOAD t: not a readable VOTable" in not_votable.data
    document = io.BytesIO()
    Table({"did": ["a"]}).write(document, format="votable")
    bad_column = client.post("/tap/sync", data={
        "LANG": "ADQL", "QUERY": "SELECT dd FROM TAP_UPLOAD.t", "UPLOAD": "t,param:f",
        "f": (io.BytesIO(document.getvalue()), "f.vot")})
    assert bad_column.status_code == 400
    assert b"unknown column 'dd' in TAP_UPLOAD.t; did you mean 'did'?" in bad_column.data


def test_an_upload_over_the_limit_is_refused_with_413(archive, tmp_path):
    from vo_ml.service import create_app

    big = io.BytesIO()
    Table({"x": np.arange(5000.0)}).write(big, format="votable")
    client = create_app({"ARCHIVE_DB": str(copy_archive(archive, tmp_path)),
                         "UPLOAD_LIMIT_BYTES": "10000"}).test_client()
    response = client.post("/tap/sync", data={
        "LANG": "ADQL", "QUERY": "SELECT COUNT(*) FROM TAP_UPLOAD.t", "UPLOAD": "t,param:f",
        "f": (io.BytesIO(big.getvalue()), "t.vot")})
    assert response.status_code == 413
    assert b"upload limit of 10000 bytes" in response.data
