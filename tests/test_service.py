"""The TAP service over HTTP, with pyvo as the client, on the archive built from MILES fixtures."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
import requests
from astropy.io.votable import parse
from conftest import SLOW, TABLE, TAU_CETI, copy_archive
from pyvo.dal import DALAccessError

SIMILAR = (f"SELECT TOP 10 obs_publisher_did, target_name, teff, "
           f"ml_distance(embedding, '{TAU_CETI}') AS d FROM {TABLE} ORDER BY d")


def test_tap_schema_lists_the_embedding_column_with_its_arraysize(service):
    rows = service.search(
        "SELECT table_name, column_name, datatype, arraysize, ucd, description "
        "FROM TAP_SCHEMA.columns WHERE column_name = 'embedding'").to_table()
    assert list(rows["table_name"]) == [TABLE]
    assert rows["datatype"][0] == "float" and rows["arraysize"][0] == "16"
    assert "dense16" in rows["description"][0]


def test_pyvo_reads_the_tableset(service):
    tables = service.tables
    assert TABLE in tables.keys()
    columns = {c.name: c for c in tables[TABLE].columns}
    assert columns["embedding"].datatype.arraysize == "16"
    assert columns["teff"].unit == "K"
    keys = tables["TAP_SCHEMA.columns"].foreignkeys  # as TAP_SCHEMA.keys lists them
    assert [(k.targettable, k.fkcolumns[0].fromcolumn, k.fkcolumns[0].targetcolumn) for k in keys] \
        == [("TAP_SCHEMA.tables", "table_name", "table_name")]


def test_capabilities_declare_adql_and_ml_distance(service):
    capability = next(c for c in service.capabilities if c.standardid == "ivo://ivoa.net/std/TAP")
    language = capability.languages[0]
    assert language.name == "ADQL"
    forms = [f.form for features in language.languagefeaturelists for f in features]
    assert any(form.lower().startswith("ml_distance(") for form in forms)


def test_a_star_is_its_own_nearest_neighbour_and_distances_ascend(service):
    result = service.search(SIMILAR).to_table()
    assert len(result) == 10
    assert result["obs_publisher_did"][0] == TAU_CETI
    assert result["d"][0] == 0
    assert np.all(np.diff(result["d"]) >= 0)


def test_similarity_agrees_with_numpy_on_the_stored_embeddings(service):
    rows = service.search(f"SELECT obs_publisher_did, embedding FROM {TABLE}").to_table()
    embeddings = np.array(rows["embedding"], dtype=np.float64)
    reference = embeddings[list(rows["obs_publisher_did"]).index(TAU_CETI)]
    expected = np.sort(np.linalg.norm(embeddings - reference, axis=1))[:10]
    result = service.search(SIMILAR).to_table()
    assert np.array(result["d"]) == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_similarity_with_a_filter_keeps_only_matching_rows(service):
    result = service.search(
        f"SELECT TOP 5 obs_id, teff, ml_distance(embedding, '{TAU_CETI}') AS d FROM {TABLE} "
        "WHERE teff > 5500 ORDER BY d").to_table()
    assert len(result) == 5 and np.all(result["teff"] > 5500)


def test_result_fields_carry_tap_schema_metadata(client):
    response = client.get("/tap/sync", query_string={
        "LANG": "ADQL", "QUERY": f"SELECT TOP 3 s_ra, teff, embedding FROM {TABLE}"})
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/x-votable+xml")
    fields = {f.name: f for f in parse(io.BytesIO(response.data)).get_first_table().fields}
    assert (fields["s_ra"].ucd, str(fields["s_ra"].unit)) == ("pos.eq.ra", "deg")
    assert str(fields["teff"].unit) == "K"
    assert fields["embedding"].arraysize == "16" and fields["embedding"].datatype == "float"


@pytest.mark.parametrize(("query", "rows", "columns"), [
    (f"SELECT TOP 2 * FROM {TABLE}", 2, 41),
    (f"SELECT COUNT(*) AS n, AVG(teff) FROM {TABLE} WHERE feh > 0", 1, 2),
    (f"SELECT TOP 1 NULL AS nothing, 1.5 AS x, 'a' AS s FROM {TABLE}", 1, 3),
    (f"SELECT obs_id FROM {TABLE} WHERE 1 = 0", 0, 1),
    (f"SELECT TOP 3 a.obs_id, b.obs_id FROM {TABLE} AS a JOIN {TABLE} AS b ON a.obs_id = b.obs_id",
     3, 2),
])
def test_queries_of_every_shape_come_back_as_tables(service, query, rows, columns):
    result = service.search(query).to_table()
    assert (len(result), len(result.colnames)) == (rows, columns)


def test_maxrec_truncation_is_flagged_as_overflow(service):
    result = service.search(f"SELECT obs_id FROM {TABLE}", maxrec=7)
    assert len(result) == 7 and result.status[0] == "OVERFLOW"
    complete = service.search(f"SELECT obs_id FROM {TABLE}", maxrec=1000)
    assert len(complete) > 7 and complete.status[0] == "OK"


def test_the_overflow_marker_follows_the_table_and_the_status_before_it_is_ok(client):
    """DALI: QUERY_STATUS OK before the table, OVERFLOW after it (where taplint looks)."""
    document = client.get("/tap/sync", query_string={
        "LANG": "ADQL", "QUERY": f"SELECT obs_id FROM {TABLE}", "MAXREC": 3}).data
    overflow = document.index(b'name="QUERY_STATUS" value="OVERFLOW"')
    assert document.index(b'name="QUERY_STATUS" value="OK"') < document.index(b"<TABLE")
    assert document.index(b"</TABLE>") < overflow < document.index(b"</RESOURCE>")
    assert b'ID="QUERY_STATUS"' not in document  # two INFOs share the name, so neither takes it as ID
    assert len(parse(io.BytesIO(document)).get_first_table().array) == 3


def _error_of(service, query):
    with pytest.raises(DALAccessError) as error:
        service.search(query)
    return str(error.value)


def test_syntax_error_is_a_dali_error(service, client):
    assert "syntax" in _error_of(service, "SELEKT obs_id FROM miles.spectra").lower()
    response = client.post("/tap/sync", data={"LANG": "ADQL", "QUERY": "SELECT FROM"})
    assert response.status_code == 400
    status = parse(io.BytesIO(response.data)).resources[0].infos[0]
    assert (status.name, status.value) == ("QUERY_STATUS", "ERROR")


def test_unknown_column_error_names_it(service):
    assert "teffx" in _error_of(service, f"SELECT teffx FROM {TABLE}")


def test_unknown_reference_error_names_the_did(service):
    message = _error_of(service, f"SELECT TOP 3 ml_distance(embedding, 'ivo://nowhere?x') AS d "
                                 f"FROM {TABLE} ORDER BY d")
    assert "ivo://nowhere?x" in message


def test_backend_functions_are_unreachable(service):
    assert "read_csv" in _error_of(service, "SELECT * FROM read_csv('/etc/passwd')")
    assert "vo_ml" in _error_of(service, "SELECT * FROM vo_ml.ingest_report")


@pytest.mark.parametrize(("parameters", "message"), [
    ({"QUERY": "SELECT 1"}, "LANG"),
    ({"LANG": "SQL", "QUERY": "SELECT 1"}, "LANG='SQL'"),
    ({"LANG": "ADQL"}, "QUERY"),
    ({"LANG": "ADQL", "QUERY": "SELECT 1", "MAXREC": "lots"}, "MAXREC"),
    ({"LANG": "ADQL", "QUERY": "SELECT 1", "RESPONSEFORMAT": "image/png"}, "RESPONSEFORMAT"),
])
def test_bad_parameters_get_a_dali_error_naming_them(client, parameters, message):
    response = client.get("/tap/sync", query_string=parameters)
    assert response.status_code == 400
    status = parse(io.BytesIO(response.data)).resources[0].infos[0]
    assert status.value == "ERROR" and message in status.content


def test_availability_says_available(client):
    response = client.get("/tap/availability")
    assert response.status_code == 200
    assert b"<vosi:available>true</vosi:available>" in response.data


@pytest.mark.parametrize(("query", "message"), [
    (f"SELECT CAST(target_name AS INTEGER) FROM {TABLE}", "refused"),
    (f"SELECT TOP 1 MOD(7, 0) FROM {TABLE}", "refused"),
])
def test_queries_the_database_refuses_are_dali_errors_with_status_400(client, query, message):
    response = client.get("/tap/sync", query_string={"LANG": "ADQL", "QUERY": query})
    assert response.status_code == 400
    status = parse(io.BytesIO(response.data)).resources[0].infos[0]
    assert status.value == "ERROR" and message in status.content


def test_select_star_over_join_using_still_answers(service):
    result = service.search(
        f"SELECT TOP 2 * FROM {TABLE} AS a JOIN {TABLE} AS b USING (obs_id)").to_table()
    assert len(result) == 2 and "obs_id" in result.colnames


def test_tap_schema_lists_its_own_foreign_keys_and_the_size_of_vectors(service):
    """taplint TMS: keys between the TAP_SCHEMA tables, and "size" equal to a fixed arraysize."""
    keys = service.search(
        "SELECT k.from_table, c.from_column, k.target_table, c.target_column "
        "FROM TAP_SCHEMA.keys AS k JOIN TAP_SCHEMA.key_columns AS c ON k.key_id = c.key_id").to_table()
    links = {(r[0], r[1], r[2], r[3]) for r in keys}
    assert ("TAP_SCHEMA.columns", "table_name", "TAP_SCHEMA.tables", "table_name") in links
    assert ("TAP_SCHEMA.tables", "schema_name", "TAP_SCHEMA.schemas", "schema_name") in links
    tables = {r[0] for r in service.search("SELECT table_name FROM TAP_SCHEMA.tables").to_table()}
    assert {t for link in links for t in (link[0], link[2])} <= tables
    (row,) = service.search(f'SELECT arraysize, "size" FROM TAP_SCHEMA.columns '
                            f"WHERE table_name = '{TABLE}' AND column_name = 'embedding'").to_table()
    assert row[0] == "16" and row[1] == 16


def test_a_query_over_the_time_limit_is_stopped_with_an_error_document(archive, tmp_path):
    from vo_ml.service import create_app

    client = create_app({"ARCHIVE_DB": str(copy_archive(archive, tmp_path)),
                         "QUERY_TIMEOUT": "0.5"}).test_client()
    started = time.perf_counter()
    response = client.get("/tap/sync", query_string={"LANG": "ADQL", "QUERY": SLOW})
    elapsed = time.perf_counter() - started
    quick = client.get("/tap/sync", query_string={
        "LANG": "ADQL", "QUERY": f"SELECT TOP 1 obs_id FROM {TABLE}"})
    assert response.status_code == 400 and elapsed < 10
    assert b'value="ERROR"' in response.data and b"limit of 0.5 s" in response.data
    assert quick.status_code == 200  # the worker is free again


def test_every_answer_allows_browser_clients_from_other_sites(client):
    preflight = client.options("/tap/sync", headers={
        "Origin": "https://aladin.example", "Access-Control-Request-Method": "POST"})
    answer = client.get("/tap/tables", headers={"Origin": "https://aladin.example"})
    for response in (preflight, answer):
        assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]


def test_every_dali_example_is_marked_up_and_runs(service, tap_url):
    from lxml import etree

    page = requests.get(f"{tap_url}/examples", timeout=30)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("application/xhtml+xml")
    root = etree.fromstring(page.content)
    namespace = {"h": "http://www.w3.org/1999/xhtml"}
    examples = root.findall(".//h:div[@typeof='example']", namespace)
    assert len(examples) == 9
    for example in examples:
        query = example.find(".//*[@property='query']").text
        assert example.find(".//*[@property='name']").text and example.get("id")
        assert len(service.search(query).to_table()) > 0, f"example {example.get('id')} found no rows"
    # The latent cone is on the model's scale: it holds the reference's neighbours, not it alone.
    cone = root.find(".//h:div[@id='latent-cone']//*[@property='query']", namespace).text
    assert len(service.search(cone).to_table()) > 1
    capabilities = requests.get(f"{tap_url}/capabilities", timeout=30).text
    assert 'standardID="ivo://ivoa.net/std/DALI#examples"' in capabilities
    assert f"{tap_url}/examples" in capabilities


def test_the_landing_page_offers_a_query_form_and_the_examples(client):
    page = client.get("/tap")
    assert page.status_code == 200
    assert 'action="http://localhost/tap/sync"' in page.text and 'name="QUERY"' in page.text
    assert "ml_distance(embedding" in page.text and 'href="examples#most-similar"' in page.text


def _dali_error(response) -> str:
    """The message of a DALI error document, checked to be one."""
    assert response.mimetype == "application/x-votable+xml"
    info = next(i for i in parse(io.BytesIO(response.data)).resources[0].infos
                if i.name == "QUERY_STATUS")
    assert info.value == "ERROR"
    return info.content


def test_unknown_routes_and_methods_of_the_dal_endpoints_are_dali_errors(client):
    for response, status in ((client.get("/tap/nothere"), 404), (client.get("/ssa/nothere"), 404),
                             (client.put("/tap/sync"), 405), (client.delete("/ssa"), 405)):
        assert response.status_code == status
        assert response.request.path in _dali_error(response)
    assert "POST" in client.put("/tap/sync").headers["Allow"]
    assert client.get("/nothere").status_code == 404  # not a DAL endpoint: Flask's own page


def test_a_failure_of_the_service_is_a_500_dali_error_with_its_cause_logged(archive, tmp_path,
                                                                            caplog):
    from vo_ml.service import create_app

    app = create_app({"ARCHIVE_DB": str(copy_archive(archive, tmp_path))})
    app.extensions["vo_ml"].backend.close()  # the database is gone: no request's fault
    client = app.test_client()
    for response in (client.get("/tap/examples"), client.get("/tap/sync", query_string={
            "LANG": "ADQL", "QUERY": f"SELECT TOP 1 obs_id FROM {TABLE}"})):
        assert response.status_code == 500
        assert "the service log has the details" in _dali_error(response)
    assert "/tap/examples failed" in caplog.text and "/tap/sync failed" in caplog.text
