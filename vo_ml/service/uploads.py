"""TAP UPLOAD (TAP 1.1 section 4.3, DALI 1.1 section 3.4.5): user tables for one query.

``UPLOAD=name,uri`` makes the VOTable at ``uri`` visible to the query as ``TAP_UPLOAD.name``.
The URI is ``param:part`` for a file sent inline in the same multipart request, or an http(s)
URL the service fetches. Each table is read with astropy, described as TAP_SCHEMA columns so the
ADQL checker treats it like any published table, and handed to the backend as Arrow for that
query alone. Sizes are checked while reading, so an oversized upload never fills memory.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import requests
from astropy.io.votable import parse_single_table
from astropy.io.votable.exceptions import VOWarning

from vo_ml import adql
from vo_ml.archive.tap_schema import SQL_TYPES, Column, Schema, Table
from vo_ml.service.dali import DaliError

__all__ = ["Upload", "read_uploads", "upload_specs", "upload_schema"]

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
#: Seconds the service waits for an upload URL to answer.
FETCH_TIMEOUT = 30


@dataclass(frozen=True)
class Upload:
    """One uploaded table: its ADQL name (``TAP_UPLOAD.name``), columns and rows."""

    name: str
    columns: tuple[Column, ...]
    rows: pa.Table

    @property
    def table(self) -> Table:
        return Table(adql.UPLOAD_SCHEMA, f"{adql.UPLOAD_SCHEMA}.{self.name}",
                     "a table uploaded with this query", self.columns)


def upload_specs(values: Sequence[str]) -> list[tuple[str, str]]:
    """(table name, URI) pairs of every UPLOAD value (each one may list several, ';'-separated)."""
    specs = []
    for value in values:
        for item in filter(None, (part.strip() for part in value.split(";"))):
            name, comma, uri = item.partition(",")
            name, uri = name.strip(), uri.strip()
            if not comma or not uri:
                raise DaliError(f"UPLOAD={item!r} is not 'name,URI': give e.g. "
                                "UPLOAD=mytable,param:file1 with the file in part 'file1'")
            if not _NAME.match(name):
                raise DaliError(f"UPLOAD table name {name!r} is not an ADQL identifier: use letters, "
                                "digits and '_', starting with a letter")
            if name.lower() in (n.lower() for n, _ in specs):
                raise DaliError(f"UPLOAD names table {name!r} twice: give each table its own name")
            if not uri.startswith(("param:", "http://", "https://")):
                raise DaliError(f"UPLOAD {name}: URI {uri!r} is neither 'param:<part>' nor an "
                                "http(s) URL")
            specs.append((name, uri))
    return specs


def read_uploads(specs: Sequence[tuple[str, str]], part: Callable[[str, int], bytes | None],
                 limit: int) -> list[Upload]:
    """The tables ``specs`` name; ``part(name, limit)`` reads an inline part, None if absent."""
    return [_table(name, _content(name, uri, part, limit)) for name, uri in specs]


def upload_schema(uploads: Sequence[Upload]) -> Schema:
    return Schema(adql.UPLOAD_SCHEMA, "tables uploaded with the query",
                  tuple(u.table for u in uploads))


def _content(name: str, uri: str, part: Callable[[str, int], bytes | None], limit: int) -> bytes:
    if uri.startswith("param:"):
        content = part(uri.removeprefix("param:"), limit)
        if content is None:
            raise DaliError(f"UPLOAD {name}: the request has no file part named "
                            f"{uri.removeprefix('param:')!r}; send it as multipart/form-data")
    else:
        content = _fetch(name, uri, limit)
    if len(content) > limit:
        raise DaliError(f"UPLOAD {name}: the table is larger than the service's upload limit of "
                        f"{limit} bytes; upload fewer rows or columns", status=413)
    return content


def _fetch(name: str, url: str, limit: int) -> bytes:
    """The document at ``url``, read no further than one byte past ``limit``."""
    try:
        with requests.get(url, stream=True, timeout=FETCH_TIMEOUT) as response:
            response.raise_for_status()
            content = bytearray()
            for chunk in response.iter_content(65536):
                content += chunk
                if len(content) > limit:
                    break
            return bytes(content)
    except requests.RequestException as error:
        raise DaliError(f"UPLOAD {name}: could not fetch {url}: {error}") from None


def _table(name: str, content: bytes) -> Upload:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", VOWarning)
            votable = parse_single_table(io.BytesIO(content), verify="ignore")
    except Exception as error:  # astropy raises many kinds for a bad document
        raise DaliError(f"UPLOAD {name}: not a readable VOTable ({error}); upload a VOTable "
                        "document with one TABLE") from None
    columns, arrays = [], []
    for field, key in zip(votable.fields, votable.array.dtype.names, strict=True):
        column, array = _column(field, votable.array[key])
        columns.append(column)
        arrays.append(array)
    names = [c.name for c in columns]
    return Upload(name, tuple(columns), pa.table(arrays, names=names))


def _column(field: object, values: np.ma.MaskedArray) -> tuple[Column, pa.Array]:
    """A field as a TAP_SCHEMA column, and its values as Arrow."""
    datatype = field.datatype
    text = datatype in ("char", "unicodeChar")
    if not text and datatype not in SQL_TYPES:
        datatype = "double" if datatype.endswith("Complex") else "short"
    mask = np.ma.getmaskarray(values)
    if text:
        null = mask.reshape(len(mask), -1).all(axis=1)
        array = pa.array([None if n else _text(v) for v, n in zip(values.data, null, strict=True)],
                         type=pa.string())
    elif values.dtype == object:
        # A variable-length array is NULL when it is empty (or its row is masked); a NaN
        # element is a value of it (a spectrum's bad pixel), never a reason to drop the row.
        array = pa.array([None if null or v is None or not len(v) else np.ma.getdata(v).tolist()
                          for v, null in zip(values.data, mask, strict=True)])
    elif values.ndim > 1:
        flat = np.ma.getdata(values).reshape(len(values), -1)
        array = pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), flat.shape[1])
    else:
        array = pa.array(np.ma.getdata(values), mask=mask if mask.any() else None)
    column = Column(field.name, "char" if text else datatype, field.description or "",
                    arraysize="*" if text else field.arraysize, xtype=field.xtype,
                    unit=str(field.unit) if field.unit is not None else None, ucd=field.ucd,
                    utype=field.utype)
    return column, array


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
