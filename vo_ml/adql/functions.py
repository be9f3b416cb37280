"""The functions ADQL queries may call: the standard ADQL ones, and the service's own ``ml_*``.

Only functions listed here are reachable. The parser maps exactly these names to expressions, so
any other call (``read_csv``, ``pg_sleep``, ``current_setting``...) stays an anonymous call that the
checker rejects by name before any SQL is generated: the backend never sees an undeclared function.

User-defined functions are declared once in :data:`FUNCTIONS`, with the TAPRegExt ``form`` the
capabilities document advertises and the SQL each backend generates for them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from sqlglot import exp
from sqlglot.generator import Generator

#: Column whose value a string reference (an ml_distance ``ref``) is looked up by.
REFERENCE_KEY = "obs_publisher_did"

#: Standard ADQL 2.1 functions (math, trigonometric, string, aggregate, conversion).
STANDARD_FUNCTIONS = frozenset({
    "ABS", "CEILING", "DEGREES", "EXP", "FLOOR", "LOG", "LOG10", "MOD", "PI", "POWER", "RADIANS",
    "RAND", "ROUND", "SQRT", "TRUNCATE",
    "SIN", "COS", "TAN", "ASIN", "ACOS", "ATAN", "ATAN2", "COT",
    "LOWER", "UPPER",
    "COUNT", "SUM", "AVG", "MIN", "MAX",
    "COALESCE", "CAST",
})


class MlDistance(exp.Expression, exp.Func):
    """``ml_distance(embedding, ref)``: Euclidean distance in the latent space to a reference row.

    The arguments are kept as a list so a wrong count is reported by the checker with an ADQL
    message instead of failing inside the parser. The checker records the published table and
    column of the embedding in ``meta`` for the generators.
    """

    arg_types = {"expressions": False}
    is_var_len_args = True
    _sql_names = ["ML_DISTANCE"]


SqlGenerator = Callable[[Generator, exp.Expr], str]


@dataclass(frozen=True)
class UserFunction:
    """A service-defined function: what TAPRegExt advertises and what each backend runs."""

    name: str
    form: str
    description: str
    node: type[exp.Func]
    generators: Mapping[str, SqlGenerator]


def _ml_distance_duckdb(generator: Generator, node: exp.Expr) -> str:
    """``array_distance`` against the reference row's embedding, looked up by a scalar subquery."""
    embedding, reference = node.expressions
    table, column = node.meta["table"], node.meta["column"]
    lookup = (
        exp.select(exp.column(column))
        .from_(exp.to_table(table))
        .where(exp.column(REFERENCE_KEY).eq(reference.copy()))
        .subquery()
    )
    return generator.sql(exp.Anonymous(this="array_distance", expressions=[embedding, lookup]))


ML_DISTANCE = UserFunction(
    name="ml_distance",
    form="ml_distance(embedding REAL[], ref VARCHAR) -> DOUBLE",
    description=(
        "Euclidean distance in the model's latent space between each row's embedding and the "
        f"embedding of the row whose {REFERENCE_KEY} is ref; NULL where a row has no embedding. "
        "Order by it to find the most similar spectra."
    ),
    node=MlDistance,
    generators={"duckdb": _ml_distance_duckdb},
)

#: User-defined functions by lower-case name.
FUNCTIONS: Mapping[str, UserFunction] = MappingProxyType({ML_DISTANCE.name: ML_DISTANCE})


def generator_transforms(backend: str) -> dict[type[exp.Expr], SqlGenerator]:
    """The generator TRANSFORMS printing every user-defined function for ``backend``."""
    return {f.node: f.generators[backend] for f in FUNCTIONS.values() if backend in f.generators}
