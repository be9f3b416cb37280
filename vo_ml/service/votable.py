"""VOTable documents the service writes: query results and DALI error documents.

Every FIELD is labelled from TAP_SCHEMA (ucd, unit, utype, xtype, description, arraysize), so a
client sees the same metadata in TAP_SCHEMA and in results. The status travels inside the
document as pyvo reads it: ``INFO name="QUERY_STATUS"`` is OK, OVERFLOW (after the table, when
MAXREC cut the result) or ERROR. Other INFOs of the results resource, after QUERY_STATUS, tell
how the rows were found (``vo_ml_plan``) and warn about them (``warning``: an uploaded
spectrum whose answer is uncertain), as DALI allows.

A result may end with DataLink service descriptors (:class:`ServiceDescriptor`: ``RESOURCE
type="meta" utype="adhoc:service"``), whose input parameters name a FIELD of the table by its
ID, as TOPCAT's "Invoke Service" and pyvo's ``iter_datalinks`` read them.

Results are streamed (:func:`stream_votable`): astropy writes the header from the fields
alone, then rows are encoded a batch at a time straight from Arrow buffers (BINARY2 with numpy,
TABLEDATA with Arrow compute kernels), so memory does not grow with the number of rows.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import io
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from astropy.io.votable.exceptions import VOWarning
from astropy.io.votable.tree import Field, Info, Resource, TableElement, VOTableFile
from astropy.io.votable.xmlutil import fix_id
from lxml import etree

from vo_ml import __version__
from vo_ml.archive.backend import QueryError
from vo_ml.archive.tap_schema import Column
from vo_ml.service.arrow_types import array_text, is_array, list_values, votable_datatype
from vo_ml.spectra.access import VOTABLE_MIME

__all__ = ["stream_votable", "error_votable", "VOTABLE_MIME", "ServiceDescriptor", "InputParam",
           "field_id"]

VOTABLE_VERSION = "1.4"


#: DALI: when MAXREC cuts the result, an INFO after the table says so.
_OVERFLOW = (b'<INFO name="QUERY_STATUS" value="OVERFLOW">the result was truncated at MAXREC rows'
             b'</INFO>\n')


@dataclasses.dataclass(frozen=True)
class InputParam:
    """One input of a service descriptor: bound to a FIELD of the table (``ref``, a column
    name), or with a default ``value`` the user may change (``options`` listing the allowed
    ones, ``minimum``/``maximum`` bounding a number)."""

    name: str
    description: str
    datatype: str = "char"
    ref: str | None = None
    value: str = ""
    ucd: str | None = None
    options: tuple[str, ...] = ()
    minimum: str | None = None
    maximum: str | None = None


@dataclasses.dataclass(frozen=True)
class ServiceDescriptor:
    """A DataLink service descriptor: how to call a service with values from a row.

    ``access_url`` may be relative to the service root (``/datalink/links``):
    :meth:`under` makes it absolute, as the answer to each request knows its root.
    """

    id: str
    name: str
    description: str
    access_url: str
    inputs: tuple[InputParam, ...]
    standard_id: str | None = None

    def under(self, root: str) -> ServiceDescriptor:
        if not self.access_url.startswith("/"):
            return self
        return dataclasses.replace(self, access_url=root.rstrip("/") + self.access_url)

    def xml(self, field_ids: dict[str, str]) -> bytes:
        """The RESOURCE element; ``field_ids`` gives the FIELD ID of each column named by a
        ``ref``."""
        resource = etree.Element("RESOURCE", type="meta", utype="adhoc:service", ID=self.id,
                                 name=self.name)
        etree.SubElement(resource, "DESCRIPTION").text = self.description
        if self.standard_id:
            _param(resource, "standardID", self.standard_id)
        _param(resource, "accessURL", self.access_url)
        group = etree.SubElement(resource, "GROUP", name="inputParams")
        for given in self.inputs:
            _input_param(group, given, field_ids)
        return etree.tostring(resource, pretty_print=True)


def _param(parent: etree._Element, name: str, value: str) -> etree._Element:
    return etree.SubElement(parent, "PARAM", name=name, datatype="char", arraysize="*",
                            value=value)


def _input_param(group: etree._Element, given: InputParam, field_ids: dict[str, str]) -> None:
    attributes = {"name": given.name, "datatype": given.datatype, "value": given.value}
    if given.datatype == "char":
        attributes["arraysize"] = "*"
    if given.ref is not None:
        attributes["ref"] = field_ids[given.ref]
    if given.ucd:
        attributes["ucd"] = given.ucd
    param = etree.SubElement(group, "PARAM", attributes)
    etree.SubElement(param, "DESCRIPTION").text = given.description
    if given.options or given.minimum is not None or given.maximum is not None:
        values = etree.SubElement(param, "VALUES")
        if given.minimum is not None:
            etree.SubElement(values, "MIN", value=given.minimum)
        if given.maximum is not None:
            etree.SubElement(values, "MAX", value=given.maximum)
        for option in given.options:
            etree.SubElement(values, "OPTION", value=option)


def field_id(name: str) -> str:
    """The ID astropy gives the FIELD of a column ``name`` (the name made an XML name), which
    astropy clients also use as the name of the column's array. Names of ADQL columns never
    hold a ``-``, so the descriptors' IDs, which do, cannot clash with them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VOWarning)
        return fix_id(name)


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


def stream_votable(
    schema: pa.Schema,
    batches: Iterable[pa.RecordBatch],
    columns: Sequence[Column | None],
    overflowed: Callable[[], bool],
    serialization: str = "binary2",
    infos: Sequence[tuple[str, str]] = (),
    descriptors: Sequence[ServiceDescriptor] = (),
) -> Iterator[bytes]:
    """The document for rows of a portable ``schema``, a piece at a time, with the service
    ``descriptors`` after the results (those whose input names a missing column left out).

    ``overflowed()`` is asked once the rows are written: True adds the OVERFLOW marker. A query
    that fails while rows are being sent (its time limit, say) ends the table there, and an
    ``INFO name="QUERY_STATUS" value="ERROR"`` after it says why, as the HTTP status is gone.
    """
    head, tail = _frame(schema, tuple(columns), serialization, tuple(infos), tuple(descriptors))
    yield head
    encode = _Binary2() if serialization == "binary2" else _TableData()
    status = b""
    try:
        for batch in batches:
            yield encode(batch)
        if overflowed():
            status = _OVERFLOW
    except QueryError as error:
        status = _status_info("ERROR", f"the query failed while its rows were sent: {error}")
    yield encode.close() + _DATA_END[serialization] + b"  " + status + tail


_DATA_START = {"binary2": b"<DATA><BINARY2><STREAM encoding=\"base64\">\n",
               "tabledata": b"<DATA><TABLEDATA>\n"}
_DATA_END = {"binary2": b"</STREAM></BINARY2></DATA>\n</TABLE>\n",
             "tabledata": b"</TABLEDATA></DATA>\n</TABLE>\n"}


def _status_info(value: str, message: str) -> bytes:
    text = message.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return f'<INFO name="QUERY_STATUS" value="{value}">{text}</INFO>\n'.encode()


@functools.lru_cache(maxsize=256)
def _frame(schema: pa.Schema, columns: tuple[Column | None, ...], serialization: str,
           infos: tuple[tuple[str, str], ...],
           descriptors: tuple[ServiceDescriptor, ...] = ()) -> tuple[bytes, bytes]:
    """The document before the first row (up to the data element) and after ``</TABLE>``.

    Kept for the last queries' result shapes: astropy takes milliseconds to write a header,
    more than a small query itself, and clients repeat the same queries.
    """
    votable = VOTableFile(version=VOTABLE_VERSION)
    resource = Resource(type="results")
    votable.resources.append(resource)
    resource.infos.append(_info("QUERY_STATUS", "OK"))
    for name, value in infos:
        resource.infos.append(_info(name, value))
    resource.infos.append(_info("SERVICE", "vo_ml", f"vo_ml {__version__}"))
    table = TableElement(votable)
    resource.tables.append(table)
    if len(columns) != len(schema):
        columns = [None] * len(schema)
    names = _unique(schema.names)
    descriptors = tuple(d for d in descriptors
                        if all(i.ref is None or i.ref in names for i in d.inputs))
    referenced = {i.ref: field_id(i.ref) for d in descriptors for i in d.inputs if i.ref}
    for name, kind, column in zip(names, schema.types, columns, strict=True):
        datatype, arraysize = votable_datatype(kind)
        field = Field(votable, name=name, datatype=datatype, arraysize=arraysize,
                      ID=referenced.get(name))
        _label(field, column)
        table.fields.append(field)
    table.create_arrays(0)
    document = _serialise(votable, "tabledata")
    end = document.rindex(b"</TABLE>")
    tail = document[end + len(b"</TABLE>\n"):]
    if descriptors:
        closing = tail.rindex(b"</VOTABLE>")
        tail = tail[:closing] + b"".join(d.xml(referenced) for d in descriptors) + tail[closing:]
    return document[:end] + _DATA_START[serialization], tail


class _Binary2:
    """Rows in VOTable BINARY2, base64-encoded across batches (whole 3-byte groups at a time)."""

    def __init__(self) -> None:
        self._carry = b""

    def __call__(self, batch: pa.RecordBatch) -> bytes:
        raw = self._carry + binary2_rows(batch)
        whole = len(raw) - len(raw) % 3
        self._carry = raw[whole:]
        return base64.b64encode(raw[:whole]) + b"\n" if whole else b""

    def close(self) -> bytes:
        return base64.b64encode(self._carry) + b"\n" if self._carry else b""


def binary2_rows(batch: pa.RecordBatch) -> bytes:
    """The rows of ``batch`` in BINARY2 layout: a NULL bit per field, then each field's value.

    Every field contributes one or two pieces per row (a length prefix and the values for
    variable-length ones). Fixed-width pieces are laid side by side with one concatenation;
    with variable-length pieces, one gather index puts every row's bytes in order.
    """
    rows = batch.num_rows
    nulls = np.column_stack([c.is_null().to_numpy(zero_copy_only=False) for c in batch.columns])
    pieces = [_Piece.fixed(np.packbits(nulls, axis=1, bitorder="big"))]
    for column in batch.columns:
        pieces.extend(_value_pieces(column))
    if all(p.starts is None for p in pieces):
        return np.concatenate([p.data.reshape(rows, -1) for p in pieces], axis=1).tobytes()
    return _gather(pieces, rows)


class _Piece:
    """The bytes one field gives each row: a (rows, width) block, or a buffer with offsets."""

    def __init__(self, data: np.ndarray, starts: np.ndarray | None = None,
                 lengths: np.ndarray | None = None) -> None:
        self.data, self.starts, self.lengths = data, starts, lengths

    @classmethod
    def fixed(cls, block: np.ndarray) -> _Piece:
        return cls(np.ascontiguousarray(block).view(np.uint8).reshape(len(block), -1))


def _value_pieces(column: pa.Array) -> list[_Piece]:
    kind = column.type
    if kind == pa.bool_():
        flags = np.where(column.fill_null(False).to_numpy(zero_copy_only=False), b"T", b"F")
        flags[column.is_null().to_numpy(zero_copy_only=False)] = b"?"
        return [_Piece.fixed(flags.view(np.uint8).reshape(-1, 1))]
    if kind == pa.string():
        column = _ascii(column)
        offsets = _string_offsets(column)
        lengths = np.diff(offsets)
        data = np.frombuffer(column.buffers()[2] or b"", dtype=np.uint8)
        return [_Piece.fixed(lengths.astype(">i4").reshape(-1, 1)),
                _Piece(data, offsets[:-1], lengths)]
    if pa.types.is_fixed_size_list(kind):
        values = _big_endian(list_values(column))
        return [_Piece.fixed(values.reshape(len(column), -1))]
    if pa.types.is_list(kind):
        offsets = column.offsets.to_numpy().astype(np.int64)
        counts = np.diff(offsets)
        width = kind.value_type.byte_width
        data = _big_endian(list_values(column)).view(np.uint8)
        return [_Piece.fixed(counts.astype(">i4").reshape(-1, 1)),
                _Piece(data, (offsets[:-1] - offsets[0]) * width, counts * width)]
    return [_Piece.fixed(_big_endian(column).reshape(-1, 1))]


def _ascii(column: pa.StringArray) -> pa.StringArray:
    """Text for a ``char`` field, which VOTable 1.4 (and astropy) read as ASCII: any other
    character becomes '?'."""
    if pc.all(pc.string_is_ascii(column)).as_py() is not False:
        return column
    return pc.replace_substring_regex(column, "[^\\x00-\\x7f]", "?")


def _string_offsets(column: pa.StringArray) -> np.ndarray:
    """Where each string starts in the array's data buffer, and where the last one ends."""
    every = np.frombuffer(column.buffers()[1], dtype=np.int32)
    return every[column.offset:column.offset + len(column) + 1].astype(np.int64)


def _big_endian(array: pa.Array) -> np.ndarray:
    """Numeric values as big-endian numpy, NULLs as NaN (floats) or 0 (integers)."""
    filler = float("nan") if pa.types.is_floating(array.type) else 0
    values = array.fill_null(filler).to_numpy(zero_copy_only=False) if array.null_count \
        else array.to_numpy(zero_copy_only=False)
    return values.astype(values.dtype.newbyteorder(">"), copy=False)


def _gather(pieces: list[_Piece], rows: int) -> bytes:
    """Row-major bytes of pieces, some of them variable-length, with one fancy index."""
    buffers, starts, lengths, base = [], [], [], 0
    for piece in pieces:
        if piece.starts is None:
            width = piece.data.shape[1]
            buffers.append(piece.data.ravel())
            starts.append(base + np.arange(rows, dtype=np.int64) * width)
            lengths.append(np.full(rows, width, dtype=np.int64))
        else:
            buffers.append(piece.data)
            starts.append(base + piece.starts)
            lengths.append(piece.lengths)
        base += len(buffers[-1])
    start = np.column_stack(starts).ravel()
    length = np.column_stack(lengths).ravel()
    output_start = np.cumsum(length) - length
    index = np.repeat(start - output_start, length) + np.arange(int(length.sum()), dtype=np.int64)
    return np.concatenate(buffers)[index].tobytes()


class _TableData:
    """Rows as TABLEDATA ``<TR>`` elements, built column-wise with Arrow string kernels."""

    def __call__(self, batch: pa.RecordBatch) -> bytes:
        if not batch.num_rows:
            return b""
        cells = [_cell_text(c) for c in batch.columns]
        parts: list = ["<TR><TD>"]
        for index, cell in enumerate(cells):
            parts.extend([cell, "</TD><TD>" if index < len(cells) - 1 else "</TD></TR>\n"])
        rows = pc.binary_join_element_wise(*parts, "")
        offsets = _string_offsets(rows)
        return memoryview(rows.buffers()[2])[offsets[0]:offsets[-1]].tobytes()

    def close(self) -> bytes:
        return b""


def _cell_text(column: pa.Array) -> pa.Array:
    """Each value as TABLEDATA text: arrays space-separated, NULL as an empty cell."""
    if is_array(column.type):
        return array_text(column, _number_text).fill_null("")
    if column.type == pa.string():
        escaped = _ascii(column)
        for raw, entity in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;")):
            escaped = pc.replace_substring(escaped, raw, entity)
        return escaped.fill_null("")
    return _number_text(column).fill_null("")


def _number_text(values: pa.Array) -> pa.Array:
    """Numbers and booleans as text, with VOTable's spelling of NaN and infinities."""
    text = pc.cast(values, pa.string())
    if pa.types.is_floating(values.type):
        for arrow, votable in (("-inf", "-Inf"), ("inf", "+Inf"), ("nan", "NaN")):
            text = pc.if_else(pc.equal(text, arrow), votable, text)
    return text
