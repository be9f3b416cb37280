"""Function calls: only declared functions, each called with arguments ADQL allows it.

The parser maps declared names to expressions; any other call stays anonymous and is rejected by
name here (E05), unless a check declared it as another service's user-defined function. Argument
problems are reported in ADQL's terms (E06): sqlglot would word them in its own.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlglot import exp

from vo_ml.adql.dialect import ADQL, ARGUMENT_COUNT_META_KEY
from vo_ml.adql.errors import E05, E06, did_you_mean, position
from vo_ml.adql.functions import (
    ARGUMENT_COUNTS,
    STANDARD_FUNCTIONS,
    AdqlFunction,
    DeclaredFunction,
    made_geometry,
)
from vo_ml.adql.latent import FUNCTIONS

#: Values that are certainly no geometry: literals, arithmetic and concatenation.
_PLAIN_VALUES = (exp.Literal, exp.Neg, exp.Add, exp.Sub, exp.Mul, exp.Div, exp.DPipe)


def check_calls(tree: exp.Query, declared: Mapping[str, DeclaredFunction]) -> None:
    """Raise for an undeclared function or a call with arguments its declaration does not allow.

    ``declared`` are user-defined functions of another service, by lower-case name.
    """
    _check_names(tree, declared)
    _check_argument_counts(tree)
    for call in tree.find_all(AdqlFunction):
        _check_adql_function(call)
    for call in tree.find_all(exp.Anonymous):
        _check_declared_function(call, declared[call.name.lower()])
    for function in FUNCTIONS.values():
        for call in tree.find_all(function.node):
            function.check(call)


def geometry_of(value: exp.Expr) -> str | None:
    """``"point"`` or ``"shape"`` when ``value`` is certainly a geometry, else None."""
    kind = made_geometry(value)
    return None if kind is None else "point" if kind == "point" else "shape"


def _check_names(tree: exp.Query, declared: Mapping[str, DeclaredFunction]) -> None:
    """Calls the parser did not map to a declared function are anonymous: reject them by name."""
    for call in tree.find_all(exp.Anonymous, exp.AnonymousAggFunc):
        if isinstance(call, exp.AnonymousAggFunc) or call.name.lower() not in declared:
            known = sorted(STANDARD_FUNCTIONS | {name.upper() for name in FUNCTIONS}
                           | {f.name for f in declared.values()})
            raise E05(**position(call), function=call.name, suggestion=did_you_mean(call.name, known))


def _check_argument_counts(tree: exp.Query) -> None:
    """Standard functions sqlglot has expressions for, against the counts ADQL allows."""
    for call in tree.find_all(exp.Expr):
        name = call.meta.get(ADQL.ORIGINAL_NAME_META_KEY, "")
        if name.upper() not in ARGUMENT_COUNTS:
            continue
        count, (fewest, most) = call.meta[ARGUMENT_COUNT_META_KEY], ARGUMENT_COUNTS[name.upper()]
        if fewest <= count and (most is None or count <= most):
            continue
        allowed = (f"{fewest}" if fewest == most else f"{fewest} or more" if most is None
                   else f"{fewest} or {most}")
        raise E06(**position(call), function=name,
                  detail=f"takes {allowed} argument{'' if most == 1 else 's'}, got {count}")


def _check_adql_function(call: AdqlFunction) -> None:
    """Geometry functions and IN_UNIT: the arguments must fit one of the function's signatures."""
    arguments = call.operands
    if not any(all(map(_fits, signature, arguments))
               for signature in call.signatures_for(len(arguments))):
        written = ", ".join(a.sql() for a in call.expressions)
        raise E06(**position(call), function=call.sql_name(),
                  detail=f"ADQL calls it {call.form}, not with ({written})")


def _fits(kind: str, argument: exp.Expr) -> bool:
    """Whether ``argument`` may be of ``kind`` (a signature letter, see AdqlFunction.signatures).

    Without column types, only literals and geometry constructors have a known kind.
    """
    value = argument.unnest()
    if kind == "n":
        return geometry_of(value) is None
    if kind == "p":
        return not isinstance(value, _PLAIN_VALUES) and geometry_of(value) != "shape"
    if kind == "s":
        return isinstance(value, exp.Literal) and value.is_string
    return True


def _check_declared_function(call: exp.Anonymous, function: DeclaredFunction) -> None:
    count = len(function.parameters)
    if len(call.expressions) != count:
        raise E06(**position(call), function=call.name,
                  detail=f"declared as {function.form}, it takes {count} "
                         f"argument{'' if count == 1 else 's'}, got {len(call.expressions)}")
