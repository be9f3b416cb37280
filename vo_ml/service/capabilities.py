"""What each service of vo_ml can do, as VOResource capabilities: the one source of the VOSI
``/tap/capabilities`` and ``/ssa/capabilities`` documents and of the registry records that the
OAI-PMH endpoint hands to the VO registries (:mod:`vo_ml.service.registry`).

Every function appends capability elements to a parent that declares :data:`NSMAP`: the
``xsi:type`` values name their types by prefix (``tr:TableAccess``), and a prefix must be in scope
where it is read, which lxml cannot know of a prefix used only inside an attribute's value.
URLs are built from the root URL given, so a record can be written for a configured public URL
outside any request.
"""

from __future__ import annotations

from lxml import etree

from vo_ml import adql
from vo_ml.service.context import archive
from vo_ml.service.datalink import LINKS_MIME
from vo_ml.service.descriptors import LINKS_PATH, LINKS_STANDARD
from vo_ml.service.formats import OUTPUT_FORMATS
from vo_ml.service.settings import settings
from vo_ml.service.xmldoc import XSI, sub, xsi

__all__ = ["NS", "NSMAP", "TAP_STANDARD", "SSA_STANDARD", "add_tap_capabilities",
           "add_ssa_capabilities"]

NS = {
    "vr": "http://www.ivoa.net/xml/VOResource/v1.0",
    "vs": "http://www.ivoa.net/xml/VODataService/v1.1",
    "tr": "http://www.ivoa.net/xml/TAPRegExt/v1.0",
    "ssa": "http://www.ivoa.net/xml/SSA/v1.1",
    "vg": "http://www.ivoa.net/xml/VORegistry/v1.0",
}
#: The prefixes every document holding capabilities declares at its root.
NSMAP = {**NS, "xsi": XSI}
TAP_STANDARD = "ivo://ivoa.net/std/TAP"
SSA_STANDARD = "ivo://ivoa.net/std/SSA"
FEATURES = "ivo://ivoa.net/std/TAPRegExt#"
ADQL_VERSIONS = {"2.0": "ivo://ivoa.net/std/ADQL#v2.0", "2.1": "ivo://ivoa.net/std/ADQL#v2.1"}
#: The ObsCore view's data model (label, ivo-id). The fragment is legal here by TAPRegExt 1.0
#: Erratum 1, which made ``dataModel/@ivo-id`` an ``xs:anyURI`` (see ``schemas/README.md``).
OBSCORE_MODEL = ("ObsCore-1.1", "ivo://ivoa.net/std/ObsCore#core-1.1")
#: SSA 1.1 (section 2.4): the service answers queryData and serves the files it found, without
#: claiming every mandatory field of the SSA data model.
SSA_COMPLIANCE = "query"
#: The largest SIZE (a diameter) ``/ssa`` accepts is 180 degrees: a radius of 90.
SSA_MAX_SEARCH_RADIUS = 90


def add_tap_capabilities(parent: etree._Element, root: str) -> None:
    """TAP 1.1 with its ADQL functions, output formats and limits; its VOSI endpoints, DALI
    examples and DataLink ``{links}``."""
    tap_root = f"{root}/tap"
    _tap_capability(parent, tap_root)
    for name in ("capabilities", "availability", "tables"):
        _vosi_capability(parent, name, f"{tap_root}/{name}")
    examples = sub(parent, "capability", standardID="ivo://ivoa.net/std/DALI#examples")
    browser = xsi(sub(examples, "interface"), "type", "vr:WebBrowser")
    sub(browser, "accessURL", f"{tap_root}/examples", use="full")
    _links_capability(parent, f"{root}{LINKS_PATH}")


def add_ssa_capabilities(parent: etree._Element, root: str) -> None:
    """SSA 1.1 queryData with its limits, its VOSI capabilities and DataLink ``{links}``; where
    the spectra come from (``pointed``, ``survey``...) is the operator's SSA_DATA_SOURCE."""
    limits = settings()
    capability = xsi(sub(parent, "capability", standardID=SSA_STANDARD), "type",
                     "ssa:SimpleSpectralAccess")
    _param_http(capability, f"{root}/ssa", version="1.1")
    sub(capability, "complianceLevel", SSA_COMPLIANCE)
    sub(capability, "dataSource", limits.ssa_data_source)
    sub(capability, "creationType", "archival")
    sub(capability, "supportedFrame", "ICRS")
    sub(capability, "maxSearchRadius", SSA_MAX_SEARCH_RADIUS)
    sub(capability, "maxRecords", limits.tap_maxrec_limit)
    sub(capability, "defaultMaxRecords", limits.tap_maxrec_default)
    sub(sub(capability, "testQuery"), "queryDataCmd", "REQUEST=queryData&MAXREC=1")
    _vosi_capability(parent, "capabilities", f"{root}/ssa/capabilities")
    _links_capability(parent, f"{root}{LINKS_PATH}")


def _vosi_capability(parent: etree._Element, name: str, url: str) -> None:
    capability = sub(parent, "capability", standardID=f"ivo://ivoa.net/std/VOSI#{name}")
    _param_http(capability, url, role=None, use="full")


def _links_capability(parent: etree._Element, url: str) -> None:
    """DataLink 1.1 ``{links}``: GET or POST any number of IDs, a DataLink VOTable back."""
    capability = sub(parent, "capability", standardID=LINKS_STANDARD)
    interface = xsi(sub(capability, "interface", role="std", version="1.1"), "type",
                    "vs:ParamHTTP")
    sub(interface, "accessURL", url, use="full")
    for method in ("GET", "POST"):
        sub(interface, "queryType", method)
    sub(interface, "resultType", LINKS_MIME)
    param = sub(interface, "param", std="true", use="required")
    sub(param, "name", "ID")
    sub(param, "description", "Publisher DID of a spectrum (obs_publisher_did); may be repeated")
    sub(param, "ucd", "meta.id;meta.main")
    sub(param, "dataType", "string")


def _param_http(capability: etree._Element, url: str, role: str | None = "std",
                version: str | None = None, use: str = "base") -> None:
    """A ParamHTTP interface: ``use`` is "base" for a root that takes the protocol's parameters
    (TAP, SSA), "full" for a URL used as it is (a VOSI document)."""
    interface = xsi(sub(capability, "interface", role=role, version=version), "type",
                    "vs:ParamHTTP")
    sub(interface, "accessURL", url, use=use)


def _tap_capability(parent: etree._Element, tap_root: str) -> None:
    capability = xsi(sub(parent, "capability", standardID=TAP_STANDARD), "type",
                     "tr:TableAccess")
    _param_http(capability, tap_root, version="1.1")
    if archive().schema.table("ivoa.obscore") is not None:
        sub(capability, "dataModel", OBSCORE_MODEL[0], **{"ivo-id": OBSCORE_MODEL[1]})
    language = sub(capability, "language")
    sub(language, "name", "ADQL")
    for version, ivo_id in ADQL_VERSIONS.items():
        sub(language, "version", version, **{"ivo-id": ivo_id})
    sub(language, "description",
        "ADQL with latent-space similarity: ml_distance(embedding, ref) compares spectra")
    features = sub(language, "languageFeatures", type=f"{FEATURES}features-udf")
    for function in adql.FUNCTIONS.values():
        feature = sub(features, "feature")
        sub(feature, "form", function.form)
        sub(feature, "description", function.description)
    for kind, forms in adql.OPTIONAL_FEATURES.items():
        features = sub(language, "languageFeatures", type=f"{FEATURES}{kind}")
        for form in forms:
            sub(sub(features, "feature"), "form", form)
    for fmt in OUTPUT_FORMATS:
        output = sub(capability, "outputFormat", **{"ivo-id": fmt.ivo_id})
        sub(output, "mime", fmt.mime)
        sub(output, "alias", fmt.name)
    for method in ("inline", "http", "https"):
        sub(capability, "uploadMethod",
            **{"ivo-id": f"ivo://ivoa.net/std/TAPRegExt#upload-{method}"})
    limits = settings()
    day = 86400
    _limits(capability, "retentionPeriod", int(limits.async_retention_days * day),
            int(limits.async_max_retention_days * day))
    _limits(capability, "executionDuration", limits.async_execution_duration,
            limits.async_max_execution_duration)
    _limits(capability, "outputLimit", limits.tap_maxrec_default, limits.tap_maxrec_limit,
            unit="row")
    upload = sub(capability, "uploadLimit")
    sub(upload, "hard", limits.upload_limit_bytes, unit="byte")


def _limits(capability: etree._Element, tag: str, default: object, hard: object,
            unit: str | None = None) -> None:
    """A TAPRegExt limit: what applies unless a request asks otherwise, and the most it may ask."""
    limit = sub(capability, tag)
    sub(limit, "default", default, unit=unit)
    sub(limit, "hard", hard, unit=unit)
