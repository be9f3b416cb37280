"""DataLink 1.1: pyvo over HTTP from TAP and SSA rows to their links, STILTS datalinklint on a
links document, what TOPCAT's "Invoke Service" reads in results, and the routes' own rules."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import pyvo
import requests
import yaml
from astropy.io import fits
from astropy.io.votable import parse, parse_single_table
from astropy.utils.data import import_file_to_cache
from conftest import HARPS_CUT, TABLE, TAU_CETI, run, vo_ml, votlint
from lxml import etree
from pyvo.dal.adhoc import DatalinkQuery

from vo_ml.spectra.votable_dm import read_votable_spectrum

NS = {"v": "http://www.ivoa.net/xml/VOTable/v1.3"}
LINKS_MIME = "application/x-votable+xml;content=datalink"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: The terms of the current DataLink vocabulary that the Debian STILTS 3.4.7 release does not
#: know yet and reports as errors; datalinklint may flag these and nothing else.
STALE_VOCABULARY = ("thumbnail", "coderived", "counterpart", "documentation", "package")
SPEC_UCDS = {"ID": "meta.id;meta.main", "access_url": "meta.ref.url", "service_def": "meta.ref",
             "error_message": "meta.code.error", "semantics": "meta.code",
             "description": "meta.note", "content_type": "meta.code.mime",
             "content_length": "phys.size;meta.file", "content_qualifier": "meta.code.class",
             "local_semantics": "meta.code", "link_auth": "meta.code",
             "link_authorized": "meta.code"}


@pytest.fixture(scope="module")
def datalink_vocabulary() -> None:
    """pyvo's ``bysemantics`` reads the DataLink vocabulary from ivoa.net to find narrower terms
    (``#preview-plot`` under ``#preview``); with no network here it gets the copy pyvo ships."""
    shipped = Path(pyvo.__file__).parent / "dal/tests/data/datalink/datalink.desise"
    import_file_to_cache("http://www.ivoa.net/rdf/datalink/core", str(shipped),
                         remove_original=False)


def _links(client, *ids: str, **parameters) -> tuple[object, list[dict]]:
    response = client.post("/datalink/links", data={"ID": list(ids), **parameters})
    assert response.status_code == 200, response.data
    table = parse_single_table(io.BytesIO(response.data)).to_table(use_names_over_ids=True)
    rows = [{name: _value(row[name]) for name in table.colnames} for row in table]
    return response, rows


def _value(cell: object) -> object:
    """A cell as Python; NULL, and an empty string (a NULL char cell in TABLEDATA), as None."""
    if np.ma.is_masked(cell) or cell == "":
        return None
    return cell.item() if hasattr(cell, "item") else cell


# --- pyvo over HTTP -----------------------------------------------------------------------------

def test_pyvo_follows_tap_rows_to_their_links(service, datalink_vocabulary):
    result = service.search(f"SELECT TOP 3 obs_publisher_did, target_name FROM {TABLE} "
                            "ORDER BY obs_publisher_did")
    links = list(result.iter_datalinks())
    assert len(links) == 3
    for row, rowlinks in zip(result, links, strict=True):
        assert {link["ID"] for link in rowlinks} == {row["obs_publisher_did"]}
        preview = next(rowlinks.bysemantics("#preview"))
        assert preview.semantics == "#preview-plot"
        image = requests.get(preview.access_url, timeout=60)
        assert image.headers["Content-Type"] == "image/png" and image.content.startswith(PNG_MAGIC)
    first = result[0]
    this = next(links[0].bysemantics("#this"))
    assert first.getdataset().read() == requests.get(this.access_url, timeout=30).content
    assert this.content_length == len(requests.get(this.access_url, timeout=30).content)


def test_pyvo_follows_ssa_rows_to_their_links(tap_url, datalink_vocabulary):
    results = pyvo.dal.SSAService(tap_url.removesuffix("/tap") + "/ssa").search(
        TARGETNAME="HD010700")
    (links,) = list(results.iter_datalinks())
    assert {link.semantics for link in links} >= {"#this", "#preview-plot", "#derivation",
                                                  "#documentation"}
    with fits.open(io.BytesIO(results[0].getdataset().read())) as hdus:
        assert hdus[0].header["NAXIS1"] > 1000


def test_the_similar_descriptor_returns_k_rows_through_pyvo(service):
    result = service.search(f"SELECT obs_publisher_did FROM {TABLE} "
                            f"WHERE obs_publisher_did = '{TAU_CETI}'")
    (links,) = list(result.iter_datalinks())
    similar = next(link for link in links.iter_procs() if link.service_def == "similar-spectra")
    descriptor = links.get_adhocservice_by_id(similar.service_def)
    answer = DatalinkQuery.from_resource([similar], descriptor, K=4).execute_votable()
    table = answer.get_first_table().array
    assert len(table) == 4 and TAU_CETI not in set(table["obs_publisher_did"])
    assert np.all(np.diff(table["latent_distance"]) >= 0)


# --- the documents --------------------------------------------------------------------------

def test_datalinklint_finds_no_error_but_the_stale_vocabulary(client, stilts, tmp_path):
    document = tmp_path / "links.xml"
    document.write_bytes(_links(client, TAU_CETI, "ivo://vo-ml.example/miles?nothing")[0].data)
    report = run([stilts, "datalinklint", document]).stdout
    errors = [line for line in report.splitlines() if line.startswith(("E-", "F-"))]
    assert all(any(f"'{term}'" in line for term in STALE_VOCABULARY) for line in errors), report
    assert "Errors: " in report and "Failures: 0" in report
    assert votlint(stilts, document.read_bytes(), tmp_path) == ""


@pytest.mark.parametrize("route, query", [
    ("/tap/sync", {"LANG": "ADQL",
                   "QUERY": f"SELECT TOP 2 target_name, obs_publisher_did FROM {TABLE}"}),
    ("/tap/sync", {"LANG": "ADQL",
                   "QUERY": "SELECT TOP 2 target_name, obs_publisher_did FROM ivoa.obscore"}),
    ("/ssa", {"REQUEST": "queryData", "MAXREC": "2"}),
])
def test_results_carry_what_invoke_service_needs(client, route, query):
    response = client.get(route, query_string=query)
    root = etree.fromstring(response.data)
    field_ids = {f.get("ID") for f in root.iterfind(".//v:FIELD", NS)}
    descriptors = root.findall(".//v:RESOURCE[@type='meta'][@utype='adhoc:service']", NS)
    assert {d.get("ID") for d in descriptors} == {"datalink-links", "similar-spectra",
                                                   "why-similar"}
    for descriptor in descriptors:
        assert descriptor.get("name") and descriptor.findtext("v:DESCRIPTION", None, NS)
        (url,) = descriptor.findall("v:PARAM[@name='accessURL']", NS)
        assert url.get("value").startswith("http://localhost/datalink/")
        inputs = descriptor.findall("v:GROUP[@name='inputParams']/v:PARAM", NS)
        bound = [p for p in inputs if p.get("ref")]
        assert [p.get("name") for p in bound] == ["ID"]
        assert bound[0].get("ref") in field_ids
    (did_field,) = [f for f in root.iterfind(".//v:FIELD", NS)
                    if f.get("utype", "").endswith("Curation.PublisherDID")]
    assert did_field.get("ID") == bound[0].get("ref")


def test_results_without_a_did_have_no_descriptors(client):
    response = client.get("/tap/sync", query_string={
        "LANG": "ADQL", "QUERY": f"SELECT TOP 2 target_name FROM {TABLE}"})
    assert b"adhoc:service" not in response.data


# --- {links} rules ---------------------------------------------------------------------------

def test_links_answers_many_ids_each_together_with_one_target_per_row(client):
    dids = [TAU_CETI, "ivo://vo-ml.example/miles?m0019", "ivo://vo-ml.example/miles?m0030"]
    response, rows = _links(client, *dids, "no such spectrum")
    assert response.headers["Content-Type"].replace(" ", "").startswith(LINKS_MIME)
    order = [row["ID"] for row in rows]
    assert list(dict.fromkeys(order)) == [*dids, "no such spectrum"]
    assert all(order[i] == order[i + 1] or order[i + 1] not in order[:i + 1]
               for i in range(len(order) - 1))
    for row in rows:
        assert sum(row[k] is not None for k in ("access_url", "service_def", "error_message")) == 1
    (missing,) = [row for row in rows if row["ID"] == "no such spectrum"]
    assert missing["error_message"].startswith("NotFoundFault: ")
    table = parse(io.BytesIO(response.data))
    assert {f.name: f.ucd for f in table.get_first_table().fields} == SPEC_UCDS
    infos = {i.name: i.value for i in table.resources[0].infos}
    assert infos["standardID"] == "ivo://ivoa.net/std/DataLink#links-1.1"


def test_get_and_post_give_the_same_links(client):
    by_get = client.get("/datalink/links", query_string=[("ID", TAU_CETI)]).data
    assert by_get == _links(client, TAU_CETI)[0].data


def test_maxrec_cuts_the_links_and_says_overflow(client):
    response, rows = _links(client, TAU_CETI, "ivo://vo-ml.example/miles?m0019", MAXREC="3")
    assert len(rows) == 3
    statuses = [i.value for i in parse(io.BytesIO(response.data)).resources[0].infos
                if i.name == "QUERY_STATUS"]
    assert statuses == ["OK", "OVERFLOW"]


@pytest.mark.parametrize("query, status, named", [
    ({}, 400, "ID"),
    ({"ID": TAU_CETI, "RESPONSEFORMAT": "text/csv"}, 400, "RESPONSEFORMAT"),
    ({"ID": "nobody"}, 404, "nobody"),
])
def test_bad_requests_are_dali_errors(client, query, status, named):
    route = "/datalink/preview" if query.get("ID") == "nobody" else "/datalink/links"
    response = client.get(route, query_string=query)
    assert response.status_code == status
    (info,) = [i for i in parse(io.BytesIO(response.data)).resources[0].infos
               if i.name == "QUERY_STATUS"]
    assert info.value == "ERROR" and named in info.content


@pytest.mark.parametrize("query, named", [
    ({"K": "0"}, "K"), ({"K": "many"}, "K"), ({"METRIC": "manhattan"}, "METRIC")])
def test_similar_refuses_bad_inputs(client, query, named):
    response = client.get("/datalink/similar", query_string={"ID": TAU_CETI, **query})
    assert response.status_code == 400 and named.encode() in response.data


def test_links_for_a_thousand_ids_in_one_post(client):
    ids = [f"ivo://vo-ml.example/miles?m{i:04d}" for i in range(1, 1001)]
    _, rows = _links(client, *ids)
    assert len({row["ID"] for row in rows}) == 1000
    published = client.get("/tap/sync", query_string={
        "LANG": "ADQL", "QUERY": f"SELECT COUNT(*) AS n FROM {TABLE}", "RESPONSEFORMAT": "csv"})
    assert sum(row["error_message"] is None and row["semantics"] == "#this" for row in rows) \
        == int(published.data.decode().split()[1])


# --- what the links lead to -------------------------------------------------------------------

def test_the_preview_is_drawn_once_and_kept(app, client):
    first = client.get("/datalink/preview", query_string={"ID": TAU_CETI})
    assert first.status_code == 200 and first.data.startswith(PNG_MAGIC)
    kept = list(Path(f"{app.config['ARCHIVE_DB']}.previews").rglob("*.png"))
    assert kept
    kept[0].write_bytes(first.data + b"kept")
    again = client.get("/datalink/preview", query_string={"ID": TAU_CETI})
    assert again.data.endswith(b"kept")
    kept[0].unlink()


def test_the_derivation_is_a_spectrum_votable_of_the_reconstruction(client, stilts, tmp_path):
    response = client.get("/datalink/reconstruction", query_string={"ID": TAU_CETI})
    assert response.status_code == 200
    document = tmp_path / "reconstruction.xml"
    document.write_bytes(response.data)
    spectrum = read_votable_spectrum(document)
    table = parse_single_table(document).array
    assert len(spectrum.flux) == len(table) > 100
    good = ~table["masked"]
    assert np.corrcoef(table["flux"][good], table["observed"][good])[0, 1] > 0.9
    assert votlint(stilts, response.data, tmp_path) == ""


def test_the_documentation_is_the_model_card(client, archive):
    _, rows = _links(client, TAU_CETI)
    (documentation,) = [r for r in rows if r["semantics"] == "#documentation"]
    card = client.get(documentation["access_url"].removeprefix("http://localhost")).get_json()
    assert card["model_id"] == archive["model_dir"].name
    assert client.get("/datalink/models/none-0000").status_code == 404


def test_the_terms_page_explains_each_custom_term(client):
    _, rows = _links(client, TAU_CETI)
    custom = [r["semantics"] for r in rows if not r["semantics"].startswith("#")]
    page = client.get("/datalink/terms").data.decode()
    assert custom and all(f'id="{term.split("#")[1]}"' in page for term in custom)


def test_capabilities_declare_datalink_and_the_landing_page_links_to_it(client):
    capabilities = client.get("/tap/capabilities").data.decode()
    assert 'standardID="ivo://ivoa.net/std/DataLink#links-1.1"' in capabilities
    assert "/datalink/links</accessURL>" in capabilities
    assert "/datalink/" in client.get("/tap/").data.decode()


# --- counterparts and a table without a model ---------------------------------------------------

@pytest.fixture(scope="module")
def harps_nights(tmp_path_factory) -> Path:
    """A HARPS archive of one star seen on three nights (copies of the fixture with later MJDs),
    not embedded."""
    from vo_ml.resources import config_file, load_yaml

    folder = tmp_path_factory.mktemp("nights")
    sources = folder / "sources"
    sources.mkdir()
    for night in range(3):
        with fits.open(HARPS_CUT) as hdus:
            hdus[0].header["MJD-OBS"] += night
            hdus.writeto(sources / f"night{night}.fits")
    config = load_yaml(config_file("harps"))
    config["grid"].update(start=3790.0, stop=3970.0, pixels=2000)
    (folder / "harps.yaml").write_text(yaml.safe_dump(config))
    db = folder / "harps.duckdb"
    ingested = vo_ml("ingest", sources, "--db", db, "--config", folder / "harps.yaml", cwd=folder)
    assert ingested.returncode == 0 and "3 ingested" in ingested.stdout, ingested.stderr
    return db


def test_other_spectra_of_the_target_are_counterparts(harps_nights):
    from vo_ml.service import create_app

    client = create_app({"ARCHIVE_DB": str(harps_nights)}).test_client()
    listed = client.get("/tap/sync", query_string={
        "LANG": "ADQL", "RESPONSEFORMAT": "csv",
        "QUERY": "SELECT obs_publisher_did FROM harps.spectra ORDER BY obs_publisher_did"})
    dids = [line.strip('"') for line in listed.data.decode().split()[1:]]
    assert len(dids) == 3
    _, rows = _links(client, dids[0])
    counterparts = [r for r in rows if r["semantics"] == "#counterpart"]
    assert sorted(r["access_url"].split("ID=")[1] for r in counterparts) == sorted(
        requests.utils.quote(d, safe="") for d in dids[1:])
    assert all(r["content_type"] == LINKS_MIME for r in counterparts)
    assert {r["semantics"] for r in rows} == {"#this", "#counterpart"}


# --- why similar ------------------------------------------------------------------------------

NEIGHBOUR = "ivo://vo-ml.example/miles?m0019"


def test_why_splits_the_distance_into_named_windows(client):
    response = client.get("/datalink/why", query_string={"ID": TAU_CETI, "REF": NEIGHBOUR})
    assert response.status_code == 200, response.data
    document = parse(io.BytesIO(response.data))
    table = document.get_first_table()
    params = {p.name: p.value for p in table.params}
    assert float(params["completeness_error"]) < 0.01 and float(params["distance"]) > 0
    rows = table.to_table(use_names_over_ids=True)
    assert list(rows["share"]) == sorted(rows["share"], reverse=True)
    assert set(rows["deeper"]) <= {"ID", "REF", "equal"}
    assert {"H beta (Lick)", "Mg b", "other"} <= set(rows["window"])


def test_why_draws_both_spectra_over_the_attribution_strip(client):
    response = client.get("/datalink/why", query_string={
        "ID": TAU_CETI, "REF": NEIGHBOUR, "RESPONSEFORMAT": "image/png"})
    assert response.mimetype == "image/png" and response.data.startswith(PNG_MAGIC)


def test_why_compares_an_archive_spectrum_with_an_upload(client):
    upload = next((Path(__file__).parent / "data" / "miles_held_out").glob("*.fits"))
    response = client.post("/datalink/why", data={
        "ID": TAU_CETI, "SPECTRUM": (io.BytesIO(upload.read_bytes()), upload.name)},
        content_type="multipart/form-data")
    assert response.status_code == 200, response.data
    params = {p.name: p.value for p in parse(io.BytesIO(response.data)).get_first_table().params}
    assert params["REF"] == upload.name


@pytest.mark.parametrize("data, status, named", [
    ({"ID": TAU_CETI}, 400, "REF"),
    ({"ID": TAU_CETI, "REF": "nobody"}, 404, "nobody"),
    ({"ID": TAU_CETI, "SPECTRUM": (io.BytesIO(b"not a spectrum"), "x.fits")}, 400, "SPECTRUM"),
    ({"ID": TAU_CETI, "REF": NEIGHBOUR, "RESPONSEFORMAT": "text/csv"}, 400, "RESPONSEFORMAT"),
])
def test_why_refuses_bad_inputs_naming_them(client, data, status, named):
    response = client.post("/datalink/why", data=data, content_type="multipart/form-data")
    assert response.status_code == status and named.encode() in response.data
