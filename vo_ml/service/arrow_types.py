"""Arrow result types narrowed to the ones every output format can carry.

Query results arrive as Arrow batches whose types follow the backend (unsigned integers,
decimals, timestamps, dictionaries...). Each writer needs a small closed set: the VOTable
primitive datatypes, plus fixed- and variable-length numeric arrays. :func:`portable_schema`
chooses that set once per result and every batch is cast to it, so the VOTable header written
before the first row and the rows that follow always agree.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["portable_schema", "votable_datatype", "VOTABLE_DATATYPES", "is_array", "array_text"]

#: VOTable datatype of each Arrow type a portable schema may hold.
VOTABLE_DATATYPES = {
    pa.bool_(): "boolean",
    pa.int16(): "short",
    pa.int32(): "int",
    pa.int64(): "long",
    pa.float32(): "float",
    pa.float64(): "double",
    pa.string(): "char",
}

_WIDER_INTEGER = {
    pa.int8(): pa.int16(), pa.uint8(): pa.int16(), pa.uint16(): pa.int32(),
    pa.uint32(): pa.int64(), pa.uint64(): pa.int64(),
}


def portable_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` with every field's type replaced by one all output formats can carry."""
    return pa.schema([field.with_type(_portable(field.type)) for field in schema])


def _portable(kind: pa.DataType) -> pa.DataType:
    if kind in VOTABLE_DATATYPES:
        return kind
    if kind in _WIDER_INTEGER:
        return _WIDER_INTEGER[kind]
    if pa.types.is_float16(kind):
        return pa.float32()
    if pa.types.is_decimal(kind) or pa.types.is_null(kind):
        return pa.float64()
    if pa.types.is_dictionary(kind):
        return _portable(kind.value_type)
    if pa.types.is_fixed_size_list(kind) and _numeric(kind.value_type):
        return pa.list_(_portable(kind.value_type), kind.list_size)
    if (pa.types.is_list(kind) or pa.types.is_large_list(kind)) and _numeric(kind.value_type):
        return pa.list_(_portable(kind.value_type))
    return pa.string()


def _numeric(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)


def votable_datatype(kind: pa.DataType) -> tuple[str, str | None]:
    """The VOTable (datatype, arraysize) of a portable Arrow type."""
    if pa.types.is_fixed_size_list(kind):
        return VOTABLE_DATATYPES[kind.value_type], str(kind.list_size)
    if pa.types.is_list(kind):
        return VOTABLE_DATATYPES[kind.value_type], "*"
    return VOTABLE_DATATYPES[kind], "*" if kind == pa.string() else None


def is_array(kind: pa.DataType) -> bool:
    return pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind)


def list_values(column: pa.Array) -> pa.Array:
    """The child values of a list column's rows, those of NULL lists included."""
    if pa.types.is_list(column.type):
        return column.values.slice(column.offsets[0].as_py(),
                                   column.offsets[-1].as_py() - column.offsets[0].as_py())
    size = column.type.list_size
    return column.values.slice(column.offset * size, len(column) * size)


def array_text(column: pa.Array,
               number_text: Callable[[pa.Array], pa.Array] | None = None) -> pa.Array:
    """Each array as its values separated by spaces (NULL stays NULL), as VOTable TABLEDATA and
    CSV write arrays; ``number_text`` spells the values (plain Arrow text by default)."""
    if pa.types.is_list(column.type):
        offsets = pc.subtract(column.offsets, column.offsets[0])
    else:
        offsets = pa.array(np.arange(len(column) + 1, dtype=np.int32) * column.type.list_size)
    values = list_values(column)
    texts = (number_text or (lambda v: pc.cast(v, pa.string())))(values)
    return pc.binary_join(pa.ListArray.from_arrays(offsets, texts, mask=column.is_null()), " ")
