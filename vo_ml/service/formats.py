"""TAP output formats (RESPONSEFORMAT): VOTable BINARY2 and TABLEDATA, CSV, TSV, FITS, Parquet.

Every writer takes a :class:`CappedRows` (the query's Arrow batches, cast to portable types
and cut at MAXREC) and yields the document piece by piece, so a response starts before the
query has finished and memory stays flat however many rows there are. FITS is the exception:
its header states the row count before the first row, so a FITS answer is built whole.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from astropy.table import Table

from vo_ml.archive.backend import QueryError, ResultStream, arrow_to_masked
from vo_ml.archive.tap_schema import Column
from vo_ml.service.arrow_types import array_text, is_array, portable_schema
from vo_ml.service.dali import DaliError
from vo_ml.service.votable import VOTABLE_MIME, ServiceDescriptor, stream_votable
from vo_ml.spectra.access import FITS_MIME

__all__ = ["CappedRows", "OutputFormat", "OUTPUT_FORMATS", "VOTABLE_OUTPUTS", "output_format"]


class CappedRows:
    """The first ``maxrec`` rows of a result, as portable batches; ``overflow`` once read.

    At most ``maxrec + 1`` rows are read from the stream: one more than MAXREC is how the
    service learns, without counting the whole result, that MAXREC cut it.
    """

    def __init__(self, stream: ResultStream, maxrec: int,
                 infos: tuple[tuple[str, str], ...] = (),
                 descriptors: tuple[ServiceDescriptor, ...] = ()) -> None:
        self.schema = portable_schema(stream.schema)
        #: INFO elements (name, value) a VOTable of the rows carries, such as the plan used.
        self.infos = infos
        #: The services a VOTable of the rows describes for each row (DataLink descriptors).
        self.descriptors = descriptors
        self.overflow = False
        #: The error that ended the rows early, once one has (a time limit hit while sending).
        self.failure: QueryError | None = None
        self._stream = stream
        self._maxrec = maxrec

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        try:
            yield from self._capped()
        except QueryError as error:
            self.failure = error
            raise

    def _capped(self) -> Iterator[pa.RecordBatch]:
        rows = 0
        for batch in self._stream.batches:
            if rows + batch.num_rows > self._maxrec:
                self.overflow = True
                batch = batch.slice(0, self._maxrec - rows)
            rows += batch.num_rows
            if batch.num_rows:
                yield batch.cast(self.schema)
            if self.overflow:
                return


Writer = Callable[[CappedRows, Sequence[Column | None]], Iterator[bytes]]


@dataclass(frozen=True)
class OutputFormat:
    """One RESPONSEFORMAT the service writes: what TAPRegExt declares, and its writer."""

    name: str
    mime: str
    aliases: tuple[str, ...]
    writer: Writer
    #: The TAPRegExt identifier of the format, where the standard defines one.
    ivo_id: str | None = None


def _votable(serialization: str) -> Writer:
    def write(rows: CappedRows, columns: Sequence[Column | None]) -> Iterator[bytes]:
        return stream_votable(rows.schema, rows, columns, lambda: rows.overflow, serialization,
                              rows.infos, rows.descriptors)
    return write


class _Spool(io.RawIOBase):
    """A write-only file whose bytes are taken out as they come, for writers that want a file."""

    def __init__(self) -> None:
        self._pending = bytearray()
        self._written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:
        self._pending += data
        self._written += len(data)
        return len(data)

    def tell(self) -> int:
        return self._written

    def take(self) -> bytes:
        data = bytes(self._pending)
        self._pending.clear()
        return data


def _text_cells(batch: pa.RecordBatch, separator: str) -> pa.RecordBatch:
    """Arrays as space-separated text (CSV has no arrays); for TSV, no tab or newline in text."""
    columns = []
    for column in batch.columns:
        if is_array(column.type):
            column = array_text(column)
        elif separator == "\t" and column.type == pa.string():
            column = pc.replace_substring_regex(column, "[\t\r\n]", " ")
        columns.append(column)
    return pa.record_batch(columns, names=batch.schema.names)


def _delimited(separator: str) -> Writer:
    def write(rows: CappedRows, columns: Sequence[Column | None]) -> Iterator[bytes]:
        spool = _Spool()
        options = pa_csv.WriteOptions(
            delimiter=separator, quoting_style="needed" if separator == "," else "none")
        writer = None
        for batch in rows:
            text = _text_cells(batch, separator)
            if writer is None:
                writer = pa_csv.CSVWriter(spool, text.schema, write_options=options)
            writer.write_batch(text)
            yield spool.take()
        if writer is None:
            yield separator.join(rows.schema.names).encode() + b"\n"
        else:
            writer.close()
            yield spool.take()
    return write


def _parquet(rows: CappedRows, columns: Sequence[Column | None]) -> Iterator[bytes]:
    """Parquet with each field's unit, UCD and description kept as Arrow field metadata."""
    schema = rows.schema
    if len(columns) == len(schema):
        schema = pa.schema([field.with_metadata(_field_metadata(column))
                            for field, column in zip(schema, columns, strict=True)])
    spool = _Spool()
    with pq.ParquetWriter(spool, schema) as writer:
        for batch in rows:
            writer.write_batch(batch)
            yield spool.take()
    yield spool.take()


def _field_metadata(column: Column | None) -> dict[str, str]:
    if column is None:
        return {}
    found = {"unit": column.unit, "ucd": column.ucd, "utype": column.utype,
             "description": column.description}
    return {key: value for key, value in found.items() if value}


def _fits(rows: CappedRows, columns: Sequence[Column | None]) -> Iterator[bytes]:
    """A FITS binary table, built whole: the header must give the row count first."""
    batches = list(rows)
    table = pa.Table.from_batches(batches, schema=rows.schema)
    fits = Table([arrow_to_masked(c) for c in table.columns], names=table.column_names)
    if len(columns) == len(table.column_names):
        for name, column in zip(table.column_names, columns, strict=True):
            if column is not None and column.unit:
                fits[name].unit = column.unit
            if column is not None and column.description:
                fits[name].description = column.description
    buffer = io.BytesIO()
    fits.meta["OVERFLOW"] = rows.overflow
    fits.write(buffer, format="fits")
    yield buffer.getvalue()


OUTPUT_FORMATS = (
    OutputFormat("votable", f"{VOTABLE_MIME};serialization=binary2",
                 ("votable", VOTABLE_MIME, "text/xml", "votable/b2", "votable/binary2"),
                 _votable("binary2"), "ivo://ivoa.net/std/TAPRegExt#output-votable-binary2"),
    OutputFormat("votable/td", f"{VOTABLE_MIME};serialization=tabledata",
                 ("votable/td", "votable/tabledata"), _votable("tabledata"),
                 "ivo://ivoa.net/std/TAPRegExt#output-votable-td"),
    OutputFormat("csv", "text/csv;header=present", ("csv", "text/csv"), _delimited(",")),
    OutputFormat("tsv", "text/tab-separated-values", ("tsv", "text/tab-separated-values"),
                 _delimited("\t")),
    OutputFormat("fits", FITS_MIME, ("fits", FITS_MIME), _fits),
    OutputFormat("parquet", "application/vnd.apache.parquet",
                 ("parquet", "application/vnd.apache.parquet", "application/x-parquet"),
                 _parquet),
)

_BY_NAME = {
    key: f for f in OUTPUT_FORMATS for key in (*f.aliases, f.mime, f.name)
}


#: The formats of a protocol whose results are VOTables only (SSA).
VOTABLE_OUTPUTS = OUTPUT_FORMATS[:2]


def output_format(requested: str | None,
                  formats: Sequence[OutputFormat] = OUTPUT_FORMATS) -> OutputFormat:
    """The one of ``formats`` a RESPONSEFORMAT value asks for; BINARY2 VOTable when none is
    given."""
    key = (requested or "votable").replace(" ", "").lower()
    key = key.replace('"', "")
    if _BY_NAME.get(key) in formats:
        return _BY_NAME[key]
    raise DaliError(f"RESPONSEFORMAT={requested!r} is not supported: use one of "
                    f"{', '.join(f.name for f in formats)} (or their MIME types)")

