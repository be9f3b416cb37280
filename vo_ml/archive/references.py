"""Which row a name means: the one rule by which a similarity reference names a row.

``ml_distance(embedding, 'name')`` compares every row with the row ``name`` names. Publisher
DIDs and obs_ids need not be unique, so the rule is: the first key of :data:`REFERENCE_KEYS`
(publisher DID before obs_id) that any row has the name in; among the rows that have it there,
the first in the backend's row order (:attr:`vo_ml.archive.backend.Backend.row_id`). The rule
has two forms, both here: SQL (:func:`named_row_sql`), which a translated query and the
service's table lookup run, and sorted key maps (:func:`key_map_order`,
:func:`named_position`), which a neighbour index keeps. An exact and an indexed search of the
same query therefore always compare with the same vector.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

__all__ = ["REFERENCE_KEYS", "did_authority", "key_map_order", "named_position", "named_row_sql",
           "reference_keys"]

#: The columns a row is named by as a similarity reference, in the order they are tried.
REFERENCE_KEYS = ("obs_publisher_did", "obs_id")


def reference_keys(columns: Iterable[str]) -> tuple[str, ...]:
    """The reference keys a table with ``columns`` has, in the order the rule tries them."""
    present = {column.lower() for column in columns}
    return tuple(key for key in REFERENCE_KEYS if key in present)


def named_row_sql(table: str, selected: str, keys: tuple[str, ...], value: str,
                  row_id: str) -> str:
    """SQL for ``selected`` of the row of ``table`` that ``value`` names; ``value`` is SQL (a
    literal, or a parameter that each key's branch takes once). One branch per key rather than
    an OR, so that each is an index lookup and not a scan of the table."""
    branches = " UNION ALL ".join(
        f"SELECT {selected}, {rank} AS vo_ml_key, {row_id} AS vo_ml_row FROM {table} "
        f"WHERE {key} = {value}" for rank, key in enumerate(keys))
    return f"SELECT {selected} FROM ({branches}) ORDER BY vo_ml_key, vo_ml_row LIMIT 1"


def key_map_order(names: np.ndarray, row_ids: np.ndarray) -> np.ndarray:
    """The order of a key map's entries: by name, then by row order, so that the first entry
    of a name is the row the name means in that key."""
    return np.lexsort((row_ids, names))


def named_position(key_maps: Mapping[str, tuple[np.ndarray, np.ndarray]],
                   keys: tuple[str, ...], name: str) -> int | None:
    """The position the row ``name`` names has in an index (-1: the row has no vector), found
    in ``key_maps``: per key, its names sorted by :func:`key_map_order` and each one's position.
    None when the maps cannot tell: no row has the name, or a key tried has no map."""
    wanted = name.encode("utf-8")
    for key in keys:
        if key not in key_maps:
            return None
        names, positions = key_maps[key]
        found = int(np.searchsorted(names, wanted))
        if found < len(names) and names[found] == wanted:
            return int(positions[found])
    return None


def did_authority(did: str) -> str:
    """The IVOA authority of an ``ivo://`` identifier: ``vo-ml.example`` of
    ``ivo://vo-ml.example/miles?m0067``; the HiPS and the registry records of an archive are
    named under the authority of its publisher DIDs."""
    return did.removeprefix("ivo://").split("/")[0].split("?")[0].split("#")[0]
