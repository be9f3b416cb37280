"""VOSI 1.1 endpoints of the TAP service: availability, capabilities and tables.

The documents are built with lxml from the published TAP_SCHEMA and the ADQL function registry,
so what a client reads here is exactly what a query may use. Schemas: VOSIAvailability 1.0,
VOSICapabilities 1.0 with TAPRegExt 1.0, VOSITables 1.1 with VODataService 1.1 table types.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request
from lxml import etree

from vo_ml import adql
from vo_ml.archive.tap_schema import TAP_SCHEMA_KEYS, Column, Table
from vo_ml.service import archive, base_url
from vo_ml.service.formats import OUTPUT_FORMATS

__all__ = ["bp"]

bp = Blueprint("vosi", __name__, url_prefix="/tap")

XSI = "http://www.w3.org/2001/XMLSchema-instance"
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


def _xml_response(root: etree._Element) -> Response:
    body = etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
    return Response(body, mimetype="text/xml")


def _element(parent: etree._Element, tag: str, text: object = None, **attributes: str) -> etree._Element:
    element = etree.SubElement(parent, tag, {k: v for k, v in attributes.items() if v is not None})
    if text is not None:
        element.text = str(text)
    return element


def _xsi_type(element: etree._Element, value: str) -> etree._Element:
    element.set(f"{{{XSI}}}type", value)
    return element


@bp.route("/availability")
def availability() -> Response:
    root = etree.Element(f"{{{NS['vosi_av']}}}availability", nsmap={"vosi": NS["vosi_av"]})
    _element(root, f"{{{NS['vosi_av']}}}available", "true")
    _element(root, f"{{{NS['vosi_av']}}}note", "service is accepting queries")
    return _xml_response(root)


@bp.route("/capabilities")
def capabilities() -> Response:
    nsmap = {"vosi": NS["vosi_cap"], "vr": NS["vr"], "vs": NS["vs"], "tr": NS["tr"], "xsi": XSI}
    root = etree.Element(f"{{{NS['vosi_cap']}}}capabilities", nsmap=nsmap)
    tap_root = f"{base_url()}/tap"
    _tap_capability(root, tap_root)
    for name in ("capabilities", "availability", "tables"):
        capability = _element(root, "capability", standardID=f"ivo://ivoa.net/std/VOSI#{name}")
        _param_http(capability, f"{tap_root}/{name}", role=None)
    examples = _element(root, "capability", standardID="ivo://ivoa.net/std/DALI#examples")
    browser = _xsi_type(_element(examples, "interface"), "vr:WebBrowser")
    _element(browser, "accessURL", f"{tap_root}/examples", use="full")
    return _xml_response(root)


def _param_http(capability: etree._Element, url: str, role: str | None = "std",
                version: str | None = None) -> None:
    interface = _xsi_type(_element(capability, "interface", role=role, version=version),
                          "vs:ParamHTTP")
    _element(interface, "accessURL", url, use="base" if role else "full")


def _tap_capability(root: etree._Element, tap_root: str) -> None:
    capability = _xsi_type(_element(root, "capability", standardID="ivo://ivoa.net/std/TAP"),
                           "tr:TableAccess")
    _param_http(capability, tap_root, version="1.1")
    if archive().schema.table("ivoa.obscore") is not None:
        _element(capability, "dataModel", "ObsCore-1.1",
                 **{"ivo-id": "ivo://ivoa.net/std/ObsCore#core-1.1"})
    language = _element(capability, "language")
    _element(language, "name", "ADQL")
    for version, ivo_id in ADQL_VERSIONS.items():
        _element(language, "version", version, **{"ivo-id": ivo_id})
    _element(language, "description",
             "ADQL with latent-space similarity: ml_distance(embedding, ref) compares spectra")
    features = _element(language, "languageFeatures", type=f"{FEATURES}features-udf")
    for function in adql.FUNCTIONS.values():
        feature = _element(features, "feature")
        _element(feature, "form", function.form)
        _element(feature, "description", function.description)
    for kind, forms in adql.OPTIONAL_FEATURES.items():
        features = _element(language, "languageFeatures", type=f"{FEATURES}{kind}")
        for form in forms:
            _element(_element(features, "feature"), "form", form)
    for fmt in OUTPUT_FORMATS:
        output = _element(capability, "outputFormat", **{"ivo-id": fmt.ivo_id})
        _element(output, "mime", fmt.mime)
        _element(output, "alias", fmt.name)
    for method in ("inline", "http", "https"):
        _element(capability, "uploadMethod",
                 **{"ivo-id": f"ivo://ivoa.net/std/TAPRegExt#upload-{method}"})
    config = current_app.config
    day = 86400
    _limits(capability, "retentionPeriod", int(config["ASYNC_RETENTION_DAYS"] * day),
            int(config["ASYNC_MAX_RETENTION_DAYS"] * day))
    _limits(capability, "executionDuration", config["ASYNC_EXECUTION_DURATION"],
            config["ASYNC_MAX_EXECUTION_DURATION"])
    _limits(capability, "outputLimit", config["TAP_MAXREC_DEFAULT"], config["TAP_MAXREC_LIMIT"],
            unit="row")
    upload = _element(capability, "uploadLimit")
    _element(upload, "hard", config["UPLOAD_LIMIT_BYTES"], unit="byte")


def _limits(capability: etree._Element, tag: str, default: object, hard: object,
            unit: str | None = None) -> None:
    """A TAPRegExt limit: what applies unless a request asks otherwise, and the most it may ask."""
    limit = _element(capability, tag)
    _element(limit, "default", default, unit=unit)
    _element(limit, "hard", hard, unit=unit)


@bp.route("/tables")
def tables() -> Response:
    """The tableset; ``detail=min`` leaves out the columns, as VOSI 1.1 allows for large sets."""
    with_columns = request.args.get("detail", "max").lower() != "min"
    root = etree.Element(f"{{{NS['vosi_tab']}}}tableset",
                         nsmap={"vosi": NS["vosi_tab"], "vs": NS["vs"], "xsi": XSI})
    for schema in archive().schema.schemas:
        schema_element = _element(root, "schema")
        _element(schema_element, "name", schema.name)
        if schema.description:
            _element(schema_element, "description", schema.description)
        for table in schema.tables:
            schema_element.append(_table_element(table, with_columns))
    return _xml_response(root)


@bp.route("/tables/<name>")
def one_table(name: str) -> Response:
    table = archive().schema.table(name)
    if table is None:
        return Response(f"no published table {name!r}; /tap/tables lists them\n", status=404,
                        mimetype="text/plain")
    root = _table_element(table, True, tag=f"{{{NS['vosi_tab']}}}table")
    return _xml_response(root)


def _table_element(table: Table, with_columns: bool, tag: str = "table") -> etree._Element:
    nsmap = {"vosi": NS["vosi_tab"], "vs": NS["vs"], "xsi": XSI} if tag != "table" else None
    element = etree.Element(tag, nsmap=nsmap, type=table.type)
    _element(element, "name", table.name)
    if table.description:
        _element(element, "description", table.description)
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
    _element(key, "targetTable", target_table)
    pair = _element(key, "fkColumn")
    _element(pair, "fromColumn", from_column)
    _element(pair, "targetColumn", target_column)
    return key


def _column_element(column: Column) -> etree._Element:
    element = etree.Element("column")
    if column.std:
        element.set("std", "true")
    _element(element, "name", column.name)
    for tag, value in (("description", column.description), ("unit", column.unit),
                       ("ucd", column.ucd), ("utype", column.utype)):
        if value:
            _element(element, tag, value)
    data_type = _element(element, "dataType", column.datatype, arraysize=column.arraysize,
                         extendedType=column.xtype)
    _xsi_type(data_type, "vs:VOTableType")
    if column.indexed:
        _element(element, "flag", "indexed")
    if column.principal:
        _element(element, "flag", "primary")
    return element
