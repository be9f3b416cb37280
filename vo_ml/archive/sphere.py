"""Spherical geometry of ADQL regions, vectorised with numpy, for the backends to call as SQL functions.

ADQL's CONTAINS, INTERSECTS, AREA and CENTROID are plain distances for points and circles, which
the generated SQL computes itself; polygons need the vector algebra here. A region is a DALI
value in degrees, and its length says what it is, as DALI's xtypes do: a point is (lon, lat), a
circle (lon, lat, radius), a polygon (lon1, lat1, lon2, lat2, ...) with three or more vertices
joined by great-circle arcs. A polygon's inside is the side its edges wind around, which for
every polygon smaller than a hemisphere is the region they enclose.

The SQL functions take whole Arrow columns. Rows are grouped by the shapes of their arguments, so
a million points against one polygon are one numpy computation, not a million calls.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["SQL_FUNCTIONS", "contains", "intersects", "area", "centroid"]

#: Two directions closer than this (radians, about 0.2 milliarcseconds) are the same point.
_SAME = 1e-9
_SQUARE_DEGREES_PER_STERADIAN = np.degrees(1.0) ** 2


def unit_vectors(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Directions on the unit sphere for longitudes and latitudes in degrees; shape (..., 3)."""
    lon, lat = np.radians(lon), np.radians(lat)
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=-1)


def _dot(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.einsum("...i,...i->...", u, v)


def _angle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The angle between directions, accurate for tiny and for near-opposite ones."""
    return np.arctan2(np.linalg.norm(np.cross(u, v), axis=-1), _dot(u, v))


def _vertices(polygons: np.ndarray) -> np.ndarray:
    """(n, 2m) lon/lat rows -> (n, m, 3) vertex directions."""
    return unit_vectors(polygons[:, 0::2], polygons[:, 1::2])


def _edges(vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end of every edge, the last vertex joined back to the first."""
    return vertices, np.roll(vertices, -1, axis=-2)


def _inside(points: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Whether each point (..., 3) is inside its polygon (..., m, 3).

    Seen from a point inside, the edges turn once around it in the polygon's own sense; seen from
    the antipode of an inside point they turn once the other way, and from outside not at all.
    """
    start, end = _edges(vertices)
    p = points[..., None, :]
    turn = np.arctan2(_dot(p, np.cross(start, end)), _dot(start, end) - _dot(p, start) * _dot(p, end))
    return turn.sum(axis=-1) * _orientation(vertices) > np.pi


def _orientation(vertices: np.ndarray) -> np.ndarray:
    """+1 where the vertices run anticlockwise around the smaller region they bound, else -1."""
    solid_angle = _fan_triangles(vertices)[0].sum(axis=-1)
    return np.where(np.abs(solid_angle) > 2 * np.pi, -1.0, 1.0) * np.sign(solid_angle)


def _arc_distance(points: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Angle from each point (..., 3) to the nearest point of its arcs (..., m, 3), per arc."""
    p = points[..., None, :]
    normal = np.cross(start, end)
    normal /= np.maximum(np.linalg.norm(normal, axis=-1, keepdims=True), 1e-300)
    foot = p - _dot(p, normal)[..., None] * normal
    within = (_dot(np.cross(start, foot), normal) >= 0) & (_dot(np.cross(foot, end), normal) >= 0)
    to_circle = np.abs(np.arcsin(np.clip(_dot(p, normal), -1, 1)))
    to_ends = np.minimum(_angle(p, start), _angle(p, end))
    return np.where(within, to_circle, to_ends)


def _edges_cross(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Whether any edge of each first polygon (n, m, 3) crosses an edge of the second (n, k, 3)."""
    a, b = (e[:, :, None, :] for e in _edges(first))
    c, d = (e[:, None, :, :] for e in _edges(second))
    ab, cd = np.cross(a, b), np.cross(c, d)
    straddles_cd = np.sign(_dot(a, cd)) * np.sign(_dot(b, cd)) < 0
    straddles_ab = np.sign(_dot(c, ab)) * np.sign(_dot(d, ab)) < 0
    meeting = np.cross(ab, cd)
    # The great circles meet at ±meeting; the arcs cross when one of the two lies on both.
    on_both = [(_dot(np.cross(a, m), ab) > 0) & (_dot(np.cross(m, b), ab) > 0)
               & (_dot(np.cross(c, m), cd) > 0) & (_dot(np.cross(m, d), cd) > 0)
               for m in (meeting, -meeting)]
    return (straddles_cd & straddles_ab & (on_both[0] | on_both[1])).any(axis=(1, 2))


def _circle_parts(circles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return unit_vectors(circles[:, 0], circles[:, 1]), np.radians(circles[:, 2])


def _point_in(point: np.ndarray, region: np.ndarray) -> np.ndarray:
    p = unit_vectors(point[:, 0], point[:, 1])
    if region.shape[1] == 2:
        return _angle(p, unit_vectors(region[:, 0], region[:, 1])) <= _SAME
    if region.shape[1] == 3:
        centre, radius = _circle_parts(region)
        return _angle(p, centre) <= radius + _SAME
    return _inside(p, _vertices(region))


def _contains(inner: np.ndarray, outer: np.ndarray) -> np.ndarray:
    """Whether each ``inner`` region lies within its ``outer`` region (ADQL's CONTAINS)."""
    if inner.shape[1] == 2:
        return _point_in(inner, outer)
    if outer.shape[1] == 2:
        return (inner.shape[1] == 3) & (inner[:, 2] == 0) & _point_in(inner[:, :2], outer)
    if inner.shape[1] == 3:
        centre, radius = _circle_parts(inner)
        if outer.shape[1] == 3:
            outer_centre, outer_radius = _circle_parts(outer)
            return _angle(centre, outer_centre) + radius <= outer_radius + _SAME
        vertices = _vertices(outer)
        edge_distance = _arc_distance(centre, *_edges(vertices)).min(axis=-1)
        return _inside(centre, vertices) & (edge_distance >= radius - _SAME)
    vertices = _vertices(inner)
    if outer.shape[1] == 3:
        centre, radius = _circle_parts(outer)
        return (_angle(vertices, centre[:, None, :]) <= radius[:, None] + _SAME).all(axis=1)
    outer_vertices = _vertices(outer)
    all_inside = _inside(vertices, outer_vertices[:, None, :, :]).all(axis=1)
    return all_inside & ~_edges_cross(vertices, outer_vertices)


def _intersects(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Whether each pair of regions shares a point (ADQL's INTERSECTS)."""
    if first.shape[1] == 2:
        return _point_in(first, second)
    if second.shape[1] == 2:
        return _point_in(second, first)
    if first.shape[1] > second.shape[1]:
        first, second = second, first
    if first.shape[1] == 3:
        centre, radius = _circle_parts(first)
        if second.shape[1] == 3:
            other_centre, other_radius = _circle_parts(second)
            return _angle(centre, other_centre) <= radius + other_radius + _SAME
        vertices = _vertices(second)
        edge_distance = _arc_distance(centre, *_edges(vertices)).min(axis=-1)
        return _inside(centre, vertices) | (edge_distance <= radius + _SAME)
    a, b = _vertices(first), _vertices(second)
    a_in_b = _inside(a, b[:, None, :, :]).any(axis=1)
    b_in_a = _inside(b, a[:, None, :, :]).any(axis=1)
    return a_in_b | b_in_a | _edges_cross(a, b)


def _fan_triangles(vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The signed solid angle and centre of the triangles fanning out from each first vertex."""
    first = vertices[..., :1, :]
    second, third = vertices[..., 1:-1, :], vertices[..., 2:, :]
    # Van Oosterom and Strackee's formula for a triangle's solid angle.
    numerator = _dot(first, np.cross(second, third))
    denominator = 1 + _dot(first, second) + _dot(second, third) + _dot(third, first)
    solid_angle = 2 * np.arctan2(numerator, denominator)
    centres = first + second + third
    return solid_angle, centres / np.linalg.norm(centres, axis=-1, keepdims=True)


def _area(regions: np.ndarray) -> np.ndarray:
    """Solid angle in square degrees."""
    if regions.shape[1] == 2:
        return np.zeros(len(regions))
    if regions.shape[1] == 3:
        steradians = 2 * np.pi * (1 - np.cos(np.radians(regions[:, 2])))
    else:
        steradians = np.abs(_fan_triangles(_vertices(regions))[0].sum(axis=-1))
        steradians = np.where(steradians > 2 * np.pi, 4 * np.pi - steradians, steradians)
    return steradians * _SQUARE_DEGREES_PER_STERADIAN


def _centroid(regions: np.ndarray) -> np.ndarray:
    """The centre of mass on the sphere, as (lon, lat) in degrees."""
    if regions.shape[1] <= 3:
        return regions[:, :2]
    solid_angle, centres = _fan_triangles(_vertices(regions))
    direction = (solid_angle[..., None] * centres).sum(axis=1)
    lon = np.degrees(np.arctan2(direction[:, 1], direction[:, 0])) % 360
    lat = np.degrees(np.arctan2(direction[:, 2], np.hypot(direction[:, 0], direction[:, 1])))
    return np.stack([lon, lat], axis=1)


def _check_regions(lengths: np.ndarray, argument: str) -> None:
    bad = lengths[(lengths < 6) & (lengths != 2) & (lengths != 3) | (lengths % 2 == 1) & (lengths > 3)]
    if len(bad):
        raise ValueError(
            f"{argument} of a geometry function has {bad[0]} values, which is no ADQL "
            "region: a point has 2 (lon, lat), a circle 3 (lon, lat, radius), a polygon 2 per "
            "vertex and at least 3 vertices")


def _starts_and_values(column: pa.ListArray) -> tuple[np.ndarray, np.ndarray]:
    """Where each row of a list column starts in its values, and the values."""
    offsets = column.offsets.to_numpy()
    return offsets[:-1] - offsets[0], column.flatten().to_numpy(zero_copy_only=False)


def _by_shape(compute: Callable[..., np.ndarray], *columns: pa.ListArray) -> np.ma.MaskedArray:
    """``compute`` on each group of rows whose regions have the same lengths, masked where an
    argument is NULL or holds a NULL value."""
    lengths = np.stack([pc.list_value_length(c).fill_null(0).to_numpy() for c in columns], axis=1)
    valid = np.logical_and.reduce([c.is_valid().to_numpy(zero_copy_only=False) for c in columns])
    for index, _ in enumerate(columns):
        _check_regions(lengths[valid, index], f"argument {index + 1}")
    flat = [_starts_and_values(c) for c in columns]
    results: np.ma.MaskedArray | None = None
    for shape in np.unique(lengths[valid], axis=0):
        rows = np.flatnonzero(valid & (lengths == shape).all(axis=1))
        arguments = [values[starts[rows, None] + np.arange(n)]
                     for (starts, values), n in zip(flat, shape, strict=True)]
        known = ~np.logical_or.reduce([np.isnan(a).any(axis=1) for a in arguments])
        values = compute(*(_one_if_constant(a[known]) for a in arguments))
        values = np.broadcast_to(values, (int(known.sum()), *values.shape[1:]))
        if results is None:
            results = np.ma.masked_all((len(lengths), *values.shape[1:]), values.dtype)
        results[rows[known]] = values
    return results if results is not None else np.ma.masked_all(len(lengths))


def _one_if_constant(regions: np.ndarray) -> np.ndarray:
    """A single row when every row holds the same region (a polygon written in the query comes
    once per row): its edges and orientation are then worked out once, and broadcast."""
    return regions[:1] if len(regions) > 1 and (regions == regions[0]).all() else regions


def contains(inner: pa.ListArray, outer: pa.ListArray) -> pa.Array:
    """1 where ``inner`` lies within ``outer``, else 0."""
    return _column(_by_shape(_contains, _chunk(inner), _chunk(outer)), pa.int32())


def intersects(first: pa.ListArray, second: pa.ListArray) -> pa.Array:
    """1 where the two regions overlap, else 0."""
    return _column(_by_shape(_intersects, _chunk(first), _chunk(second)), pa.int32())


def area(regions: pa.ListArray) -> pa.Array:
    """The area of each region in square degrees."""
    return _column(_by_shape(_area, _chunk(regions)), pa.float64())


def centroid(regions: pa.ListArray) -> pa.Array:
    """The centre of each region as a point (lon, lat)."""
    centres = _by_shape(_centroid, _chunk(regions))
    if centres.ndim == 1:
        return pa.nulls(len(centres), pa.list_(pa.float64()))
    offsets = pa.array(np.arange(0, 2 * len(centres) + 1, 2), pa.int32())
    mask = pa.array(np.ma.getmaskarray(centres).any(axis=1))
    return pa.ListArray.from_arrays(offsets, pa.array(np.ma.getdata(centres).ravel()), mask=mask)


def _column(values: np.ma.MaskedArray, kind: pa.DataType) -> pa.Array:
    return pa.array(np.ma.getdata(values).astype(kind.to_pandas_dtype()), kind,
                    mask=np.ma.getmaskarray(values))


def _chunk(column: pa.Array | pa.ChunkedArray) -> pa.ListArray:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


#: SQL function name -> (implementation, number of region arguments, SQL return type).
SQL_FUNCTIONS: dict[str, tuple[Callable[..., pa.Array], int, str]] = {
    "vo_ml_contains": (contains, 2, "INTEGER"),
    "vo_ml_intersects": (intersects, 2, "INTEGER"),
    "vo_ml_area": (area, 1, "DOUBLE"),
    "vo_ml_centroid": (centroid, 1, "DOUBLE[]"),
}
