"""VOSI 1.1 endpoints of the TAP service: availability, capabilities and tables.

The documents are built with lxml from the published TAP_SCHEMA and the ADQL function registry,
so what a client reads here is exactly what a query may use. Schemas: VOSIAvailability 1.0,
VOSICapabilities 1.0 with TAPRegExt 1.0, VOSITables 1.1 with VODataService 1.1 table types.
"""

from __future__ import annotations

from flask import Blueprint, Response, request
from lxml import etree

from vo_ml import adql
from vo_ml.archive.tap_schema import TAP_SCHEMA_KEYS, Column, Table
from vo_ml.service.context import archive, base_url
from vo_ml.service.datalink import LINKS_MIME
from vo_ml.service.descriptors import LINKS_PATH, LINKS_STANDARD
from vo_ml.service.formats import OUTPUT_FORMATS
from vo_ml.service.settings import settings
from vo_ml.service.xmldoc import XSI, sub, xml_response, xsi

__all__ = ["bp"]

bp = Blueprint("vosi", __name__, url_prefix="/tap")

NS = {
    "xsi": XSI,
    "vosi_av": "http://www.ivoa.net/xml/VOSIAvailability/v1.0",
    "vosi_cap": "http://www.ivoa.net/xml/VOSICapabilities/v1.0",
    "vosi_tab": "http://www.ivoa.net/xml/VOSITables/v1.0",
    "vr": "http://www.ivoa.net/xml/VOResource/v1.0",
    "vs": "http://www.ivoa.net/xml/VODataService/v1.1",
    "tr": "http://www.ivoa.net/xml/TAPRegExt/v1.0",
}
FEATURES = "ivo://ivoa.net/std/TAPRegExt#"
ADQL_VERSIONS = {"2.0": "ivo://ivoa.net/std/ADQL#v2.0", "2.1": "ivo://ivoa.net/std/ADQL#v2.1"}


@bp.route("/availability")
def availability() -> Response:
    root = etree.Element(f"{{{NS['vosi_av']}}}availability", nsmap={"vosi": NS["vosi_av"]})
    sub(root, f"{{{NS['vosi_av']}}}available", "true")
    sub(root, f"{{{NS['vosi_av']}}}note", "service is accepting queries")
    return xml_response(root)


@bp.route("/capabilities")
def capabilities() -> Response:
    nsmap = {"vosi": NS["vosi_cap"], "vr": NS["vr"], "vs": NS["vs"], "tr": NS["tr"], "xsi": XSI}
    root = etree.Element(f"{{{NS['vosi_cap']}}}capabilities", nsmap=nsmap)
    tap_root = f"{base_url()}/tap"
    _tap_capability(root, tap_root)
    for name in ("capabilities", "availability", "tables"):
        capability = sub(root, "capability", standardID=f"ivo://ivoa.net/std/VOSI#{name}")
        _param_http(capability, f"{tap_root}/{name}", role=None)
    examples = sub(root, "capability", standardID="ivo://ivoa.net/std/DALI#examples")
    browser = xsi(sub(examples, "interface"), "type", "vr:WebBrowser")
    sub(browser, "accessURL", f"{tap_root}/examples", use="full")
    _links_capability(root, f"{base_url()}{LINKS_PATH}")
    return xml_response(root)


def _links_capability(root: etree._Element, url: str) -> None:
    """DataLink 1.1 ``{links}``: GET or POST any number of IDs, a DataLink VOTable back."""
    capability = sub(root, "capability", standardID=LINKS_STANDARD)
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
                version: str | None = None) -> None:
    interface = xsi(sub(capability, "interface", role=role, version=version), "type",
                    "vs:ParamHTTP")
    sub(interface, "accessURL", url, use="base" if role else "full")


def _tap_capability(root: etree._Element, tap_root: str) -> None:
    capability = xsi(sub(root, "capability", standardID="ivo://ivoa.net/std/TAP"), "type",
                     "tr:TableAccess")
    _param_http(capability, tap_root, version="1.1")
    if archive().schema.table("ivoa.obscore") is not None:
        sub(capability, "dataModel", "ObsCore-1.1",
                 **{"ivo-id": "ivo://ivoa.net/std/ObsCore#core-1.1"})
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


@bp.route("/tables")
def tables() -> Response:
    """The tableset; ``detail=min`` leaves out the columns, as VOSI 1.1 allows for large sets."""
    with_columns = request.args.get("detail", "max").lower() != "min"
    root = etree.Element(f"{{{NS['vosi_tab']}}}tableset",
                         nsmap={"vosi": NS["vosi_tab"], "vs": NS["vs"], "xsi": XSI})
    for schema in archive().schema.schemas:
        schema_element = sub(root, "schema")
        sub(schema_element, "name", schema.name)
        if schema.description:
            sub(schema_element, "description", schema.description)
        for table in schema.tables:
            schema_element.append(_table_element(table, with_columns))
    return xml_response(root)


@bp.route("/tables/<name>")
def one_table(name: str) -> Response:
    table = archive().schema.table(name)
    if table is None:
        return Response(f"no published table {name!r}; /tap/tables lists them\n", status=404,
                        mimetype="text/plain")
    root = _table_element(table, True, tag=f"{{{NS['vosi_tab']}}}table")
    return xml_response(root)


def _table_element(table: Table, with_columns: bool, tag: str = "table") -> etree._Element:
    nsmap = {"vosi": NS["vosi_tab"], "vs": NS["vs"], "xsi": XSI} if tag != "table" else None
    element = etree.Element(tag, nsmap=nsmap, type=table.type)
    sub(element, "name", table.name)
    if table.description:
        sub(element, "description", table.description)
    if with_columns:
        for column in table.columns:
            element.append(_column_element(column))
        for _, (from_table, from_column), (target_table, target_column) in TAP_SCHEMA_KEYS:
            if from_table.lower() == table.name.lower():
                element.append(_foreign_key(target_table, from_column, target_column))
    return element


def _foreign_key(target_table: str, from_column: str, target_column: str) -> etree._Element:
    """A VODataService foreignKey, as TAP_SCHEMA.keys lists it (taplint checks they agree)."""
    key = etree.Element("foreignKey")
    sub(key, "targetTable", target_table)
    pair = sub(key, "fkColumn")
    sub(pair, "fromColumn", from_column)
    sub(pair, "targetColumn", target_column)
    return key


def _column_element(column: Column) -> etree._Element:
    element = etree.Element("column")
    if column.std:
        element.set("std", "true")
    sub(element, "name", column.name)
    for tag, value in (("description", column.description), ("unit", column.unit),
                       ("ucd", column.ucd), ("utype", column.utype)):
        if value:
            sub(element, tag, value)
    data_type = sub(element, "dataType", column.datatype, arraysize=column.arraysize,
                    extendedType=column.xtype)
    xsi(data_type, "type", "vs:VOTableType")
    if column.indexed:
        sub(element, "flag", "indexed")
    if column.principal:
        sub(element, "flag", "primary")
    return element
