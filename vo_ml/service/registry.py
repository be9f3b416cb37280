"""The service's records for the VO registries: VOResource 1.1 documents of its naming authority,
its publishing registry, its TAP service and its SSA service, as the OAI-PMH endpoint
(:mod:`vo_ml.service.oai`) and ``vo-ml registry`` hand them out.

What only the operator knows (publisher, contact, subjects, description, creation date, status)
comes from a TOML file (:class:`RegistryConfig`, ``REGISTRY_CONFIG``); what the service can do comes
from the code that writes its VOSI documents (:mod:`vo_ml.service.capabilities`,
:func:`vo_ml.service.vosi.add_schemas`), so the two cannot disagree.

A record's ``updated`` date, which is also its OAI datestamp, is the moment the record's content
last changed, kept in a small SQLite ledger with the async jobs (JOBS_DIR): each time the records
are read, their content (without the dates, for a root URL that stands for any) is hashed and
compared with the ledger's, so a new embedding (the column descriptions name the model) or more
rows (``nrows``) move the records of the services publishing them, and an incremental harvest
finds them. A record that is no longer published stays in the ledger as deleted (OAI-PMH
``deletedRecord`` persistent).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import sqlite3
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path

from flask import Flask, current_app
from lxml import etree

from vo_ml.archive.references import did_authority
from vo_ml.archive.tap_schema import Schema, Table
from vo_ml.service.capabilities import NSMAP, add_ssa_capabilities, add_tap_capabilities
from vo_ml.service.context import archive
from vo_ml.service.dali import DaliError
from vo_ml.service.jobs import sqlite_transaction
from vo_ml.service.settings import SettingsError, settings
from vo_ml.service.ssa import ssa_table
from vo_ml.service.vosi import add_schemas
from vo_ml.service.xmldoc import sub, xsi

__all__ = ["RI", "OAI_PATH", "SECOND", "RegistryConfig", "Record", "install", "records",
           "published_document", "utc_stamp", "parse_stamp"]

RI = "http://www.ivoa.net/xml/RegistryInterface/v1.0"
#: Where the OAI-PMH endpoint is served, as DaCHS serves its own.
OAI_PATH = "/oai.xml"
REGISTRY_STANDARD = "ivo://ivoa.net/std/Registry"
#: The root URL records are hashed with, so the URL a harvester asked by changes nothing.
ANY_ROOT = "urn:x-vo-ml:service-root"
STATUSES = ("active", "inactive")
#: A registry reference, as VOResource's IdentifierURI admits it (ASCII only).
IVOID = re.compile(r"ivo://[\w\-.!~*'()+=]{3,}(/[\w\-.!~*'()+=]+)*", re.ASCII)
#: Dates to the second, VOResource's and OAI-PMH's granularity.
SECOND = "%Y-%m-%dT%H:%M:%SZ"
SERVICES = ("tap", "ssa")


def utc_stamp(moment: datetime) -> str:
    """A UTC timestamp to the second, as VOResource and OAI-PMH write them."""
    return moment.astimezone(UTC).strftime(SECOND)


@dataclass(frozen=True)
class RegistryConfig:
    """What the records say of the service that the service cannot know itself.

    Each field is a key of the TOML file. ``authority`` defaults to the authority of the
    archive's publisher DIDs; the defaults of the rest make records that validate, and ``vo-ml
    registry --check`` names each default still in place, which an operator should replace
    before publishing."""

    authority: str = ""
    #: The archive's name, which the titles of the authority, registry and SSA records begin
    #: with (the TAP record has the service's own title, SERVICE_TITLE).
    title: str = "vo_ml spectra archive"
    publisher: str = "vo_ml archive operator"
    publisher_id: str | None = None
    contact_name: str = "Archive operator"
    contact_email: str = "operator@example.org"
    subjects: tuple[str, ...] = ("spectroscopy", "stellar-astronomy", "astronomy-data-analysis")
    description: str = ("Spectra of an astronomy archive with machine-learnt latent vectors, "
                        "physical tags and anomaly scores; ADQL finds the spectra most like a "
                        "given one (ml_distance), and SSA finds spectra by position, band and "
                        "time.")
    reference_url: str | None = None
    created: datetime | None = None
    status: str = "active"
    wavebands: tuple[str, ...] = ("Optical",)
    services: tuple[str, ...] = SERVICES

    @classmethod
    def load(cls, path: Path, default_authority: str) -> RegistryConfig:
        """The file at ``path`` (defaults alone if there is none); SettingsError names a bad key."""
        try:
            values = tomllib.loads(path.read_text()) if path.exists() else {}
        except tomllib.TOMLDecodeError as error:
            raise SettingsError(f"{path} is not TOML: {error}") from None
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SettingsError(f"{path}: unknown key {unknown[0]!r}; the keys are "
                                f"{', '.join(sorted(known))}")
        for key in ("subjects", "wavebands", "services"):
            if key in values:
                values[key] = tuple(values[key])
        values.setdefault("authority", default_authority)
        config = cls(**values)
        config.check(path)
        return config

    def check(self, path: Path) -> None:
        """SettingsError, naming ``path`` and the key, for a value the records cannot carry."""
        for key, value, allowed in (("status", (self.status,), STATUSES),
                                    ("services", self.services, SERVICES)):
            wrong = [v for v in value if v not in allowed]
            if wrong:
                raise SettingsError(f"{path}: {key} {wrong[0]!r} is not one of "
                                    f"{', '.join(allowed)}")
        if self.created is not None:
            if not isinstance(self.created, datetime) or self.created.tzinfo is None:
                raise SettingsError(f"{path}: created must be a UTC date and time, such as "
                                    "2026-11-24T00:00:00Z")
            if self.created > datetime.now(UTC):
                raise SettingsError(f"{path}: created {utc_stamp(self.created)} is in the future")
        if not self.authority or "/" in self.authority:
            raise SettingsError(f"{path}: authority {self.authority!r} is not an IVOA authority "
                                "such as vo-ml.example")
        if self.publisher_id is not None and not IVOID.fullmatch(self.publisher_id):
            raise SettingsError(f"{path}: publisher_id {self.publisher_id!r} is not an IVOA "
                                "registry identifier such as ivo://example.org/org")
        if not self.subjects:
            raise SettingsError(f"{path}: subjects is empty; VOResource needs at least one")

    def defaults_in_place(self) -> list[str]:
        """The keys still at a default an operator should replace before publishing."""
        placeholders = ("title", "publisher", "contact_name", "contact_email")
        return [key for key in placeholders
                if getattr(self, key) == next(f.default for f in fields(self) if f.name == key)]


@dataclass(frozen=True)
class Record:
    """One resource the registry publishes; ``resource`` is None for a deleted one."""

    identifier: str
    datestamp: datetime
    resource: etree._Element | None

    @property
    def deleted(self) -> bool:
        return self.resource is None


@dataclass(frozen=True)
class _Resource:
    """A record before its dates are known: its identifier and how to write it for a root URL."""

    identifier: str
    title: str
    xsi_type: str
    write: Callable[[etree._Element, str], None]


def install(app: Flask) -> None:
    """Read the app's registry configuration (REGISTRY_CONFIG), stopping the service at start
    if it is wrong, and bring the ledger up to date with what the archive now publishes, so the
    dates of records changed while the service was down are those of its start."""
    with app.app_context():
        app.extensions["vo_ml_registry"] = RegistryConfig.load(Path(settings().registry_file),
                                                               _default_authority())
        app.extensions["vo_ml_ledger"] = _Ledger(_ledger_path())
        _synced(app.extensions["vo_ml_registry"], _resources(app.extensions["vo_ml_registry"]))


def _default_authority() -> str:
    for table in archive().schema.tables.values():
        if table.holds_spectra:
            rows = archive().backend.lookup(
                f"SELECT obs_publisher_did FROM {table.sql_name} "
                "WHERE obs_publisher_did IS NOT NULL LIMIT 1", ())
            if rows:
                return did_authority(rows[0][0])
    return "vo-ml.example"


def records(root: str) -> list[Record]:
    """Every record of the registry, deleted ones too, written for the public ``root`` URL;
    the ledger learns of any change first."""
    config: RegistryConfig = current_app.extensions["vo_ml_registry"]
    resources = _resources(config)
    dates = _synced(config, resources)
    built = {r.identifier: r for r in resources}
    return [Record(identifier, updated,
                   _resource_element(config, built[identifier], root, created, updated)
                   if identifier in built else None)
            for identifier, (created, updated) in sorted(dates.items())]


def _synced(config: RegistryConfig,
            resources: list[_Resource]) -> dict[str, tuple[datetime, datetime]]:
    """The (created, updated) dates of every record ever published, once the ledger has
    compared ``resources`` with what it knows."""
    ledger: _Ledger = current_app.extensions["vo_ml_ledger"]
    return ledger.sync({r.identifier: _fingerprint(config, r) for r in resources})


def published_document(root: str, identifier: str | None = None) -> str:
    """The active records (or the one named ``identifier``) for the public ``root`` URL, as
    one ``ri:VOResources`` document: what an operator reads before publishing."""
    chosen = [r.resource for r in records(root) if not r.deleted
              and identifier in (None, r.identifier)]
    if not chosen:
        raise ValueError(f"the registry publishes no record {identifier}; leave out "
                         "--identifier to see them all")
    document = etree.Element(f"{{{RI}}}VOResources", nsmap={"ri": RI, **NSMAP},
                             attrib={"from": "1", "numberReturned": str(len(chosen)),
                                     "more": "false"})
    document.extend(chosen)
    return etree.tostring(document, xml_declaration=True, encoding="UTF-8",
                          pretty_print=True).decode()


def _ledger_path() -> Path:
    """The ledger lives with the async jobs (JOBS_DIR): the service's own state, writable even
    when the archive is not, and shared by every process serving the archive, so all of them
    give a record the same dates."""
    folder = Path(settings().jobs_folder)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "registry.sqlite3"


def _fingerprint(config: RegistryConfig, resource: _Resource) -> str:
    """The hash of what ``resource`` says, for the configured public URL: a service moved to a
    new URL is harvested again; without one, the URL each request came by changes nothing."""
    root = settings().service_base_url or ANY_ROOT
    element = _resource_element(config, resource, root.rstrip("/"), None, None)
    return hashlib.sha256(etree.tostring(element, method="c14n")).hexdigest()


def _resources(config: RegistryConfig) -> list[_Resource]:
    """The records now published: the authority, the registry, and the services asked for."""
    authority = f"ivo://{config.authority}"
    found = [
        _Resource(authority, f"{config.title}: the naming authority {config.authority}",
                  "vg:Authority", lambda element, root: _managing_org(element, config)),
        _Resource(f"{authority}/registry", f"{config.title}: publishing registry", "vg:Registry",
                  lambda element, root: _registry(element, root, config)),
    ]
    if "tap" in config.services:
        found.append(_Resource(f"{authority}/tap", settings().service_title, "vs:CatalogService",
                               lambda element, root: _tap(element, root, config)))
    ssa = _ssa_table()
    if "ssa" in config.services and ssa is not None:
        found.append(_Resource(f"{authority}/ssa", f"{config.title}: spectra by SSA",
                               "vs:CatalogService",
                               lambda element, root: _ssa(element, root, config, ssa)))
    return found


def _ssa_table() -> Table | None:
    try:
        return ssa_table()
    except DaliError:
        return None


def _resource_element(config: RegistryConfig, resource: _Resource, root: str,
                      created: datetime | None, updated: datetime | None) -> etree._Element:
    """``ri:Resource`` of ``resource``; without dates, the form its fingerprint is taken of."""
    element = etree.Element(f"{{{RI}}}Resource", nsmap={"ri": RI, **NSMAP},
                            status=config.status, version="1.1")
    xsi(element, "type", resource.xsi_type)
    if updated is not None:
        element.set("created", utc_stamp(min(config.created or created, updated)))
        element.set("updated", utc_stamp(updated))
    sub(element, "title", resource.title)
    sub(element, "identifier", resource.identifier)
    _curation(element, config)
    _content(element, config, root, resource)
    resource.write(element, root)
    return element


def _curation(element: etree._Element, config: RegistryConfig) -> None:
    curation = sub(element, "curation")
    sub(curation, "publisher", config.publisher, **{"ivo-id": config.publisher_id})
    contact = sub(curation, "contact")
    sub(contact, "name", config.contact_name)
    sub(contact, "email", config.contact_email)


def _content(element: etree._Element, config: RegistryConfig, root: str,
             resource: _Resource) -> None:
    content = sub(element, "content")
    for subject in config.subjects:
        sub(content, "subject", subject)
    sub(content, "description", config.description)
    sub(content, "referenceURL", config.reference_url or f"{root}/tap/")
    if resource.xsi_type == "vs:CatalogService":
        sub(content, "type", "archive")
    sub(content, "contentLevel", "research")


def _managing_org(element: etree._Element, config: RegistryConfig) -> None:
    sub(element, "managingOrg", config.publisher, **{"ivo-id": config.publisher_id})


def _registry(element: etree._Element, root: str, config: RegistryConfig) -> None:
    """A publishing registry (full=false) harvested over OAI-PMH, managing one authority."""
    capability = xsi(sub(element, "capability", standardID=REGISTRY_STANDARD), "type",
                     "vg:Harvest")
    interface = xsi(sub(capability, "interface", role="std", version="1.0"), "type",
                    "vg:OAIHTTP")
    sub(interface, "accessURL", f"{root}{OAI_PATH}", use="base")
    sub(capability, "maxRecords", settings().oai_page_size)
    sub(element, "full", "false")
    sub(element, "managedAuthority", config.authority)


def _tap(element: etree._Element, root: str, config: RegistryConfig) -> None:
    add_tap_capabilities(element, root)
    _coverage(element, config)
    add_schemas(sub(element, "tableset"), _counted(archive().schema.schemas))


def _ssa(element: etree._Element, root: str, config: RegistryConfig, table: Table) -> None:
    add_ssa_capabilities(element, root)
    _coverage(element, config)
    schema = next(s for s in archive().schema.schemas if table in s.tables)
    add_schemas(sub(element, "tableset"), _counted([Schema(schema.name, schema.description,
                                                          (table,))]))


def _coverage(element: etree._Element, config: RegistryConfig) -> None:
    coverage = sub(element, "coverage")
    for waveband in config.wavebands:
        sub(coverage, "waveband", waveband)


def _counted(schemas: list[Schema]) -> list[Schema]:
    """``schemas`` with the row count (VODataService ``nrows``) of each table of spectra, which a
    registry user reads to judge it and which moves the record's date when rows are added."""
    backend = archive().backend
    def counted(table: Table) -> Table:
        if not table.holds_spectra:
            return table
        return replace(table, nrows=backend.lookup(f"SELECT count(*) FROM {table.sql_name}", ())[0][0])

    return [replace(schema, tables=tuple(counted(t) for t in schema.tables)) for schema in schemas]


class _Ledger:
    """When each record was first published and when its content last changed, in SQLite
    (:func:`~vo_ml.service.jobs.sqlite_transaction`: a crash leaves the last committed state,
    readers never wait, and service processes take turns to write)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS records (identifier TEXT PRIMARY KEY, "
                       "fingerprint TEXT, created TEXT NOT NULL, updated TEXT NOT NULL)")
            db.commit()

    def sync(self, fingerprints: dict[str, str]) -> dict[str, tuple[datetime, datetime]]:
        """Record ``fingerprints`` (identifier -> content hash) as now published; every record
        ever published, with its (created, updated) dates. A record missing from
        ``fingerprints`` is deleted: its fingerprint becomes NULL, its updated date now.

        Most calls change nothing and only read; a change is written under the write lock, and
        stamped with the time the lock was taken, so no response given before it carries a
        later date."""
        with sqlite_transaction(self.path, write=False) as db:
            rows = db.execute("SELECT identifier, fingerprint, created, updated FROM records")
            known = {row[0]: row[1:] for row in rows.fetchall()}
        if _changes(known, fingerprints):
            with sqlite_transaction(self.path) as db:
                now = utc_stamp(datetime.now(UTC))
                rows = db.execute("SELECT identifier, fingerprint, created, updated FROM records")
                known = {row[0]: row[1:] for row in rows.fetchall()}
                for identifier, fingerprint in _changes(known, fingerprints):
                    db.execute("INSERT INTO records VALUES (?, ?, ?, ?) ON CONFLICT (identifier) "
                               "DO UPDATE SET fingerprint = excluded.fingerprint, "
                               "updated = excluded.updated", (identifier, fingerprint, now, now))
                    known[identifier] = (fingerprint, known.get(identifier, (None, now))[1], now)
        return {identifier: (parse_stamp(created), parse_stamp(updated))
                for identifier, (_, created, updated) in known.items()}


def _changes(known: dict[str, tuple], fingerprints: dict[str, str]) -> list[tuple[str, str | None]]:
    """(identifier, new fingerprint or None for deleted) of each record whose content changed."""
    published = [(i, f) for i, f in fingerprints.items()
                 if i not in known or known[i][0] != f]
    withdrawn = [(i, None) for i, (f, *_) in known.items()
                 if i not in fingerprints and f is not None]
    return published + withdrawn


def parse_stamp(stamp: str) -> datetime:
    """The moment a :func:`utc_stamp` text names."""
    return datetime.strptime(stamp, SECOND).replace(tzinfo=UTC)
