"""VOSI 1.1 endpoints of the TAP service: availability, capabilities and tables.

The documents are built with lxml from the published TAP_SCHEMA and the ADQL function registry,
so what a client reads here is exactly what a query may use; the capabilities and the tableset
are written by the same code as the service's registry records. Schemas: VOSIAvailability 1.0,
VOSICapabilities 1.0 with TAPRegExt 1.0, VOSITables 1.1 with VODataService 1.1 table types.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from flask import Blueprint, Response, request
from lxml import etree

from vo_ml.archive.tap_schema import TAP_SCHEMA_KEYS, Column, Schema, Table
from vo_ml.service.capabilities import NS as RESOURCE_NS
from vo_ml.service.capabilities import NSMAP, add_tap_capabilities
from vo_ml.service.context import archive, base_url
from vo_ml.service.xmldoc import XSI, sub, xml_response, xsi

__all__ = ["bp", "capabilities_response", "add_schemas"]

bp = Blueprint("vosi", __name__, url_prefix="/tap")

NS = {
    "xsi": XSI,
    "vosi_av": "http://www.ivoa.net/xml/VOSIAvailability/v1.0",
    "vosi_cap": "http://www.ivoa.net/xml/VOSICapabilities/v1.0",
    "vosi_tab": "http://www.ivoa.net/xml/VOSITables/v1.0",
    **RESOURCE_NS,
}


@bp.route("/availability")
def availability() -> Response:
    root = etree.Element(f"{{{NS['vosi_av']}}}availability", nsmap={"vosi": NS["vosi_av"]})
    sub(root, f"{{{NS['vosi_av']}}}available", "true")
    sub(root, f"{{{NS['vosi_av']}}}note", "service is accepting queries")
    return xml_response(root)


@bp.route("/capabilities")
def capabilities() -> Response:
    return capabilities_response(add_tap_capabilities)


def capabilities_response(add: Callable[[etree._Element, str], None]) -> Response:
    """A VOSI capabilities document of the capabilities ``add`` appends for the service root."""
    root = etree.Element(f"{{{NS['vosi_cap']}}}capabilities",
                         nsmap={"vosi": NS["vosi_cap"], **NSMAP})
    add(root, base_url())
    return xml_response(root)


@bp.route("/tables")
def tables() -> Response:
    """The tableset; ``detail=min`` leaves out the columns, as VOSI 1.1 allows for large sets."""
    with_columns = request.args.get("detail", "max").lower() != "min"
    root = etree.Element(f"{{{NS['vosi_tab']}}}tableset",
                         nsmap={"vosi": NS["vosi_tab"], "vs": NS["vs"], "xsi": XSI})
    add_schemas(root, archive().schema.schemas, with_columns)
    return xml_response(root)


def add_schemas(parent: etree._Element, schemas: Iterable[Schema],
                with_columns: bool = True) -> None:
    """VODataService ``schema`` elements of ``schemas``, each with its tables, under ``parent``
    (a VOSI tableset, or the tableset of a registry record)."""
    for schema in schemas:
        schema_element = sub(parent, "schema")
        sub(schema_element, "name", schema.name)
        if schema.description:
            sub(schema_element, "description", schema.description)
        for table in schema.tables:
            schema_element.append(_table_element(table, with_columns))


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
    if table.nrows is not None:
        sub(element, "nrows", table.nrows)
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
