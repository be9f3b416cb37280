"""The functions ADQL queries may call: the standard ADQL ones, and the service's own ``ml_*``.

Only functions listed here are reachable. The parser maps exactly these names to expressions, so
any other call (``read_csv``, ``pg_sleep``, ``current_setting``...) stays an anonymous call that the
checker rejects by name before any SQL is generated: the backend never sees an undeclared function.

The service's own functions are declared in :mod:`vo_ml.adql.latent`, each once. A check (never
a query) may also declare other services' functions by their form: see :class:`DeclaredFunction`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar

from sqlglot import exp

from vo_ml.adql.latent import FUNCTIONS

#: Meta key of a CAST: its target type as written (``DOUBLE PRECISION``, ``CHAR(30)``), since
#: sqlglot reads ADQL's REAL and the backend's FLOAT alike.
CAST_TYPE_META_KEY = "adql_type"

#: Standard ADQL 2.1 functions sqlglot has expressions for, with the fewest and the most
#: arguments ADQL allows (``None``: no limit). CAST is parsed as the construct it is.
ARGUMENT_COUNTS: Mapping[str, tuple[int, int | None]] = MappingProxyType({
    **dict.fromkeys(["ABS", "CEILING", "DEGREES", "EXP", "FLOOR", "LOG", "LOG10", "RADIANS",
                     "SQRT", "SIN", "COS", "TAN", "ASIN", "ACOS", "ATAN", "COT", "LOWER", "UPPER",
                     "COUNT", "SUM", "AVG", "MIN", "MAX"], (1, 1)),
    **dict.fromkeys(["MOD", "POWER", "ATAN2"], (2, 2)),
    **dict.fromkeys(["ROUND", "TRUNCATE"], (1, 2)),
    "PI": (0, 0),
    "RAND": (0, 1),
    "COALESCE": (1, None),
})


class AdqlFunction(exp.Expression, exp.Func):
    """A standard ADQL function sqlglot has no expression for: geometry, and IN_UNIT.

    The arguments are kept as a list, as written, so the checker reports a wrong call in ADQL's
    terms. :mod:`vo_ml.adql.geometry` turns them into backend SQL (REGION and IN_UNIT are
    rewritten first, from the query's own text and the columns' units).
    """

    arg_types = {"expressions": False}
    is_var_len_args = True
    #: How ADQL calls it, for error messages.
    form: ClassVar[str] = ""
    #: The argument lists ADQL allows, one letter per argument: ``n`` a number (or any value
    #: but a geometry), ``p`` a point (or a column holding one), ``s`` a string literal, ``*``
    #: anything (ADQL services accept e.g. CENTROID(3)).
    signatures: ClassVar[tuple[str, ...]] = ()
    #: Whether an ADQL 2.0 coordinate system (a string literal, or NULL) may come first.
    takes_coordinate_system: ClassVar[bool] = False
    #: What it returns, when that is a geometry: ``"point"``, ``"circle"``, ``"polygon"``, or
    #: ``"region"`` (any of them, as REGION's text says).
    geometry: ClassVar[str | None] = None

    @classmethod
    def signatures_for(cls, count: int) -> tuple[str, ...]:
        """The allowed argument lists of ``count`` arguments (coordinate system excluded)."""
        return tuple(s for s in cls.signatures if len(s) == count)

    @property
    def operands(self) -> list[exp.Expr]:
        """The arguments without ADQL 2.0's leading coordinate system (a string literal, as
        ADQL's grammar has it, or NULL)."""
        arguments = self.expressions
        if self.takes_coordinate_system and arguments and (
                isinstance(arguments[0], exp.Null)
                or (isinstance(arguments[0], exp.Literal) and arguments[0].is_string)):
            return arguments[1:]
        return arguments


class AdqlPolygon(AdqlFunction):
    """POLYGON: three or more vertices, each a point or a longitude, latitude pair."""

    _sql_names = ["POLYGON"]
    form = "POLYGON([coordsys,] three or more points, or three or more longitude, latitude pairs)"
    takes_coordinate_system = True
    geometry = "polygon"

    @classmethod
    def signatures_for(cls, count: int) -> tuple[str, ...]:
        points = ("p" * count,) if count >= 3 else ()
        pairs = ("n" * count,) if count >= 6 and count % 2 == 0 else ()
        return points + pairs


def _adql_function(name: str, form: str, signatures: tuple[str, ...], geometry: str | None = None,
                   takes_coordinate_system: bool = False) -> type[AdqlFunction]:
    """An :class:`AdqlFunction` class for ``name``; its key (``adqlpoint``) names no sqlglot node,
    so no sqlglot generator mistakes it for a function of the same name."""
    return type(f"Adql{name.title().replace('_', '')}", (AdqlFunction,), {
        "_sql_names": [name], "form": form, "signatures": signatures, "geometry": geometry,
        "takes_coordinate_system": takes_coordinate_system})


#: The standard ADQL functions sqlglot has no expression for, by upper-case name.
ADQL_FUNCTIONS: Mapping[str, type[AdqlFunction]] = MappingProxyType({f.sql_name(): f for f in (
    _adql_function("POINT", "POINT([coordsys,] longitude, latitude)", ("nn",), "point", True),
    _adql_function("CIRCLE", "CIRCLE([coordsys,] center point or longitude, latitude, radius)",
                   ("nnn", "pn"), "circle", True),
    _adql_function("BOX", "BOX([coordsys,] center point or longitude, latitude, width, height)",
                   ("nnnn", "pnn"), "polygon", True),
    AdqlPolygon,
    _adql_function("REGION", "REGION('STC-S text')", ("s",), "region"),
    _adql_function("CENTROID", "CENTROID(geometry)", ("*",), "point"),
    _adql_function("AREA", "AREA(geometry)", ("*",)),
    _adql_function("COORD1", "COORD1(point)", ("p",)),
    _adql_function("COORD2", "COORD2(point)", ("p",)),
    _adql_function("COORDSYS", "COORDSYS(geometry)", ("*",)),
    _adql_function("CONTAINS", "CONTAINS(geometry, geometry)", ("**",)),
    _adql_function("INTERSECTS", "INTERSECTS(geometry, geometry)", ("**",)),
    _adql_function("DISTANCE", "DISTANCE(point, point) or DISTANCE(lon1, lat1, lon2, lat2)",
                   ("pp", "nnnn")),
    _adql_function("IN_UNIT", "IN_UNIT(value, 'unit')", ("*s",)),
)})

#: The geometry types ADQL's CAST converts to, each named as the constructor of its kind.
GEOMETRY_CASTS = frozenset({"POINT", "CIRCLE", "POLYGON"})


def made_geometry(value: exp.Expr) -> str | None:
    """The kind of geometry (see :attr:`AdqlFunction.geometry`) ``value`` is made as, by a
    constructor or a CAST; None when the query does not make it."""
    value = value.unnest()
    if isinstance(value, AdqlFunction):
        return value.geometry
    cast_type = value.meta.get(CAST_TYPE_META_KEY) if isinstance(value, exp.Cast) else None
    return ADQL_FUNCTIONS[cast_type].geometry if cast_type in GEOMETRY_CASTS else None


#: The optional ADQL 2.1 features the service runs, as TAPRegExt declares them: the feature
#: type (after ``ivo://ivoa.net/std/TAPRegExt#``) and the forms of that type.
OPTIONAL_FEATURES: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "features-adqlgeo": ("POINT", "CIRCLE", "BOX", "POLYGON", "REGION", "CENTROID", "AREA",
                         "COORD1", "COORD2", "COORDSYS", "CONTAINS", "INTERSECTS", "DISTANCE"),
    "features-adql-string": ("LOWER", "ILIKE"),
    "features-adql-sets": ("UNION", "EXCEPT", "INTERSECT"),
    "features-adql-common-table": ("WITH",),
    "features-adql-type": ("CAST",),
    "features-adql-unit": ("IN_UNIT",),
    "features-adql-offset": ("OFFSET",),
})

#: Every standard ADQL 2.1 function (math, trigonometric, string, aggregate, conversion, geometry).
STANDARD_FUNCTIONS = frozenset({*ARGUMENT_COUNTS, *ADQL_FUNCTIONS, "CAST"})


@dataclass(frozen=True)
class DeclaredFunction:
    """A user-defined function declared for a check by its TAPRegExt form, as another service
    would declare it: its name and argument count are checked, it is never run."""

    name: str
    parameters: tuple[str, ...]
    form: str

    #: ``name(parameter type, ...) [-> type]``
    _FORM: ClassVar[re.Pattern] = re.compile(
        r"\s*(?P<name>[A-Za-z][A-Za-z0-9_]*)\s*\((?P<parameters>.*?)\)\s*(->\s*\S.*)?", re.DOTALL)

    @classmethod
    def from_form(cls, form: str) -> DeclaredFunction:
        match = cls._FORM.fullmatch(form)
        if match is None:
            raise ValueError(f"{form!r} is not a function form such as "
                             "'ivo_healpix_index(order INTEGER, ra DOUBLE, dec DOUBLE) -> BIGINT'")
        name = match["name"]
        if name.upper() in STANDARD_FUNCTIONS or name.lower() in FUNCTIONS:
            raise ValueError(f"{form!r}: {name} is already an ADQL function")
        parameters = tuple(p.strip() for p in re.split(r",(?![^(]*\))", match["parameters"]))
        return cls(name, parameters if parameters != ("",) else (), form)


def declared_functions(forms: Iterable[str]) -> dict[str, DeclaredFunction]:
    """The functions ``forms`` declare, by lower-case name (ADQL names ignore case)."""
    declared = (DeclaredFunction.from_form(form) for form in forms)
    return {function.name.lower(): function for function in declared}
