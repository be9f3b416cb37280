"""The publishing registry: ``/oai.xml`` (OAI-PMH 2.0, IVOA Registry Interfaces 1.1) and its
VOResource records, through the Flask app of a copy of the session archive with an operator's
registry file.

Every response is validated against the IVOA and OAI XML schemas the package ships
(``vo_ml/service/schemas``), and the checks the Registry of Registries' validator makes before it
harvests a new publishing registry are written out here one by one.
"""

from __future__ import annotations

import base64
import json
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from conftest import DATA, copy_archive, vo_ml
from lxml import etree

from vo_ml.service import create_app
from vo_ml.service.registry_check import Report, check_records
from vo_ml.service.settings import SettingsError
from vo_ml.service.xmlschema import SCHEMAS, problems, schema_in

OAI = "http://www.openarchives.org/OAI/2.0/"
RI = "http://www.ivoa.net/xml/RegistryInterface/v1.0"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
ROOT = "https://vo.example.org/ml"
ENDPOINT = f"{ROOT}/oai.xml"
AUTHORITY = "archive.example.org"
#: The operator's registry file, as TOML values by key.
REGISTRY = {
    "authority": f'"{AUTHORITY}"',
    "publisher": '"Example Observatory Archive"',
    "contact_name": '"Archive help desk"',
    "contact_email": '"archive@example.org"',
    "created": "2026-11-01T12:00:00Z",
    "subjects": '["spectroscopy", "stellar-astronomy"]',
    "description": '"MILES stellar spectra with latent vectors from the vo_ml encoder."',
}
IDENTIFIERS = [f"ivo://{AUTHORITY}", f"ivo://{AUTHORITY}/registry", f"ivo://{AUTHORITY}/ssa",
               f"ivo://{AUTHORITY}/tap"]


def write_registry_file(folder, changes: dict[str, str] | None = None):
    """The operator's registry file in ``folder``: :data:`REGISTRY` with ``changes``."""
    toml = "".join(f"{key} = {value}\n" for key, value in {**REGISTRY, **(changes or {})}.items())
    (folder / "registry.toml").write_text(toml)
    return folder / "registry.toml"


def registry_app(db, folder, changes: dict[str, str] | None = None, **settings):
    write_registry_file(folder, changes)
    return create_app({"ARCHIVE_DB": str(db), "REGISTRY_CONFIG": str(folder / "registry.toml"),
                       "SERVICE_BASE_URL": ROOT, "OAI_PAGE_SIZE": 3, **settings})


@pytest.fixture(scope="module")
def archive_copy(archive, tmp_path_factory):
    folder = tmp_path_factory.mktemp("registry")
    write_registry_file(folder)
    return copy_archive(archive, folder), folder


@pytest.fixture(scope="module")
def oai(archive_copy):
    db, folder = archive_copy
    client = registry_app(db, folder).test_client()

    def ask(query: str = "", method: str = "GET") -> etree._Element:
        response = client.get(f"/oai.xml?{query}") if method == "GET" else \
            client.post("/oai.xml", data=query, content_type="application/x-www-form-urlencoded")
        assert response.status_code == 200 and response.mimetype == "text/xml"
        assert problems(response.data) == []
        return etree.fromstring(response.data)
    return ask


def _error(document: etree._Element) -> str | None:
    error = document.find(f"{{{OAI}}}error")
    return None if error is None else error.get("code")


def _pages(oai, verb: str, arguments: str = "") -> Iterator[etree._Element]:
    """Every response to a request, following resumption tokens as a harvester does."""
    document = oai(f"verb={verb}{arguments}")
    while True:
        yield document
        token = document.findtext(f".//{{{OAI}}}resumptionToken")
        if not token:
            return
        document = oai(f"verb={verb}&resumptionToken={token}")


def _harvest(oai, verb: str = "ListRecords", prefix: str = "ivo_vor",
             extra: str = "") -> list[etree._Element]:
    """Every item of a list."""
    tag = "record" if verb == "ListRecords" else "header"
    return [item for page in _pages(oai, verb, f"&metadataPrefix={prefix}{extra}")
            for item in page.find(f"{{{OAI}}}{verb}").findall(f"{{{OAI}}}{tag}")]


def _resources(oai) -> dict[str, etree._Element]:
    return {r.findtext("identifier"): r
            for r in (record.find(f"{{{OAI}}}metadata/{{{RI}}}Resource")
                      for record in _harvest(oai)) if r is not None}


# --- the RofR validator's checks ----------------------------------------------------------------

@pytest.mark.parametrize("query", [
    "verb=Identify", "verb=ListMetadataFormats", "verb=ListSets",
    f"verb=ListMetadataFormats&identifier=ivo://{AUTHORITY}/tap",
    "verb=ListIdentifiers&metadataPrefix=ivo_vor", "verb=ListIdentifiers&metadataPrefix=oai_dc",
    "verb=ListRecords&metadataPrefix=ivo_vor", "verb=ListRecords&metadataPrefix=oai_dc",
    "verb=ListRecords&metadataPrefix=ivo_vor&set=ivo_managed",
    "verb=ListRecords&metadataPrefix=ivo_vor&from=2000-01-01&until=2999-12-31",
    *(f"verb=GetRecord&metadataPrefix={prefix}&identifier={identifier}"
      for prefix in ("ivo_vor", "oai_dc") for identifier in IDENTIFIERS)])
def test_legal_requests_validate_without_errors(oai, query):
    document = oai(query)
    assert _error(document) is None
    request = document.find(f"{{{OAI}}}request")
    assert request.text == ENDPOINT
    assert dict(request.attrib) == dict(pair.split("=", 1) for pair in query.split("&"))


def test_post_answers_as_get(oai):
    assert etree.tostring(oai("verb=ListSets", "POST").find(f"{{{OAI}}}ListSets")) == \
        etree.tostring(oai("verb=ListSets").find(f"{{{OAI}}}ListSets"))


def test_identify_is_the_registry(oai):
    identify = oai("verb=Identify").find(f"{{{OAI}}}Identify")
    assert identify.findtext(f"{{{OAI}}}baseURL") == ENDPOINT
    assert identify.findtext(f"{{{OAI}}}protocolVersion") == "2.0"
    assert identify.findtext(f"{{{OAI}}}adminEmail") == "archive@example.org"
    assert identify.findtext(f"{{{OAI}}}deletedRecord") == "persistent"
    assert identify.findtext(f"{{{OAI}}}granularity") == "YYYY-MM-DDThh:mm:ssZ"
    registry = identify.find(f"{{{OAI}}}description/{{{RI}}}Resource")
    assert registry.get(f"{{{XSI}}}type") == "vg:Registry"
    assert registry.findtext("identifier") == f"ivo://{AUTHORITY}/registry"
    assert registry.findtext("full") == "false"
    assert [a.text for a in registry.findall("managedAuthority")] == [AUTHORITY]
    harvest = registry.find("capability[@standardID='ivo://ivoa.net/std/Registry']")
    assert harvest.get(f"{{{XSI}}}type") == "vg:Harvest"
    interface = harvest.find("interface")
    assert interface.get(f"{{{XSI}}}type") == "vg:OAIHTTP" and interface.get("role") == "std"
    assert interface.findtext("accessURL") == ENDPOINT
    assert _stamp(identify.findtext(f"{{{OAI}}}earliestDatestamp")) <= datetime.now(UTC)


def test_formats_and_the_one_managed_set(oai):
    formats = oai("verb=ListMetadataFormats").find(f"{{{OAI}}}ListMetadataFormats")
    prefixes = {f.findtext(f"{{{OAI}}}metadataPrefix"): f.findtext(f"{{{OAI}}}metadataNamespace")
                for f in formats}
    assert prefixes == {"ivo_vor": RI, "oai_dc": "http://www.openarchives.org/OAI/2.0/oai_dc/"}
    sets = [s.findtext(f"{{{OAI}}}setSpec") for s in oai("verb=ListSets").iter(f"{{{OAI}}}set")]
    assert sets == ["ivo_managed"]


def test_records_pass_the_registry_of_registries_checks(oai):
    resources = _resources(oai)
    assert sorted(resources) == IDENTIFIERS
    headers = {h.findtext(f"{{{OAI}}}identifier"): h for h in _harvest(oai, "ListIdentifiers")}
    assert sorted(headers) == IDENTIFIERS
    types = {identifier: r.get(f"{{{XSI}}}type") for identifier, r in resources.items()}
    assert types == {IDENTIFIERS[0]: "vg:Authority", IDENTIFIERS[1]: "vg:Registry",
                     IDENTIFIERS[2]: "vs:CatalogService", IDENTIFIERS[3]: "vs:CatalogService"}
    managed = {a.text for r in resources.values() for a in r.findall("managedAuthority")}
    authorities = {r.findtext("identifier") for r in resources.values()
                   if r.get(f"{{{XSI}}}type") == "vg:Authority"}
    assert authorities == {f"ivo://{a}" for a in managed}
    now = datetime.now(UTC)
    for identifier, resource in resources.items():
        assert identifier.removeprefix("ivo://").split("/")[0] in managed
        assert resource.get("status") == "active"
        assert _stamp(resource.get("created")) <= _stamp(resource.get("updated")) <= now
        datestamp = headers[identifier].findtext(f"{{{OAI}}}datestamp")
        assert datestamp == resource.get("updated")
        assert headers[identifier].findtext(f"{{{OAI}}}setSpec") == "ivo_managed"
        assert resource.findtext("curation/publisher") == "Example Observatory Archive"
        assert resource.findtext("curation/contact/email") == "archive@example.org"
        assert [s.text for s in resource.findall("content/subject")] == \
            ["spectroscopy", "stellar-astronomy"]
        for capability in resource.findall("capability"):
            assert capability.findall("interface"), (identifier, capability.get("standardID"))
    assert resources[IDENTIFIERS[0]].get("created") == "2026-11-01T12:00:00Z"
    for service in IDENTIFIERS[1:]:
        assert resources[service].findall("capability"), service


def test_services_declare_tap_ssa_datalink_and_the_ml_functions(oai):
    resources = _resources(oai)
    tap, ssa = resources[f"ivo://{AUTHORITY}/tap"], resources[f"ivo://{AUTHORITY}/ssa"]
    standards = {c.get("standardID") for c in tap.findall("capability")}
    assert {"ivo://ivoa.net/std/TAP", "ivo://ivoa.net/std/DataLink#links-1.1",
            "ivo://ivoa.net/std/VOSI#tables"} <= standards
    forms = [f.text for f in tap.iterfind(".//languageFeatures/feature/form")]
    assert any(form.startswith("ml_distance(") for form in forms)
    assert any(form.startswith("ml_in_polygon(") for form in forms)
    assert tap.find("capability/outputFormat/mime") is not None
    assert tap.find("capability/uploadMethod") is not None
    assert tap.findtext("capability/outputLimit/hard") is not None
    spectra = tap.find("tableset/schema/table[name='miles.spectra']")
    assert int(spectra.findtext("nrows")) > 0
    assert spectra.find("column[name='embedding']") is not None
    capability = ssa.find("capability[@standardID='ivo://ivoa.net/std/SSA']")
    assert capability.get(f"{{{XSI}}}type") == "ssa:SimpleSpectralAccess"
    assert capability.findtext("complianceLevel") == "query"
    assert capability.findtext("dataSource") == "pointed"
    assert capability.findtext("supportedFrame") == "ICRS"
    assert capability.findtext("interface/accessURL") == f"{ROOT}/ssa"
    assert ssa.find("capability[@standardID='ivo://ivoa.net/std/DataLink#links-1.1']") is not None
    assert [t.findtext("name") for t in ssa.iterfind("tableset/schema/table")] == ["miles.spectra"]


def test_vosi_capabilities_and_the_records_say_the_same(archive_copy, oai):
    db, folder = archive_copy
    client = registry_app(db, folder).test_client()
    resources = _resources(oai)
    for path, identifier in (("/tap/capabilities", "tap"), ("/ssa/capabilities", "ssa")):
        response = client.get(path)
        assert problems(response.data) == []
        served = etree.fromstring(response.data).findall("capability")
        recorded = resources[f"ivo://{AUTHORITY}/{identifier}"].findall("capability")
        assert [_canonical(c) for c in served] == [_canonical(c) for c in recorded]


def test_the_tap_page_links_to_the_registry(archive_copy):
    db, folder = archive_copy
    client = registry_app(db, folder).test_client()
    link = f'href="{ENDPOINT}?verb=Identify"'
    assert link in client.get("/tap").text
    assert client.get("/oai.xml?verb=Identify").status_code == 200


#: TAPRegExt 1.0 as the ivoa-std repository and the shared conformance folder have it, before
#: its Erratum 1 (tests/data/README.md).
TAPREGEXT_BEFORE_ERRATUM = DATA / "xsd" / "TAPRegExt-v1.0-before-erratum.xsd"


def test_before_the_tapregext_erratum_only_its_attribute_differs(oai, tmp_path):
    """Against the schemas with TAPRegExt as it was before Erratum 1 (vo_ml/service/schemas/
    README.md), ObsCore 1.1's own identifier in dataModel is the one difference."""
    folder = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, folder)
    shutil.copy(TAPREGEXT_BEFORE_ERRATUM, folder / "TAPRegExt-v1.0.xsd")
    schema = schema_in(folder)
    differences = set()
    for verb, arguments in (("Identify", ""), ("ListRecords", "&metadataPrefix=ivo_vor"),
                            ("ListRecords", "&metadataPrefix=oai_dc"), ("ListSets", ""),
                            ("ListMetadataFormats", "")):
        for document in _pages(oai, verb, arguments):
            schema.validate(document)
            differences |= {(e.path.rsplit("/", 1)[-1], "ObsCore#core-1.1" in e.message)
                            for e in schema.error_log}
    assert differences == {("dataModel", True)}


def test_oai_dc_says_what_the_record_says(oai):
    dc_ns = "http://purl.org/dc/elements/1.1/"
    record = oai(f"verb=GetRecord&metadataPrefix=oai_dc&identifier=ivo://{AUTHORITY}/tap")
    dc = record.find(f".//{{{OAI}}}metadata/*")
    assert dc.findtext(f"{{{dc_ns}}}title") == "vo_ml latent-similarity TAP service"
    assert [i.text for i in dc.findall(f"{{{dc_ns}}}identifier")] == \
        [f"ivo://{AUTHORITY}/tap", f"{ROOT}/tap/"]
    assert dc.findtext(f"{{{dc_ns}}}publisher") == "Example Observatory Archive"


# --- lists, pages and dates -------------------------------------------------------------------

def test_resumption_tokens_page_through_every_record_once(oai):
    first = oai("verb=ListIdentifiers&metadataPrefix=ivo_vor").find(f"{{{OAI}}}ListIdentifiers")
    token = first.find(f"{{{OAI}}}resumptionToken")
    assert len(first.findall(f"{{{OAI}}}header")) == 3
    assert token.text and token.get("completeListSize") == "4" and token.get("cursor") == "0"
    last = oai(f"verb=ListIdentifiers&resumptionToken={token.text}").find(
        f"{{{OAI}}}ListIdentifiers")
    end = last.find(f"{{{OAI}}}resumptionToken")
    assert end.text is None and end.get("cursor") == "3" and end.get("completeListSize") == "4"
    headers = first.findall(f"{{{OAI}}}header") + last.findall(f"{{{OAI}}}header")
    assert [h.findtext(f"{{{OAI}}}identifier") for h in headers] == IDENTIFIERS


def test_from_and_until_select_by_datestamp(oai):
    stamps = {h.findtext(f"{{{OAI}}}identifier"): h.findtext(f"{{{OAI}}}datestamp")
              for h in _harvest(oai, "ListIdentifiers")}
    latest = max(stamps.values())
    at_latest = [i for i, s in sorted(stamps.items()) if s == latest]
    found = _harvest(oai, "ListIdentifiers", extra=f"&from={latest}")
    assert [h.findtext(f"{{{OAI}}}identifier") for h in found] == at_latest
    assert _harvest(oai, "ListIdentifiers", extra=f"&until={latest[:10]}") != []
    assert _error(oai("verb=ListIdentifiers&metadataPrefix=ivo_vor&until=2000-01-01")) == \
        "noRecordsMatch"


# --- errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("query", "code"), [
    ("", "badVerb"),
    ("verb=Frobnicate", "badVerb"),
    ("verb=Identify&verb=ListSets", "badVerb"),
    ("verb=Identify&verb=Identify", "badVerb"),
    ("verb=Identify&metadataPrefix=ivo_vor", "badArgument"),
    ("verb=ListRecords", "badArgument"),
    ("verb=GetRecord&metadataPrefix=ivo_vor", "badArgument"),
    ("verb=ListRecords&metadataPrefix=ivo_vor&metadataPrefix=oai_dc", "badArgument"),
    ("verb=ListRecords&metadataPrefix=ivo_vor&from=yesterday", "badArgument"),
    ("verb=ListRecords&metadataPrefix=ivo_vor&from=2026-02-30", "badArgument"),
    ("verb=ListRecords&metadataPrefix=ivo_vor&from=%D9%A2%D9%A0%D9%A2%D9%A0-01-01",
     "badArgument"),
    ("verb=ListRecords&metadataPrefix=ivo_vor&from=2026-01-01T00:00:00.5Z", "badArgument"),
    ("verb=ListRecords&metadataPrefix=ivo_vor&from=2026-01-01&until=2026-12-31T00:00:00Z",
     "badArgument"),
    ("verb=ListRecords&metadataPrefix=ivo_vor&from=2026-02-01&until=2026-01-01", "badArgument"),
    ("verb=ListRecords&metadataPrefix=ivo_vor&resumptionToken=abc", "badArgument"),
    ("verb=ListRecords&metadataPrefix=marc21", "cannotDisseminateFormat"),
    (f"verb=GetRecord&metadataPrefix=marc21&identifier=ivo://{AUTHORITY}/tap",
     "cannotDisseminateFormat"),
    ("verb=GetRecord&metadataPrefix=ivo_vor&identifier=ivo://elsewhere.org/tap",
     "idDoesNotExist"),
    ("verb=GetRecord&metadataPrefix=marc21&identifier=ivo://elsewhere.org/tap",
     "idDoesNotExist"),
    ("verb=ListMetadataFormats&identifier=ivo://elsewhere.org/tap", "idDoesNotExist"),
    ("verb=ListRecords&metadataPrefix=ivo_vor&set=ivo_standard", "noRecordsMatch"),
    ("verb=ListRecords&metadataPrefix=ivo_vor&until=1999-12-31", "noRecordsMatch"),
    ("verb=ListRecords&resumptionToken=not-a-token", "badResumptionToken"),
    ("verb=ListSets&resumptionToken=anything", "badResumptionToken"),
])
def test_errors_are_oai_errors_in_a_valid_document(oai, query, code):
    document = oai(query)
    assert _error(document) == code
    assert document.find(f"{{{OAI}}}error").text
    request = document.find(f"{{{OAI}}}request")
    assert request.text == ENDPOINT
    if code in ("badVerb", "badArgument"):
        assert dict(request.attrib) == {}


def _token(*fields: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(fields).encode()).decode()


@pytest.mark.parametrize("fields", [
    ("ListRecords", "marc21", [f"ivo://{AUTHORITY}/tap"], 1),
    ("ListRecords", ["ivo_vor"], [f"ivo://{AUTHORITY}/tap"], 1),
    ("ListRecords", "ivo_vor", f"ivo://{AUTHORITY}/tap", 1),
    ("ListRecords", "ivo_vor", [5], 1),
    ("ListRecords", "ivo_vor", [f"ivo://{AUTHORITY}/tap"], "1"),
    ("ListRecords", "ivo_vor", [], 0),
    ("ListRecords", "ivo_vor", [f"ivo://{AUTHORITY}/gone"], 1),
    ("ListRecords", "ivo_vor", None, 2999),
    ("ListRecords",),
])
def test_a_forged_token_is_a_bad_resumption_token(oai, fields):
    assert _error(oai(f"verb=ListRecords&resumptionToken={_token(*fields)}")) == \
        "badResumptionToken"


def test_a_token_of_one_list_does_not_continue_another(oai):
    token = oai("verb=ListIdentifiers&metadataPrefix=ivo_vor").find(
        f".//{{{OAI}}}resumptionToken").text
    assert _error(oai(f"verb=ListRecords&resumptionToken={token}")) == "badResumptionToken"


def test_a_harvest_goes_on_across_a_change_of_the_records(archive, tmp_path):
    """The operator edits the registry file and restarts while a harvest is half done: the
    next page holds the rest of the list, as the records now are."""
    db = copy_archive(archive, tmp_path)
    first = registry_app(db, tmp_path).test_client()
    page = etree.fromstring(first.get("/oai.xml?verb=ListRecords&metadataPrefix=ivo_vor").data)
    token = page.find(f".//{{{OAI}}}resumptionToken").text
    time.sleep(1.1)
    changed = registry_app(db, tmp_path, {"description": '"Edited."'}).test_client()
    response = changed.get(f"/oai.xml?verb=ListRecords&resumptionToken={token}")
    assert problems(response.data) == []
    rest = etree.fromstring(response.data).find(f"{{{OAI}}}ListRecords")
    assert [r.findtext(f"{{{OAI}}}header/{{{OAI}}}identifier")
            for r in rest.findall(f"{{{OAI}}}record")] == IDENTIFIERS[3:]
    assert rest.findtext(f".//{{{RI}}}Resource/content/description") == "Edited."
    end = rest.find(f"{{{OAI}}}resumptionToken")
    assert (end.text, end.get("completeListSize"), end.get("cursor")) == (None, "4", "3")
    stamps = [h.findtext(f"{{{OAI}}}datestamp") for h in page.iter(f"{{{OAI}}}header")]
    assert rest.findtext(f".//{{{OAI}}}datestamp") > max(stamps)


def test_a_service_moved_to_a_new_url_is_harvested_again(archive, tmp_path):
    db = copy_archive(archive, tmp_path)

    def stamps(root: str) -> dict[str, str]:
        client = registry_app(db, tmp_path, SERVICE_BASE_URL=root, OAI_PAGE_SIZE=10).test_client()
        listed = etree.fromstring(client.get(
            "/oai.xml?verb=ListIdentifiers&metadataPrefix=ivo_vor").data)
        return {h.findtext(f"{{{OAI}}}identifier"): h.findtext(f"{{{OAI}}}datestamp")
                for h in listed.iter(f"{{{OAI}}}header")}

    before = stamps("http://old.example.org/ml")
    time.sleep(1.1)
    after = stamps("https://new.example.org/ml")
    assert sorted(i for i in after if after[i] > before[i]) == IDENTIFIERS  # every referenceURL
    assert stamps("https://new.example.org/ml") == after


# --- records that change and go -----------------------------------------------------------------

def test_a_withdrawn_service_stays_as_a_deleted_record(archive, tmp_path):
    db = copy_archive(archive, tmp_path)
    registry_app(db, tmp_path).test_client().get("/oai.xml?verb=Identify")
    client = registry_app(db, tmp_path, {"services": '["tap"]'}).test_client()
    ssa = f"ivo://{AUTHORITY}/ssa"
    response = client.get(f"/oai.xml?verb=GetRecord&metadataPrefix=ivo_vor&identifier={ssa}")
    assert problems(response.data) == []
    record = etree.fromstring(response.data).find(f".//{{{OAI}}}record")
    assert record.find(f"{{{OAI}}}header").get("status") == "deleted"
    assert record.find(f"{{{OAI}}}metadata") is None
    listed = etree.fromstring(client.get(
        "/oai.xml?verb=ListIdentifiers&metadataPrefix=oai_dc").data)
    deleted = [h.findtext(f"{{{OAI}}}identifier") for h in listed.iter(f"{{{OAI}}}header")
               if h.get("status") == "deleted"]
    assert deleted == [ssa]
    assert client.get("/ssa/capabilities").status_code == 200


@pytest.mark.parametrize(("changes", "named"), [
    ({"colour": '"blue"'}, "colour"),
    ({"status": '"retired"'}, "status"),
    ({"created": "2999-01-01T00:00:00Z"}, "future"),
    ({"created": "2026-11-01"}, "created"),
    ({"services": '["tap", "sia"]'}, "sia"),
    ({"authority": '"example.org/sub"'}, "authority"),
    ({"subjects": "[]"}, "subjects"),
    ({"publisher_id": '"https://example.org/us"'}, "publisher_id"),
    ({"publisher": "unquoted words"}, "registry.toml"),
])
def test_a_wrong_registry_file_stops_the_service_naming_the_key(archive, tmp_path, changes, named):
    db = copy_archive(archive, tmp_path)
    with pytest.raises(SettingsError, match=named) as raised:
        registry_app(db, tmp_path, changes)
    assert "registry.toml" in str(raised.value)


# --- the operator's command ---------------------------------------------------------------------

def test_vo_ml_registry_checks_and_prints_the_records(archive_copy):
    db, folder = archive_copy
    toml = folder / "registry.toml"
    checked = vo_ml("registry", "--db", db, "--base-url", "https://archive.example.net/ml/",
                    "--config", toml, "--check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Identify: baseURL https://archive.example.net/ml/oai.xml" in checked.stdout
    assert "4 records" in checked.stdout and "ERROR" not in checked.stdout
    assert "7 illegal requests get their OAI errors" in checked.stdout
    assert "the registry is ready to be harvested" in checked.stdout
    printed = vo_ml("registry", "--db", db, "--base-url", "https://archive.example.net/ml",
                    "--config", toml, "--identifier", f"ivo://{AUTHORITY}/tap")
    assert printed.returncode == 0 and problems(printed.stdout.encode()) == []
    resources = etree.fromstring(printed.stdout.encode()).findall(f"{{{RI}}}Resource")
    assert [r.findtext("identifier") for r in resources] == [f"ivo://{AUTHORITY}/tap"]
    assert resources[0].findtext("capability/interface/accessURL") == \
        "https://archive.example.net/ml/tap"
    every = vo_ml("registry", "--db", db, "--base-url", "https://archive.example.net/ml",
                  "--config", toml)
    assert every.returncode == 0 and problems(every.stdout.encode()) == []
    assert [r.findtext("identifier") for r in etree.fromstring(every.stdout.encode())] == \
        IDENTIFIERS
    unknown = vo_ml("registry", "--db", db, "--base-url", "https://archive.example.net/ml",
                    "--config", toml, "--identifier", "ivo://nowhere.invalid/x")
    assert unknown.returncode != 0 and "ivo://nowhere.invalid/x" in unknown.stderr


def test_vo_ml_registry_warns_of_defaults_and_names_a_wrong_file(archive_copy, tmp_path):
    db, _ = archive_copy
    defaults = vo_ml("registry", "--db", db, "--base-url", "http://127.0.0.1:8000", "--config",
                     tmp_path / "none.toml", "--check")
    assert defaults.returncode == 0
    assert "warning: contact_email is the default" in defaults.stdout
    assert "cannot be reached by harvesters" in defaults.stdout
    (tmp_path / "wrong.toml").write_text('status = "retired"\n')
    wrong = vo_ml("registry", "--db", db, "--base-url", "http://127.0.0.1:8000", "--config",
                  tmp_path / "wrong.toml")
    assert wrong.returncode != 0 and "wrong.toml" in wrong.stderr and "status" in wrong.stderr


def test_the_check_finds_what_the_validator_would_refuse():
    records = {
        f"ivo://{AUTHORITY}/registry": f"""<ri:Resource xmlns:ri="{RI}" xmlns:xsi="{XSI}"
            xsi:type="vg:Registry" created="2026-01-01T00:00:00Z" updated="2026-01-01T00:00:00Z"
            status="active"><identifier>ivo://{AUTHORITY}/registry</identifier>
            <managedAuthority>{AUTHORITY}</managedAuthority></ri:Resource>""",
        f"ivo://{AUTHORITY}/tap": f"""<ri:Resource xmlns:ri="{RI}" xmlns:xsi="{XSI}"
            xsi:type="vs:CatalogService" created="2999-01-01T00:00:00Z" status="active">
            <identifier>ivo://elsewhere.org/tap</identifier>
            <capability standardID="ivo://ivoa.net/std/TAP"/></ri:Resource>""",
    }
    report = Report()
    check_records({k: etree.fromstring(v) for k, v in records.items()}, report)
    assert report.errors == [
        f"no vg:Authority record for the managed authority {AUTHORITY}",
        f"ivo://{AUTHORITY}/registry (vg:Registry) is a service without a capability",
        f"header identifier ivo://{AUTHORITY}/tap is not the record's ivo://elsewhere.org/tap",
        "ivo://elsewhere.org/tap is not under an authority this registry manages",
        "ivo://elsewhere.org/tap: capability ivo://ivoa.net/std/TAP has no interface",
        "ivo://elsewhere.org/tap has no updated",
        "ivo://elsewhere.org/tap: created 2999-01-01T00:00:00Z is in the future",
    ]


def _canonical(element: etree._Element) -> bytes:
    """The element as canonical XML without the indentation of the document it came from."""
    parser = etree.XMLParser(remove_blank_text=True)
    bare = etree.fromstring(etree.tostring(element), parser)
    return etree.tostring(bare, method="c14n", exclusive=True)


def _stamp(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
