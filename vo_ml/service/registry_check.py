"""The checks the Registry of Registries makes of a publishing registry before full registries
harvest it, run by the operator on their own service (``vo-ml registry --check``) before they
ask for it to be registered.

The checks go through the app's own OAI-PMH endpoint, as the validator does over HTTP: every
verb's answer against the shipped schemas, Identify's base URL and Registry record, the managed
authorities and their records, and every record's capabilities, interfaces and dates. Warnings name
what validates but should change before publishing: a default curation value, or a base URL no
harvester can reach.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlencode, urlsplit

from flask import Flask
from lxml import etree

from vo_ml.service.oai import MANAGED_SET, METADATA_FORMATS, OAI
from vo_ml.service.registry import OAI_PATH, RI, RegistryConfig, parse_stamp
from vo_ml.service.xmldoc import XSI
from vo_ml.service.xmlschema import problems

__all__ = ["Report", "check_registry", "check_records"]

#: Verbs a harvester and the validator send, each to be answered without an OAI error.
LEGAL_REQUESTS = (
    {"verb": "Identify"}, {"verb": "ListMetadataFormats"}, {"verb": "ListSets"},
    *({"verb": verb, "metadataPrefix": prefix} for verb in ("ListIdentifiers", "ListRecords")
      for prefix in METADATA_FORMATS),
    {"verb": "ListRecords", "metadataPrefix": "ivo_vor", "set": MANAGED_SET},
)
#: Requests the validator sends to see the protocol's errors, and the error each must get.
ILLEGAL_REQUESTS = (
    ({"verb": "Nonsense"}, "badVerb"),
    ({"verb": "ListRecords"}, "badArgument"),
    ({"verb": "ListRecords", "metadataPrefix": "ivo_vor", "from": "yesterday"}, "badArgument"),
    ({"verb": "ListRecords", "metadataPrefix": "nonsense"}, "cannotDisseminateFormat"),
    ({"verb": "GetRecord", "metadataPrefix": "ivo_vor", "identifier": "ivo://nowhere.invalid/x"},
     "idDoesNotExist"),
    ({"verb": "ListRecords", "metadataPrefix": "ivo_vor", "from": "2999-01-01"},
     "noRecordsMatch"),
    ({"verb": "ListRecords", "resumptionToken": "nonsense"}, "badResumptionToken"),
)


@dataclass
class Report:
    """What the checks found: errors stop a registration, warnings should be read."""

    checked: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"checked: {line}" for line in self.checked]
        lines += [f"ERROR: {line}" for line in self.errors]
        lines += [f"warning: {line}" for line in self.warnings]
        verdict = "the registry is ready to be harvested" if not self.errors else \
            f"{len(self.errors)} error(s): fix them before registering"
        return "\n".join([*lines, verdict])


def check_registry(app: Flask, root: str) -> Report:
    """Every check of the registry at the public ``root`` URL, through ``app``'s endpoint."""
    report = Report()
    client = app.test_client()
    endpoint = f"{root}{OAI_PATH}"
    parts = urlsplit(root)

    def ask(arguments: dict[str, str], expected: str | None = None) -> etree._Element | None:
        """The valid answer to ``arguments``, an error recorded unless it is ``expected``."""
        response = client.get(f"{OAI_PATH}?{urlencode(arguments)}",
                              base_url=f"{parts.scheme}://{parts.netloc}")
        found = problems(response.data)
        if response.status_code != 200 or found:
            report.errors.append(f"{arguments}: HTTP {response.status_code}, not schema-valid: "
                                 f"{found[:1]}")
            return None
        document = etree.fromstring(response.data)
        code = next((e.get("code") for e in document.iter(f"{{{OAI}}}error")), None)
        if code != expected:
            report.errors.append(f"{arguments}: answered with {code or 'no error'}, "
                                 f"not {expected or 'without an error'}")
        return document

    documents = {str(request): ask(request) for request in LEGAL_REQUESTS}
    report.checked.append(f"{len(LEGAL_REQUESTS)} legal requests validate, none an OAI error "
                          "(first pages)")
    for request, code in ILLEGAL_REQUESTS:
        ask(request, code)
    report.checked.append(f"{len(ILLEGAL_REQUESTS)} illegal requests get their OAI errors")
    identify = documents[str(LEGAL_REQUESTS[0])]
    if identify is not None:
        _check_identify(identify, endpoint, report)
    resources = _harvest(ask)
    check_records(resources, report)
    _check_sets(documents[str(LEGAL_REQUESTS[2])], report)
    _warn(app.extensions["vo_ml_registry"], root, report)
    return report


def _harvest(ask: Callable[[dict[str, str]], etree._Element | None]) -> dict[str, etree._Element]:
    """Every active record (ivo_vor), following resumption tokens."""
    resources, arguments = {}, {"verb": "ListRecords", "metadataPrefix": "ivo_vor"}
    while True:
        document = ask(arguments)
        if document is None:
            return resources
        for record in document.iter(f"{{{OAI}}}record"):
            resource = record.find(f"{{{OAI}}}metadata/{{{RI}}}Resource")
            if resource is not None:
                header = record.findtext(f"{{{OAI}}}header/{{{OAI}}}identifier")
                resources[header] = resource
        token = document.findtext(f".//{{{OAI}}}resumptionToken")
        if not token:
            return resources
        arguments = {"verb": "ListRecords", "resumptionToken": token}


def _check_identify(identify: etree._Element, endpoint: str, report: Report) -> None:
    base = identify.findtext(f".//{{{OAI}}}baseURL")
    if base != endpoint:
        report.errors.append(f"Identify's baseURL {base} is not the endpoint {endpoint}")
    registry = identify.find(f".//{{{OAI}}}description/{{{RI}}}Resource")
    if registry is None or registry.get(f"{{{XSI}}}type") != "vg:Registry":
        report.errors.append("Identify holds no vg:Registry record")
        return
    harvest = registry.find("capability[@standardID='ivo://ivoa.net/std/Registry']/interface")
    if harvest is None or harvest.findtext("accessURL") != endpoint:
        report.errors.append(f"the Registry record's OAI-PMH interface is not {endpoint}")
    report.checked.append(f"Identify: baseURL {base}, holding the Registry record "
                          f"{registry.findtext('identifier')}")


def check_records(resources: dict[str, etree._Element], report: Report) -> None:
    """The records' own checks: a Registry record, an Authority record for each managed
    authority, and each record's identifier, authority, capabilities and dates."""
    now = datetime.now(UTC)
    managed = {a.text for r in resources.values() for a in r.findall("managedAuthority")}
    kinds = {r.get(f"{{{XSI}}}type") for r in resources.values()}
    if "vg:Registry" not in kinds:
        report.errors.append("ListRecords holds no vg:Registry record")
    for authority in managed:
        if resources.get(f"ivo://{authority}") is None:
            report.errors.append(f"no vg:Authority record for the managed authority {authority}")
    for header, resource in resources.items():
        _check_record(header, resource, managed, now, report)
    report.checked.append(f"{len(resources)} records: identifiers, authorities {sorted(managed)}, "
                          "capabilities and interfaces, dates")


def _check_record(header: str, resource: etree._Element, managed: set[str], now: datetime,
                  report: Report) -> None:
    identifier = resource.findtext("identifier") or ""
    if header != identifier:
        report.errors.append(f"header identifier {header} is not the record's {identifier}")
    if identifier.removeprefix("ivo://").split("/")[0] not in managed:
        report.errors.append(f"{identifier} is not under an authority this registry manages")
    kind = resource.get(f"{{{XSI}}}type")
    capabilities = resource.findall("capability")
    if kind not in ("vg:Authority",) and not capabilities:
        report.errors.append(f"{identifier} ({kind}) is a service without a capability")
    for capability in capabilities:
        if not capability.findall("interface"):
            report.errors.append(f"{identifier}: capability {capability.get('standardID')} "
                                 "has no interface")
    for name in ("created", "updated", "status"):
        if not resource.get(name):
            report.errors.append(f"{identifier} has no {name}")
    for name in ("created", "updated"):
        stamp = resource.get(name)
        if stamp and parse_stamp(stamp) > now:
            report.errors.append(f"{identifier}: {name} {stamp} is in the future")


def _check_sets(document: etree._Element | None, report: Report) -> None:
    if document is None:
        return
    specs = [s.text for s in document.iter(f"{{{OAI}}}setSpec")]
    if MANAGED_SET not in specs:
        report.errors.append(f"ListSets lacks {MANAGED_SET}")
    others = [s for s in specs if s.startswith("ivo_") and s != MANAGED_SET]
    if others:
        report.errors.append(f"sets {others} start with ivo_ but only {MANAGED_SET} may")
    report.checked.append(f"sets: {', '.join(specs)}")


def _warn(config: RegistryConfig, root: str, report: Report) -> None:
    for key in config.defaults_in_place():
        report.warnings.append(f"{key} is the default; set it in the registry file")
    host = urlsplit(root).hostname or ""
    domain = ".".join(host.split(".")[-2:])
    if host in ("localhost", "127.0.0.1", "::1") or host.endswith((".example", ".invalid")) \
            or domain in ("example.org", "example.com", "example.net"):
        report.warnings.append(f"the service root {root} cannot be reached by harvesters; set "
                               "SERVICE_BASE_URL to the public URL")
