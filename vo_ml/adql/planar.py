"""``ml_in_polygon(x, y, 'x1 y1 x2 y2 ...')``: a lasso drawn on the 2-D latent map as ADQL.

The map (``ml_x``, ``ml_y``) is a plane, not the sky: ADQL's CONTAINS and POLYGON are spherical
and would bend its straight edges. A lasso is a list of vertices, so the test is the even-odd
rule of a crossing count: a ray from the point towards larger x crosses the polygon's edges an
odd number of times exactly when the point is inside. Since the vertices are a literal, every
edge's span and slope are known when the query is translated, and the test becomes plain SQL
(a sum of CASE expressions, modulo 2) that DuckDB evaluates column-wise and PostgreSQL runs as
it is; a bounding-box test in front keeps rows far from the lasso from evaluating any edge.

Points exactly on the boundary follow the half-open rule of the crossing count: an edge counts
for ``y`` from its lower end up to, but not including, its upper end, and a point counts when it
lies strictly left of the edge. So a point on a left or lower edge is inside and one on a right
or upper edge outside, and polygons that share an edge (a map cut into lassos) never both hold a
point on it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from sqlglot import exp
from sqlglot.generator import Generator

from vo_ml.adql.errors import E06, position

if TYPE_CHECKING:  # the checker imports latent.py, which imports this module
    from vo_ml.adql.checker import ResolvedColumn

__all__ = ["MlInPolygon", "MAX_VERTICES", "check_in_polygon", "in_polygon_sql",
           "polygon_vertices"]

#: The most vertices a polygon may have: each edge is a term of the SQL, and a lasso drawn by
#: hand needs far fewer (a browser can simplify a longer one).
MAX_VERTICES = 1000
_FORM = "ml_in_polygon(x, y, 'x1 y1 x2 y2 x3 y3 ...')"


class MlInPolygon(exp.Expression, exp.Func):
    """``ml_in_polygon``: 1 when the point lies inside the planar polygon, else 0."""

    arg_types = {"expressions": False}
    is_var_len_args = True
    _sql_names = ["ML_IN_POLYGON"]


def polygon_vertices(call: MlInPolygon) -> tuple[tuple[float, float], ...]:
    """The vertices of the polygon literal, read once and kept with the node (the check and the
    generator both ask); ValueError saying what is wrong with the text otherwise."""
    if "vertices" not in call.meta:
        call.meta["vertices"] = _vertices(call.expressions[2].this)
    return call.meta["vertices"]


def _vertices(text: str) -> tuple[tuple[float, float], ...]:
    words = text.replace(",", " ").split()
    values = []
    for word in words:
        try:
            value = float(word)
        except ValueError:
            raise ValueError(f"'{word}' is not a number") from None
        if not math.isfinite(value):
            raise ValueError(f"'{word}' is not a finite number")
        values.append(value)
    if len(values) % 2:
        raise ValueError(f"it has {len(values)} numbers, an odd count: give an x and a y for "
                         "every vertex")
    count = len(values) // 2
    if count < 3:
        raise ValueError(f"it has {count} vertices; a polygon needs at least 3")
    if count > MAX_VERTICES:
        raise ValueError(f"it has {count} vertices, more than the {MAX_VERTICES} this service "
                         "reads; simplify the lasso")
    return tuple(zip(values[::2], values[1::2], strict=True))


def check_in_polygon(call: MlInPolygon) -> None:
    """Three arguments, the third a string literal of at least three vertices: a polygon made
    by the query itself could not be turned into SQL before it runs."""
    arguments = call.expressions
    if len(arguments) != 3:
        raise E06(**position(call), function="ml_in_polygon",
                  detail=f"takes 3 arguments, {_FORM}, got {len(arguments)}")
    for argument in arguments[:2]:
        if isinstance(argument, exp.Literal) and argument.is_string:
            raise E06(**position(call), function="ml_in_polygon",
                      detail=f"x and y are numbers, such as the columns ml_x and ml_y, not the "
                             f"string '{argument.this}'")
    polygon = arguments[2]
    if not (isinstance(polygon, exp.Literal) and polygon.is_string):
        raise E06(**position(call), function="ml_in_polygon",
                  detail=f"the polygon must be a string literal of its vertices, "
                         f"'x1 y1 x2 y2 x3 y3 ...', not {polygon.sql()}")
    try:
        polygon_vertices(call)
    except ValueError as error:
        raise E06(**position(call), function="ml_in_polygon",
                  detail=f"'{polygon.this}' is not a polygon: {error}") from None


def in_polygon_sql(generator: Generator, node: exp.Expr) -> str:
    """The crossing count as SQL: NULL when x or y is NULL, 0 outside the bounding box, else
    the parity of the edges the ray from (x, y) towards larger x crosses.

    Only standard SQL (CASE, comparisons, arithmetic, ``%``): the same text serves PostgreSQL.
    """
    x_value, y_value = node.expressions[:2]
    for value in (x_value, y_value):
        _check_numeric(node, value)
    x, y = (f"({generator.sql(value)})" for value in (x_value, y_value))
    vertices = polygon_vertices(node)
    xs, ys = [v[0] for v in vertices], [v[1] for v in vertices]
    crossings = [_crossing(x, y, start, end)
                 for start, end in zip(vertices, vertices[1:] + vertices[:1], strict=True)
                 if start[1] != end[1]]
    inside_box = (f"{x} >= {_number(min(xs))} AND {x} < {_number(max(xs))} AND "
                  f"{y} >= {_number(min(ys))} AND {y} < {_number(max(ys))}")
    parity = f"{_balanced_sum(crossings)} % 2" if crossings else "0"
    return (f"(CASE WHEN {x} IS NULL OR {y} IS NULL THEN NULL WHEN {inside_box} THEN {parity} "
            "ELSE 0 END)")


def _crossing(x: str, y: str, start: tuple[float, float], end: tuple[float, float]) -> str:
    """1 when the ray from (x, y) towards larger x crosses the (not horizontal) edge from
    ``start`` to ``end``: y in the half-open span [lower end, upper end), x left of the edge."""
    (x1, y1), (x2, y2) = start, end
    slope = (x2 - x1) / (y2 - y1)
    return (f"CASE WHEN {y} >= {_number(min(y1, y2))} AND {y} < {_number(max(y1, y2))} AND "
            f"{x} < {_number(x1)} + ({y} - {_number(y1)}) * {_number(slope)} THEN 1 ELSE 0 END")


def _balanced_sum(terms: list[str]) -> str:
    """``terms`` added in pairs, then pairs of pairs...: a sum written ``a + b + c ...`` nests
    one level per term, and databases limit the depth of an expression (DuckDB to 1000)."""
    while len(terms) > 1:
        terms = [f"({' + '.join(terms[i:i + 2])})" for i in range(0, len(terms), 2)]
    return terms[0]


def _number(value: float) -> str:
    """A float as an SQL literal that keeps every bit; negative ones in parentheses, so that
    no ``- -`` can meet and read as a comment."""
    text = repr(value)
    return f"({text})" if text.startswith("-") else text


def _check_numeric(call: MlInPolygon, value: exp.Expr) -> None:
    """A column given as x or y must hold numbers: an array or a string would only fail in the
    database, in its words."""
    resolved: ResolvedColumn | None = value.meta.get("resolved") if isinstance(
        value, exp.Column) else None
    column = resolved.column if resolved is not None else None
    if column is not None and (column.is_array or column.datatype in ("char", "unicodeChar",
                                                                      "boolean")):
        raise E06(**position(call), function="ml_in_polygon",
                  detail=f"x and y are numbers, such as the columns ml_x and ml_y; "
                         f"'{value.sql()}' is not")
