"""A full registry's view of the service: `vo-ml serve` harvested over HTTP by Sickle (an OAI-PMH
harvester from PyPI) through resumption tokens, then again incrementally after the archive was
re-embedded with a new model; and pyvo reading the harvested TAP record's capabilities."""

from __future__ import annotations

import io
import shutil
import time
from datetime import UTC, datetime

import pytest
import requests
from conftest import TABLE, copy_archive, free_port, quick_model_config, serving
from lxml import etree
from pyvo.io.vosi import parse_capabilities
from sickle import Sickle
from sickle.oaiexceptions import NoRecordsMatch

from vo_ml.service.xmlschema import problems

OAI = "http://www.openarchives.org/OAI/2.0/"
RI = "http://www.ivoa.net/xml/RegistryInterface/v1.0"
VOSI_CAPABILITIES = "http://www.ivoa.net/xml/VOSICapabilities/v1.0"
AUTHORITY = "vo-ml.example"
#: Fewer records a page than the registry has, so a harvest needs resumption tokens.
PAGE = 2


def _harvest(root: str, **arguments: str) -> dict[str, etree._Element]:
    """identifier -> ri:Resource of every record Sickle harvests; each one schema-valid."""
    harvested = {}
    for record in Sickle(f"{root}/oai.xml").ListRecords(metadataPrefix="ivo_vor", **arguments):
        resource = record.xml.find(f".//{{{OAI}}}metadata/{{{RI}}}Resource")
        assert problems(etree.tostring(resource)) == []
        assert record.header.identifier == resource.findtext("identifier")
        harvested[record.header.identifier] = resource
    return harvested


def _content(resource: etree._Element) -> bytes:
    """What a record says, without the date it was last updated."""
    copy = etree.fromstring(etree.tostring(resource))
    del copy.attrib["updated"]
    return etree.tostring(copy, method="c14n")


def _response_date(root: str) -> str:
    answer = requests.get(f"{root}/oai.xml", params={"verb": "Identify"}, timeout=30)
    return etree.fromstring(answer.content).findtext(f"{{{OAI}}}responseDate")


def _seconds(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


@pytest.fixture(scope="module")
def harvests(archive, tmp_path_factory) -> dict:
    """A harvest, a re-embedding with a new model, a full and an incremental harvest; the
    service restarts on the same port, as an operator's would at the same URL."""
    from vo_ml.pipeline import embed, store_path, train_model

    folder = tmp_path_factory.mktemp("harvested")
    db = copy_archive(archive, folder)
    shutil.copytree(store_path(archive["db"], TABLE), store_path(db, TABLE))
    settings, port = {"OAI_PAGE_SIZE": str(PAGE)}, free_port()
    with serving(db, settings, port) as root:
        first = _harvest(root)
        latest = max(_seconds(r.get("updated")) for r in first.values())
        time.sleep(max(0.0, latest + 1 - time.time()))
        since = _response_date(root)
    config = quick_model_config()
    config["training"].update(epochs=3, patience=3)
    model = train_model(db, TABLE, config, folder / "models")
    assert embed(db, TABLE, model)
    with serving(db, settings, port) as root:
        again = _harvest(root)
        incremental = _harvest(root, **{"from": since})
        with pytest.raises(NoRecordsMatch):
            _harvest(root, until="2000-01-01")
    return {"first": first, "again": again, "incremental": incremental, "model": model.name}


def test_every_record_is_harvested_through_resumption_tokens(harvests):
    identifiers = sorted(harvests["first"])
    assert len(identifiers) > PAGE
    assert identifiers == [f"ivo://{AUTHORITY}", f"ivo://{AUTHORITY}/registry",
                           f"ivo://{AUTHORITY}/ssa", f"ivo://{AUTHORITY}/tap"]


def test_an_incremental_harvest_after_a_new_embedding_returns_the_changed_records(harvests):
    first, again = harvests["first"], harvests["again"]
    assert sorted(again) == sorted(first)
    changed = {i for i in again if _content(again[i]) != _content(first[i])}
    assert changed == {f"ivo://{AUTHORITY}/tap", f"ivo://{AUTHORITY}/ssa"}
    assert set(harvests["incremental"]) == changed
    for identifier in changed:
        assert harvests["model"] in etree.tostring(again[identifier]).decode()
        assert again[identifier].get("updated") > first[identifier].get("updated")
        assert again[identifier].get("created") == first[identifier].get("created")


def test_pyvo_reads_the_harvested_tap_capabilities_and_the_ml_functions(harvests):
    record = harvests["again"][f"ivo://{AUTHORITY}/tap"]
    prefixes = {prefix: uri for prefix, uri in record.nsmap.items() if prefix}
    document = etree.Element(f"{{{VOSI_CAPABILITIES}}}capabilities",
                             nsmap={"vosi": VOSI_CAPABILITIES, **prefixes})
    for capability in record.findall("capability"):
        document.append(etree.fromstring(etree.tostring(capability)))
    capabilities = parse_capabilities(io.BytesIO(etree.tostring(document)))
    tap = next(c for c in capabilities if c.standardid == "ivo://ivoa.net/std/TAP")
    forms = [feature.form for language in tap.languages
             for features in language.languagefeaturelists
             if features.type.endswith("#features-udf") for feature in features]
    assert any(form.startswith("ml_distance(") for form in forms)
    assert any(form.startswith("ml_cosine_distance(") for form in forms)
    assert {c.standardid for c in capabilities} >= {"ivo://ivoa.net/std/TAP",
                                                    "ivo://ivoa.net/std/DataLink#links-1.1"}
