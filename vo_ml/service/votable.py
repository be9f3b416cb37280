"""VOTable documents the service writes: query results and DALI error documents.

Results go through astropy's VOTable tree, with every FIELD labelled from TAP_SCHEMA (ucd, unit,
utype, description, arraysize), so a client sees the same metadata in TAP_SCHEMA and in results.
The status travels inside the document as pyvo reads it: ``INFO name="QUERY_STATUS"`` is OK,
OVERFLOW (after the table, when MAXREC cut the result) or ERROR.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from astropy.io.votable import from_table
from astropy.io.votable.tree import Info, Resource, VOTableFile
from astropy.table import Table

from vo_ml import __version__
from vo_ml.archive.backend import QueryResult
from vo_ml.archive.tap_schema import Column

__all__ = ["results_votable", "error_votable", "VOTABLE_MIME"]

VOTABLE_MIME = "application/x-votable+xml"
VOTABLE_VERSION = "1.4"


def results_votable(
    result: QueryResult,
    columns: Sequence[Column | None],
    overflow: bool,
    serialization: str = "binary2",
    infos: Sequence[tuple[str, str]] = (),
) -> bytes:
    """The result as a VOTable document, with QUERY_STATUS and any extra INFO (name, value).

    ``columns`` gives, for each result column in order, the TAP_SCHEMA column it shows, or None
    for a computed value; if the backend returned another number of columns (a ``SELECT *``
    over ``JOIN ... USING`` merges the join columns), the fields go out without TAP_SCHEMA
    metadata rather than with the wrong one.
    """
    table = Table([_plain(c) for c in result.columns], names=_unique(result.names))
    votable = from_table(table)
    votable.version = VOTABLE_VERSION
    resource = votable.resources[0]
    resource.type = "results"
    resource.infos.append(_info("QUERY_STATUS", "OK"))
    for name, value in infos:
        resource.infos.append(_info(name, value))
    resource.infos.append(_info("SERVICE", "vo_ml", f"vo_ml {__version__}"))
    fields = votable.get_first_table().fields
    if len(columns) != len(fields):
        columns = [None] * len(fields)
    for field, column in zip(fields, columns, strict=True):
        _label(field, column)
    document = _serialise(votable, serialization)
    return _after_table(document, _OVERFLOW) if overflow else document


#: DALI: when MAXREC cuts the result, an INFO after the table says so.
_OVERFLOW = (b'<INFO name="QUERY_STATUS" value="OVERFLOW">the result was truncated at MAXREC rows'
             b'</INFO>\n')


def _after_table(document: bytes, element: bytes) -> bytes:
    """``element`` placed after the (single) TABLE of ``document``, inside its RESOURCE.

    astropy writes a RESOURCE's INFOs before its tables only, and the DALI overflow marker
    must follow the table, where taplint and pyvo look for it.
    """
    end = document.rindex(b"</TABLE>") + len(b"</TABLE>\n")
    return document[:end] + b"  " + element + document[end:]


def error_votable(message: str) -> bytes:
    """A DALI error document: an empty results resource whose QUERY_STATUS is ERROR."""
    votable = VOTableFile(version=VOTABLE_VERSION)
    resource = Resource(type="results")
    votable.resources.append(resource)
    resource.infos.append(_info("QUERY_STATUS", "ERROR", message))
    return _serialise(votable, "tabledata")


def _info(name: str, value: str, content: str | None = None) -> Info:
    """An INFO without the ID astropy derives from its name: two INFOs may share a name, not an ID."""
    info = Info(name=name, value=value)
    info.ID = None
    if content:
        info.content = content
    return info


def _plain(column: np.ma.MaskedArray) -> np.ma.MaskedArray:
    """Keep masks only where something is NULL; astropy then writes plain values."""
    return column if np.ma.getmaskarray(column).any() else np.ma.getdata(column)


def _unique(names: Sequence[str]) -> list[str]:
    """Column names made unique (``a``, ``a_2``), as a FIELD name must be within a table."""
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name.lower()] = seen.get(name.lower(), 0) + 1
        unique.append(name if seen[name.lower()] == 1 else f"{name}_{seen[name.lower()]}")
    return unique


def _label(field: object, column: Column | None) -> None:
    """Copy TAP_SCHEMA metadata onto a FIELD; text columns become ``char`` of any length."""
    if field.datatype in ("unicodeChar", "char") and (column is None or column.datatype == "char"):
        field.datatype = "char"
        field.arraysize = "*"
    if column is None:
        return
    if column.is_array and column.arraysize:
        field.arraysize = column.arraysize
    for attribute in ("ucd", "unit", "utype", "xtype"):
        value = getattr(column, attribute)
        if value:
            setattr(field, attribute, value)
    if column.description:
        field.description = column.description


def _serialise(votable: VOTableFile, serialization: str) -> bytes:
    buffer = io.BytesIO()
    votable.to_xml(buffer, tabledata_format=serialization)
    return buffer.getvalue()
