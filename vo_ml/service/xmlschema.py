"""Validation of the service's XML documents against the IVOA and OAI schemas it ships
(``vo_ml/service/schemas``, with their provenance and licences), without the network.

One lxml schema imports every namespace's schema, so a document that mixes them (an OAI-PMH
response holding ``ri:Resource`` records with ``xsi:type="tr:TableAccess"`` capabilities) is
checked whole, its ``xsi:type`` extensions included.
"""

from __future__ import annotations

import functools
from pathlib import Path

from lxml import etree

__all__ = ["SCHEMAS", "CATALOG", "problems", "schema_in"]

SCHEMAS = Path(__file__).with_name("schemas")
#: Namespace -> the schema file that defines it.
CATALOG = {
    "http://www.openarchives.org/OAI/2.0/": "OAI-PMH.xsd",
    "http://www.openarchives.org/OAI/2.0/oai_dc/": "oai_dc.xsd",
    "http://purl.org/dc/elements/1.1/": "simpledc20021212.xsd",
    "http://www.ivoa.net/xml/RegistryInterface/v1.0": "RegistryInterface-v1.0.xsd",
    "http://www.ivoa.net/xml/VOResource/v1.0": "VOResource-v1.1.xsd",
    "http://www.ivoa.net/xml/VODataService/v1.1": "VODataService-v1.2.xsd",
    "http://www.ivoa.net/xml/VORegistry/v1.0": "VORegistry-v1.1.xsd",
    "http://www.ivoa.net/xml/TAPRegExt/v1.0": "TAPRegExt-v1.0.xsd",
    "http://www.ivoa.net/xml/SSA/v1.1": "SSA-v1.2.xsd",
    "http://www.ivoa.net/xml/VOSICapabilities/v1.0": "VOSICapabilities-v1.0.xsd",
    "http://www.ivoa.net/xml/VOSITables/v1.0": "VOSITables-v1.1.xsd",
    "http://www.ivoa.net/xml/STC/stc-v1.30.xsd": "stc-v1.30.xsd",
    "http://www.w3.org/XML/1998/namespace": "xml.xsd",
    "http://www.w3.org/1999/xlink": "xlink.xsd",
}


@functools.cache
def schema_in(folder: Path = SCHEMAS) -> etree.XMLSchema:
    """One schema of every namespace in :data:`CATALOG`, its files read from ``folder`` (the
    package's own by default)."""
    xs = "http://www.w3.org/2001/XMLSchema"
    driver = etree.Element(f"{{{xs}}}schema", nsmap={"xs": xs},
                           targetNamespace="urn:x-vo-ml:all-schemas")
    for namespace, file in CATALOG.items():
        etree.SubElement(driver, f"{{{xs}}}import", namespace=namespace, schemaLocation=file)
    document = etree.fromstring(etree.tostring(driver), base_url=f"{folder.as_uri()}/")
    return etree.XMLSchema(document)


def problems(document: bytes | etree._Element) -> list[str]:
    """Every schema violation of ``document``, each with its line; empty when it is valid."""
    tree = etree.fromstring(document) if isinstance(document, bytes) else document
    schema = schema_in()
    if schema.validate(tree):
        return []
    return [f"line {error.line}: {error.message}" for error in schema.error_log]
