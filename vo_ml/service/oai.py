"""The publishing registry's OAI-PMH 2.0 endpoint (IVOA Registry Interfaces 1.1), ``/oai.xml``.

Full registries (the RofR, EuroVO, the EOSC ones) harvest the records of
:mod:`vo_ml.service.registry` here: ``ivo_vor`` (one ``ri:Resource`` a record) and ``oai_dc``; the
one set ``ivo_managed``; datestamps to the second; deleted records kept for good. Lists come in
pages of OAI_PAGE_SIZE records; a resumption token carries the rest of the list its first request
selected (:class:`ListState`). OAI-PMH errors are answered with HTTP 200, as the protocol asks
(its section 3.6): the error is in the document.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from flask import Blueprint, Response, request
from lxml import etree

from vo_ml.service.context import base_url
from vo_ml.service.registry import OAI_PATH, RI, SECOND, Record, records, utc_stamp
from vo_ml.service.settings import settings
from vo_ml.service.xmldoc import XSI, sub, xml_response

__all__ = ["bp", "OAI", "METADATA_FORMATS", "MANAGED_SET"]

bp = Blueprint("oai", __name__)

OAI = "http://www.openarchives.org/OAI/2.0/"
OAI_DC = "http://www.openarchives.org/OAI/2.0/oai_dc/"
DC = "http://purl.org/dc/elements/1.1/"
MANAGED_SET = "ivo_managed"
#: metadataPrefix -> (schema, namespace), as ListMetadataFormats declares them.
METADATA_FORMATS = {
    "ivo_vor": ("http://www.ivoa.net/xml/RegistryInterface/RegistryInterface-v1.0.xsd", RI),
    "oai_dc": ("http://www.openarchives.org/OAI/2.0/oai_dc.xsd", OAI_DC),
}
DAY = "%Y-%m-%d"
_LIST_ARGUMENTS = ({"metadataPrefix"}, {"from", "until", "set"})
#: verb -> (required arguments, optional ones); a resumption token, where a verb takes one,
#: comes alone.
VERBS = {
    "Identify": (set(), set()),
    "ListMetadataFormats": (set(), {"identifier"}),
    "ListSets": (set(), set()),
    "ListIdentifiers": _LIST_ARGUMENTS,
    "ListRecords": _LIST_ARGUMENTS,
    "GetRecord": ({"identifier", "metadataPrefix"}, set()),
}
RESUMABLE = ("ListSets", "ListIdentifiers", "ListRecords")


class OaiError(Exception):
    """An OAI-PMH error: its code (``badArgument``...) and a message saying what to change."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ListState:
    """Where a list stands: its verb and format, the identifiers still to send, and its size.

    The list is fixed by its first request and the token carries what is left of it (the
    registry holds a handful of records): a record that changes during a harvest is sent as it
    is when its page is asked for, and no page comes back empty or shifted."""

    verb: str
    prefix: str
    remaining: tuple[str, ...]
    size: int

    def token(self) -> str:
        fields = [self.verb, self.prefix, list(self.remaining), self.size]
        return base64.urlsafe_b64encode(json.dumps(fields).encode()).decode().rstrip("=")

    @classmethod
    def resumed(cls, verb: str, token: str) -> ListState:
        try:
            told, prefix, remaining, size = json.loads(
                base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            valid = isinstance(told, str) and isinstance(prefix, str) \
                and prefix in METADATA_FORMATS and isinstance(remaining, list) \
                and all(isinstance(i, str) for i in remaining) and type(size) is int \
                and 0 < len(remaining) <= size
        except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
            valid = False
        if not valid:
            raise OaiError("badResumptionToken", f"resumptionToken {token!r} is not one this "
                           "repository issued; start the list again without it")
        if told != verb:
            raise OaiError("badResumptionToken", f"resumptionToken {token!r} continues a "
                           f"{told} list, not {verb}")
        return cls(told, prefix, tuple(remaining), size)


@bp.route(OAI_PATH, methods=["GET", "POST"])
def endpoint() -> Response:
    """One OAI-PMH request, answered with its document or its OAI-PMH error. The response
    date is taken last, so it is never earlier than a datestamp the response carries."""
    root = _document()
    arguments = [*request.args.items(multi=True), *request.form.items(multi=True)]
    verb, given, error = None, {}, None
    try:
        verb, given = _checked(arguments)
        root.append(HANDLERS[verb](given))
    except OaiError as raised:
        error = raised
        sub(root, f"{{{OAI}}}error", str(error), code=error.code)
    if error is None or error.code not in ("badVerb", "badArgument"):
        root[1].attrib.update({"verb": verb, **given})
    root[0].text = utc_stamp(datetime.now(UTC))
    return xml_response(root)


def _document() -> etree._Element:
    """The response's envelope, its date to be set. OAI-PMH's namespace has a prefix: as the
    default namespace it would capture the unqualified elements of the VOResource records
    inside. After badVerb or badArgument the request element names no arguments (OAI-PMH
    section 3.2)."""
    root = etree.Element(f"{{{OAI}}}OAI-PMH", nsmap={"oai": OAI, "xsi": XSI})
    root.set(f"{{{XSI}}}schemaLocation", f"{OAI} http://www.openarchives.org/OAI/2.0/OAI-PMH.xsd")
    sub(root, f"{{{OAI}}}responseDate")
    sub(root, f"{{{OAI}}}request", _oai_url())
    return root


def _oai_url() -> str:
    return f"{base_url()}{OAI_PATH}"


def _checked(arguments: Sequence[tuple[str, str]]) -> tuple[str, dict[str, str]]:
    """The verb and its arguments, each given once and all of them legal for the verb."""
    names = [name for name, _ in arguments]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if "verb" in repeated:
        raise OaiError("badVerb", "the verb is given more than once; send one")
    verb = dict(arguments).get("verb")
    if verb not in VERBS:
        raise OaiError("badVerb", f"verb {verb!r} is not an OAI-PMH verb; use one of "
                       f"{', '.join(VERBS)}" if verb else "the request names no verb")
    if repeated:
        raise OaiError("badArgument", f"argument {repeated[0]!r} is given more than once")
    given = {name: value for name, value in arguments if name != "verb"}
    required, optional = VERBS[verb]
    if "resumptionToken" in given and verb in RESUMABLE:
        if len(given) > 1:
            raise OaiError("badArgument", "resumptionToken is an exclusive argument: send it "
                           "with the verb alone")
        return verb, given
    unknown = sorted(set(given) - required - optional)
    if unknown:
        raise OaiError("badArgument", f"{verb} takes no argument {unknown[0]!r}")
    missing = sorted(required - set(given))
    if missing:
        raise OaiError("badArgument", f"{verb} needs the argument {missing[0]!r}")
    return verb, given


# --- the verbs ---------------------------------------------------------------------------------

def _identify(_: dict[str, str]) -> etree._Element:
    published = records(base_url())
    registry = next(r for r in published if not r.deleted
                    and r.resource.get(f"{{{XSI}}}type") == "vg:Registry")
    element = etree.Element(f"{{{OAI}}}Identify")
    for tag, text in (("repositoryName", registry.resource.findtext("title")),
                      ("baseURL", _oai_url()), ("protocolVersion", "2.0"),
                      ("adminEmail", registry.resource.findtext("curation/contact/email")),
                      ("earliestDatestamp", utc_stamp(min(r.datestamp for r in published))),
                      ("deletedRecord", "persistent"), ("granularity", "YYYY-MM-DDThh:mm:ssZ")):
        sub(element, f"{{{OAI}}}{tag}", text)
    sub(element, f"{{{OAI}}}description").append(registry.resource)
    return element


def _list_metadata_formats(given: dict[str, str]) -> etree._Element:
    if "identifier" in given:
        _record(given["identifier"])
    element = etree.Element(f"{{{OAI}}}ListMetadataFormats")
    for prefix, (schema, namespace) in METADATA_FORMATS.items():
        entry = sub(element, f"{{{OAI}}}metadataFormat")
        sub(entry, f"{{{OAI}}}metadataPrefix", prefix)
        sub(entry, f"{{{OAI}}}schema", schema)
        sub(entry, f"{{{OAI}}}metadataNamespace", namespace)
    return element


def _list_sets(given: dict[str, str]) -> etree._Element:
    if "resumptionToken" in given:
        raise OaiError("badResumptionToken", "ListSets is answered in one page; it issues no "
                       "resumption tokens")
    element = etree.Element(f"{{{OAI}}}ListSets")
    entry = sub(element, f"{{{OAI}}}set")
    sub(entry, f"{{{OAI}}}setSpec", MANAGED_SET)
    sub(entry, f"{{{OAI}}}setName", "Resources managed by this publishing registry")
    return element


def _get_record(given: dict[str, str]) -> etree._Element:
    """One record; an unknown identifier is reported before an unknown format, which is
    defined as one the identified item cannot be disseminated in."""
    record = _record(given["identifier"])
    element = etree.Element(f"{{{OAI}}}GetRecord")
    element.append(_record_element(record, _prefix(given["metadataPrefix"])))
    return element


def _list(verb: str) -> Callable[[dict[str, str]], etree._Element]:
    """ListIdentifiers or ListRecords: the next page of the list the request starts or goes on."""
    def handler(given: dict[str, str]) -> etree._Element:
        published = records(base_url())
        if "resumptionToken" in given:
            state = ListState.resumed(verb, given["resumptionToken"])
            by_identifier = {r.identifier: r for r in published}
            pending = [by_identifier[i] for i in state.remaining if i in by_identifier]
            if not pending:
                raise OaiError("badResumptionToken", "the records this token goes on to are "
                               "no longer known; start the list again")
        else:
            pending = _selected(published, given)
            state = ListState(verb, _prefix(given["metadataPrefix"]),
                              tuple(r.identifier for r in pending), len(pending))
        page, rest = pending[:settings().oai_page_size], pending[settings().oai_page_size:]
        element = etree.Element(f"{{{OAI}}}{verb}")
        for record in page:
            element.append(_header(record) if verb == "ListIdentifiers"
                           else _record_element(record, state.prefix))
        if state.size > len(page):
            following = replace(state, remaining=tuple(r.identifier for r in rest))
            sub(element, f"{{{OAI}}}resumptionToken", following.token() if rest else None,
                completeListSize=str(state.size), cursor=str(state.size - len(pending)))
        return element
    return handler


def _selected(published: list[Record], given: dict[str, str]) -> list[Record]:
    """The records a new list request's from, until and set select (OAI-PMH 3.3.1: both dates
    inclusive); noRecordsMatch when there are none."""
    prefix = _prefix(given["metadataPrefix"])
    start, end = _window(given.get("from"), given.get("until"))
    selected = [r for r in published if (start is None or r.datestamp >= start)
                and (end is None or r.datestamp <= end)
                and given.get("set", MANAGED_SET) == MANAGED_SET]
    if not selected:
        raise OaiError("noRecordsMatch", f"no record matches these from, until and set "
                       f"arguments for {prefix}")
    return selected


HANDLERS: dict[str, Callable[[dict[str, str]], etree._Element]] = {
    "Identify": _identify,
    "ListMetadataFormats": _list_metadata_formats,
    "ListSets": _list_sets,
    "ListIdentifiers": _list("ListIdentifiers"),
    "ListRecords": _list("ListRecords"),
    "GetRecord": _get_record,
}


# --- arguments ---------------------------------------------------------------------------------

def _prefix(prefix: str) -> str:
    if prefix not in METADATA_FORMATS:
        raise OaiError("cannotDisseminateFormat", f"metadataPrefix {prefix!r} is not served; "
                       f"use one of {', '.join(METADATA_FORMATS)}")
    return prefix


def _record(identifier: str) -> Record:
    found = next((r for r in records(base_url()) if r.identifier == identifier), None)
    if found is None:
        raise OaiError("idDoesNotExist", f"identifier {identifier!r} is not a record of this "
                       "registry; ListIdentifiers lists them")
    return found


def _window(start: str | None, end: str | None) -> tuple[datetime | None, datetime | None]:
    """``from`` and ``until`` as the first and last second they admit, both inclusive."""
    parsed = {name: _datestamp(name, text) for name, text in (("from", start), ("until", end))
              if text is not None}
    if start and end and len(start) != len(end):
        raise OaiError("badArgument", f"from {start!r} and until {end!r} have different "
                       "granularities; give both as dates or both to the second")
    low = parsed.get("from")
    high = parsed.get("until")
    if high is not None and len(end) == len("YYYY-MM-DD"):
        high += timedelta(days=1, seconds=-1)
    if low is not None and high is not None and low > high:
        raise OaiError("badArgument", f"from {start!r} is later than until {end!r}")
    return low, high


def _datestamp(name: str, text: str) -> datetime:
    for form, pattern in ((DAY, r"[0-9]{4}-[0-9]{2}-[0-9]{2}"),
                          (SECOND, r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")):
        if re.fullmatch(pattern, text):
            try:
                return datetime.strptime(text, form).replace(tzinfo=UTC)
            except ValueError:
                break
    raise OaiError("badArgument", f"{name} {text!r} is not a UTC date (YYYY-MM-DD) or time "
                   "(YYYY-MM-DDThh:mm:ssZ)")




# --- records -----------------------------------------------------------------------------------

def _header(record: Record) -> etree._Element:
    header = etree.Element(f"{{{OAI}}}header")
    if record.deleted:
        header.set("status", "deleted")
    sub(header, f"{{{OAI}}}identifier", record.identifier)
    sub(header, f"{{{OAI}}}datestamp", utc_stamp(record.datestamp))
    sub(header, f"{{{OAI}}}setSpec", MANAGED_SET)
    return header


def _record_element(record: Record, prefix: str) -> etree._Element:
    element = etree.Element(f"{{{OAI}}}record")
    element.append(_header(record))
    if not record.deleted:
        metadata = sub(element, f"{{{OAI}}}metadata")
        metadata.append(record.resource if prefix == "ivo_vor" else _dublin_core(record.resource))
    return element


def _dublin_core(resource: etree._Element) -> etree._Element:
    """The record in simple Dublin Core, read from its VOResource form."""
    dc = etree.Element(f"{{{OAI_DC}}}dc", nsmap={"oai_dc": OAI_DC, "dc": DC, "xsi": XSI})
    dc.set(f"{{{XSI}}}schemaLocation", f"{OAI_DC} http://www.openarchives.org/OAI/2.0/oai_dc.xsd")
    for term, path in (("title", "title"), ("identifier", "identifier"),
                       ("publisher", "curation/publisher"), ("subject", "content/subject"),
                       ("description", "content/description"),
                       ("identifier", "content/referenceURL")):
        for found in resource.findall(path):
            sub(dc, f"{{{DC}}}{term}", found.text)
    sub(dc, f"{{{DC}}}date", resource.get("updated"))
    if resource.find("capability") is not None:
        sub(dc, f"{{{DC}}}type", "Service")
    return dc
