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
    FUNCTIONS,
    REFERENCE_KEY,
    STANDARD_FUNCTIONS,
    AdqlFunction,
    DeclaredFunction,
    LatentDistance,
    MlEncode,
    MlVector,
    made_geometry,
    vector_values,
)

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
    for call in tree.find_all(LatentDistance):
        _check_latent_distance(call)
    for call in tree.find_all(MlVector):
        _check_ml_vector(call)
    for call in tree.find_all(MlEncode):
        _check_ml_encode(call)


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


def _check_latent_distance(call: LatentDistance) -> None:
    name = call.sql_name().lower()
    arguments = call.expressions
    if len(arguments) != 2:
        raise E06(**position(call), function=name,
                  detail=f"takes 2 arguments (embedding, ref), got {len(arguments)}")
    embedding, reference = arguments
    if not isinstance(embedding, exp.Column) or isinstance(embedding.this, exp.Star):
        raise E06(**position(call), function=name,
                  detail="the first argument must be an embedding column, e.g. embedding")
    if isinstance(reference, exp.Literal) and reference.is_string:
        return
    if isinstance(reference, (MlVector, MlEncode)) or (
            isinstance(reference, exp.Column) and not isinstance(reference.this, exp.Star)):
        return
    raise E06(**position(call), function=name,
              detail=f"the second argument must be the {REFERENCE_KEY} or obs_id of a row (a "
                     "string literal), another embedding column, ml_vector('x1 x2 ...') or "
                     "ml_encode(wavelength, flux)")


def _is_reference(call: exp.Func) -> bool:
    """True for the second argument of a latent distance, the only place a reference can be."""
    parent = call.parent
    return isinstance(parent, LatentDistance) and len(parent.expressions) == 2 and (
        parent.expressions[1] is call)


def _check_ml_vector(call: MlVector) -> None:
    arguments = call.expressions
    text = arguments[0] if len(arguments) == 1 else None
    if not (isinstance(text, exp.Literal) and text.is_string and _is_reference(call)):
        raise E06(**position(call), function="ml_vector",
                  detail="write ml_vector('x1 x2 ...') as the second argument of ml_distance or "
                         "ml_cosine_distance")
    try:
        vector_values(call)
    except ValueError:
        raise E06(**position(call), function="ml_vector",
                  detail=f"'{text.this}' is not a list of numbers separated by spaces") from None


def _check_ml_encode(call: MlEncode) -> None:
    arguments = call.expressions
    columns = len(arguments) == 2 and all(
        isinstance(a, exp.Column) and not isinstance(a.this, exp.Star) for a in arguments)
    if not (columns and _is_reference(call)):
        raise E06(**position(call), function="ml_encode",
                  detail="write ml_encode(wavelength, flux), with two array columns of an "
                         "uploaded table, as the second argument of ml_distance or "
                         "ml_cosine_distance")
