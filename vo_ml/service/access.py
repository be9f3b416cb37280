"""Access URLs go out absolute, whatever the protocol, the table or the output format.

Ingest stores each spectrum's ``access_url`` relative to the service root
(:func:`vo_ml.spectra.access.relative_access_url`), since only the running service knows its
public URL. As DaCHS writes its server URL into product URLs on the way out, every result of the
DAL pipeline passes here: in each column published as an access reference (a utype ending in
``Access.Reference``: ObsCore's in the spectrum tables and ``ivoa.obscore``, SSA's in queryData
results), values starting with ``/`` get the service's base URL in front. Other values (an
archive's own absolute URLs) pass unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from vo_ml.archive.backend import ResultStream
from vo_ml.archive.tap_schema import Column

__all__ = ["absolute_access_urls", "is_access_reference"]


def is_access_reference(column: Column | None) -> bool:
    """True for a column whose values are the URLs of datasets (ObsCore or SSA access reference)."""
    return column is not None and (column.utype or "").lower().endswith("access.reference")


def absolute_access_urls(stream: ResultStream, columns: Sequence[Column | None],
                         base_url: str) -> ResultStream:
    """``stream`` with the relative URLs of its access-reference columns made absolute.

    ``columns`` gives the published column of each result column, in order; when their number
    differs from the result's (a ``SELECT *`` over ``JOIN ... USING``), no column is touched
    rather than the wrong one.
    """
    positions = [i for i, c in enumerate(columns) if is_access_reference(c)]
    if not positions or len(columns) != len(stream.schema):
        return stream
    return ResultStream(stream.schema, _absolute(stream.batches, positions, base_url))


def _absolute(batches: Iterator[pa.RecordBatch], positions: Sequence[int],
              base_url: str) -> Iterator[pa.RecordBatch]:
    prefix = pa.scalar(base_url.rstrip("/"))
    for batch in batches:
        arrays = list(batch.columns)
        for i in positions:
            if not (pa.types.is_string(arrays[i].type) or pa.types.is_large_string(arrays[i].type)):
                continue
            relative = pc.starts_with(arrays[i], "/")
            arrays[i] = pc.if_else(relative, pc.binary_join_element_wise(prefix, arrays[i], ""),
                                   arrays[i])
        yield pa.RecordBatch.from_arrays(arrays, schema=batch.schema)
