"""ADQL geometry as SQL: regions are DALI arrays of degrees, and their kind is known from the query.

A point is ``[lon, lat]``, a circle ``[lon, lat, radius]``, a polygon ``[lon1, lat1, lon2, ...]``:
the values DALI's ``point``, ``circle`` and ``polygon`` xtypes serialise, so a geometry selected
by a query goes out as clients expect it. The kind of each argument is read from the query (a
constructor, or a column's xtype), so the common cases become arithmetic the database runs at full
speed: ``CONTAINS(POINT(ra, dec), CIRCLE(...))`` is a great-circle distance against a radius.
Polygons go to the backend's spherical functions (``vo_ml_contains`` and friends, see
:mod:`vo_ml.archive.sphere`), which no query can call by name.

BOX is the polygon of its four corners, offset from the centre by half the width in longitude and
half the height in latitude. Coordinate systems other than ICRS are not converted: every position
the archive publishes is ICRS, which is what COORDSYS answers.
"""

from __future__ import annotations

import functools
import re

import astropy.units as u
from sqlglot import exp
from sqlglot.generator import Generator

from vo_ml.adql.errors import E06, position
from vo_ml.adql.functions import (
    ADQL_FUNCTIONS,
    CAST_TYPE_META_KEY,
    GEOMETRY_CASTS,
    AdqlFunction,
    made_geometry,
)
from vo_ml.adql.latent import SqlGenerator
from vo_ml.archive.tap_schema import Column

POINT, CIRCLE, POLYGON = "point", "circle", "polygon"

#: STC-S region words (ADQL 2.0 REGION) and the constructor each becomes.
_STC_S = {"POSITION": "POINT", "CIRCLE": "CIRCLE", "BOX": "BOX", "POLYGON": "POLYGON"}
_STC_S_FRAMES = {"ICRS", "FK5", "J2000", "UNKNOWNFRAME", "GEOCENTER", "BARYCENTER", "TOPOCENTER",
                 "UNKNOWNREFPOS", "SPHERICAL2"}
#: The arraysize DALI gives each kind.
_ARRAYSIZE = {POINT: "2", CIRCLE: "3", POLYGON: "*"}


def region_kind(value: exp.Expr) -> str | None:
    """``point``, ``circle`` or ``polygon`` when the query says what ``value`` is, else None."""
    value = value.unnest()
    if isinstance(value, (AdqlFunction, exp.Cast)):
        made = made_geometry(value)
        return made if made in _ARRAYSIZE else None
    resolved = value.meta.get("resolved") if isinstance(value, exp.Column) else None
    column = resolved.column if resolved is not None else None
    return column.xtype if column is not None and column.xtype in _ARRAYSIZE else None


def region_column(name: str, kind: str) -> Column:
    """The metadata of a computed region in a result: a DALI array of degrees."""
    return Column(name, "double", f"a {kind} computed by the query", arraysize=_ARRAYSIZE[kind],
                  xtype=kind, unit="deg")


def prepare(tree: exp.Query) -> None:
    """Rewrite REGION's STC-S text and CASTs to a geometry as the constructors they stand for,
    so the checker and the generator see kinds they know."""
    for call in list(tree.find_all(AdqlFunction)):
        if call.sql_name() == "REGION":
            call.replace(_region(call))
    for cast in list(tree.find_all(exp.Cast)):
        if cast.meta.get(CAST_TYPE_META_KEY) in GEOMETRY_CASTS:
            cast.replace(_region_cast(cast))


def convert_units(tree: exp.Query) -> None:
    """IN_UNIT as a multiplication; run after the checker, which finds each column's unit."""
    for call in list(tree.find_all(AdqlFunction)):
        if call.sql_name() == "IN_UNIT":
            call.replace(_in_unit(call))


def _region(call: AdqlFunction) -> exp.Expr:
    """REGION('Circle ICRS 10 20 1') as the constructor it names."""
    text = call.expressions[0].this
    words = text.split()
    shape = words[0].upper() if words else ""
    numbers = [w for w in words[1:] if w.upper() not in _STC_S_FRAMES]
    if shape not in _STC_S or not all(re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", n)
                                      for n in numbers):
        raise E06(**position(call), function="REGION",
                  detail=f"'{text}' is no STC-S region this service reads: write e.g. "
                         "'Circle ICRS 10 20 1', 'Box ICRS 10 20 2 1', 'Polygon ICRS 10 20 11 20 "
                         "11 21' or 'Position ICRS 10 20'")
    region = ADQL_FUNCTIONS[_STC_S[shape]](expressions=[exp.Literal.number(n) for n in numbers])
    region.meta.update(call.meta)
    return region


def _in_unit(call: AdqlFunction) -> exp.Expr:
    """IN_UNIT(column, 'unit'): the column's TAP_SCHEMA unit converted with astropy."""
    value, unit = call.expressions
    resolved = value.meta.get("resolved") if isinstance(value, exp.Column) else None
    source = resolved.column.unit if resolved is not None and resolved.column is not None else None
    if not source:
        raise E06(**position(call), function="IN_UNIT",
                  detail=f"'{value.sql()}' has no unit in TAP_SCHEMA; convert a column that has one")
    try:
        factor = _conversion_factor(source, unit.this)
    except ValueError as error:
        raise E06(**position(call), function="IN_UNIT",
                  detail=f"cannot convert {value.sql()} from '{source}' to '{unit.this}': {error}") from None
    return exp.Paren(this=exp.Mul(this=value.copy(), expression=exp.Literal.number(repr(factor))))


@functools.lru_cache(maxsize=256)
def _conversion_factor(source: str, target: str) -> float:
    """What one ``source`` is in ``target`` (VOUnit strings), worked out once per pair rather
    than once per query: astropy warns of a unit VOUnit deprecates (Angstrom) at each parse."""
    return u.Unit(source, format="vounit").to(u.Unit(target, format="vounit"))


def _region_cast(cast: exp.Cast) -> exp.Expr:
    """CAST(x AS POINT) and the like: a DALI string of numbers, or an array, as a region."""
    value = cast.this
    if isinstance(value, exp.Literal) and value.is_string:
        value = exp.func("string_split", exp.func("trim", value.copy()), exp.Literal.string(" "))
    size = _ARRAYSIZE[made_geometry(cast)].strip("*")
    array = exp.cast(value.copy(), exp.DataType.build(f"DOUBLE[{size}]", dialect="duckdb"))
    array.meta.update(cast.meta)
    return array


def _double(generator: Generator, value: exp.Expr) -> str:
    """A number as a DOUBLE, so integer columns never meet integer arithmetic."""
    if isinstance(value, exp.Literal) and value.is_number:
        return repr(float(value.this))
    return f"CAST({generator.sql(value)} AS DOUBLE)"


def _is(value: exp.Expr, name: str) -> bool:
    value = value.unnest()
    return isinstance(value, AdqlFunction) and value.sql_name() == name


def _parts(generator: Generator, value: exp.Expr, count: int) -> list[str]:
    """The first ``count`` numbers of a region: straight from its constructor's arguments when
    the query builds it, else indexed out of the array."""
    value = value.unnest()
    if _is(value, "POINT") or _is(value, "CIRCLE"):
        arguments = value.operands
        if len(arguments) == 2 and _is(value, "CIRCLE"):
            return [*_parts(generator, arguments[0], 2), _double(generator, arguments[1])][:count]
        return [_double(generator, a) for a in arguments[:count]]
    array = _array(generator, value)
    return [f"({array})[{index}]" for index in range(1, count + 1)]


def _array(generator: Generator, value: exp.Expr) -> str:
    """A region as a ``DOUBLE[]`` value."""
    if isinstance(value.unnest(), AdqlFunction):
        return generator.sql(value)
    return f"CAST({generator.sql(value)} AS DOUBLE[])"


def great_circle_sql(lon1: str, lat1: str, lon2: str, lat2: str) -> str:
    """SQL for the great-circle angle in degrees between two positions given as SQL, by
    Vincenty's formula: accurate at every separation, with no function taken outside its
    domain. The archive's one cone rule: ADQL's DISTANCE and point-in-circle CONTAINS, and
    SSA's POS and SIZE."""
    dlon = f"radians({lon2} - {lon1})"
    lat1, lat2 = f"radians({lat1})", f"radians({lat2})"
    across = (f"sqrt(pow(cos({lat2}) * sin({dlon}), 2) + pow(cos({lat1}) * sin({lat2}) "
              f"- sin({lat1}) * cos({lat2}) * cos({dlon}), 2))")
    along = f"sin({lat1}) * sin({lat2}) + cos({lat1}) * cos({lat2}) * cos({dlon})"
    return f"degrees(atan2({across}, {along}))"


def _region_array(numbers: list[str], kind: str) -> str:
    """A region value from its numbers, typed as its xtype's arraysize says (DuckDB would read
    1.0 as a DECIMAL, and a point must be written as a fixed pair)."""
    size = _ARRAYSIZE[kind].strip("*")
    return f"CAST([{', '.join(numbers)}] AS DOUBLE[{size}])"


def _point_sql(generator: Generator, node: AdqlFunction) -> str:
    return _region_array([_double(generator, a) for a in node.operands], POINT)


def _circle_sql(generator: Generator, node: AdqlFunction) -> str:
    return _region_array(_parts(generator, node, 3), CIRCLE)


def _box_sql(generator: Generator, node: AdqlFunction) -> str:
    arguments = node.operands
    lon, lat = _parts(generator, arguments[0], 2) if len(arguments) == 3 else [
        _double(generator, a) for a in arguments[:2]]
    width, height = (f"({generator.sql(a)}) / 2" for a in arguments[-2:])
    corners = [(lon, "-", width, lat, "-", height), (lon, "+", width, lat, "-", height),
               (lon, "+", width, lat, "+", height), (lon, "-", width, lat, "+", height)]
    return _region_array([f"{x} {sx} {dx}, {y} {sy} {dy}" for x, sx, dx, y, sy, dy in corners],
                         POLYGON)


def _polygon_sql(generator: Generator, node: AdqlFunction) -> str:
    arguments = node.operands
    if all(_is(a, "POINT") for a in arguments) or not any(region_kind(a) for a in arguments):
        numbers = [part for a in arguments for part in (
            _parts(generator, a, 2) if _is(a, "POINT") else [_double(generator, a)])]
        return _region_array(numbers, POLYGON)
    return "flatten([" + ", ".join(_array(generator, a) for a in arguments) + "])"


def _coordinate_sql(index: int) -> SqlGenerator:
    def coordinate(generator: Generator, node: AdqlFunction) -> str:
        return _parts(generator, node.expressions[0], 2)[index]
    return coordinate


def _distance_sql(generator: Generator, node: AdqlFunction) -> str:
    arguments = node.expressions
    if len(arguments) == 4:
        return great_circle_sql(*(_double(generator, a) for a in arguments))
    return great_circle_sql(*_parts(generator, arguments[0], 2), *_parts(generator, arguments[1], 2))


def _contains_sql(generator: Generator, node: AdqlFunction) -> str:
    inner, outer = node.expressions
    if region_kind(inner) == POINT and region_kind(outer) == CIRCLE:
        lon, lat, radius = _parts(generator, outer, 3)
        return f"CAST({great_circle_sql(*_parts(generator, inner, 2), lon, lat)} <= {radius} AS INTEGER)"
    return f"vo_ml_contains({_array(generator, inner)}, {_array(generator, outer)})"


def _intersects_sql(generator: Generator, node: AdqlFunction) -> str:
    first, second = node.expressions
    kinds = region_kind(first), region_kind(second)
    if kinds == (CIRCLE, CIRCLE):
        lon1, lat1, radius1 = _parts(generator, first, 3)
        lon2, lat2, radius2 = _parts(generator, second, 3)
        return f"CAST({great_circle_sql(lon1, lat1, lon2, lat2)} <= {radius1} + {radius2} AS INTEGER)"
    if kinds[1] == POINT:
        first, second = second, first
    if region_kind(first) == POINT:
        return _contains_sql(generator, ADQL_FUNCTIONS["CONTAINS"](expressions=[first, second]))
    return f"vo_ml_intersects({_array(generator, first)}, {_array(generator, second)})"


def _area_sql(generator: Generator, node: AdqlFunction) -> str:
    region = node.expressions[0]
    if region_kind(region) == CIRCLE:
        radius = _parts(generator, region, 3)[2]
        return f"(2 * pi() * (1 - cos(radians({radius}))) * pow(degrees(1), 2))"
    return f"vo_ml_area({_array(generator, region)})"


def _centroid_sql(generator: Generator, node: AdqlFunction) -> str:
    region = node.expressions[0]
    if region_kind(region) in (POINT, CIRCLE):
        return _region_array(_parts(generator, region, 2), POINT)
    return f"CAST(vo_ml_centroid({_array(generator, region)}) AS DOUBLE[2])"


def _coordinate_system_sql(generator: Generator, node: AdqlFunction) -> str:
    return f"CASE WHEN {generator.sql(node.expressions[0])} IS NULL THEN NULL ELSE 'ICRS' END"


#: The DuckDB generator's SQL for each geometry function.
DUCKDB_TRANSFORMS: dict[type[exp.Expr], SqlGenerator] = {
    ADQL_FUNCTIONS[name]: sql for name, sql in {
        "POINT": _point_sql, "CIRCLE": _circle_sql, "BOX": _box_sql, "POLYGON": _polygon_sql,
        "COORD1": _coordinate_sql(0), "COORD2": _coordinate_sql(1), "DISTANCE": _distance_sql,
        "CONTAINS": _contains_sql, "INTERSECTS": _intersects_sql, "AREA": _area_sql,
        "CENTROID": _centroid_sql, "COORDSYS": _coordinate_system_sql,
    }.items()
}
