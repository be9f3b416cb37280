"""ADQL as a sqlglot dialect, and the backend dialects ADQL trees are generated with.

The ADQL dialect only reads: it adds ADQL's ``TOP`` and hexadecimal literals, and restricts the
function names the parser recognises to :mod:`vo_ml.adql.functions`, mapping each to the
expression with ADQL semantics (``LOG`` is the natural logarithm, ``TRUNCATE`` truncates).
sqlglot reads more than ADQL; :mod:`vo_ml.adql.grammar` rejects the rest on the tree, with what
the parser records for it here. Generation goes through a backend dialect whose generator knows
the service's own functions.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from sqlglot import exp, tokens
from sqlglot.dialects.dialect import Dialect, NormalizationStrategy
from sqlglot.dialects.duckdb import DuckDB
from sqlglot.generators.duckdb import DuckDBGenerator
from sqlglot.parsers.base import BaseParser
from sqlglot.tokens import TokenType

from vo_ml.adql import geometry
from vo_ml.adql.functions import ADQL_FUNCTIONS, CAST_TYPE_META_KEY, STANDARD_FUNCTIONS
from vo_ml.adql.latent import FUNCTIONS, generator_transforms
from vo_ml.archive.backends import backend_type

#: Meta key of a function call: how many arguments it was written with.
ARGUMENT_COUNT_META_KEY = "adql_argument_count"


def _standard(table: dict) -> dict:
    """The entries of a sqlglot parser table that are standard ADQL functions."""
    return {name: build for name, build in table.items() if name in STANDARD_FUNCTIONS}


class ADQL(Dialect):
    """ADQL 2.1: regular identifiers are case-insensitive."""

    NORMALIZATION_STRATEGY = NormalizationStrategy.CASE_INSENSITIVE
    #: Keeps the function name as written, so unaliased calls are labelled as the user wrote them.
    ORIGINAL_NAME_META_KEY = "adql_name"
    #: ADQL leaves NULL ordering open; sorting NULLs last keeps rows without an embedding out of
    #: the top of an ``ORDER BY ml_distance(...)``.
    NULL_ORDERING = "nulls_are_last"
    #: ADQL 2.1 hexadecimal literals (``0x1F``) are integers.
    HEX_STRING_IS_INTEGER_TYPE = True

    class Tokenizer(tokens.Tokenizer):
        QUOTES = ["'"]
        IDENTIFIERS = ['"']
        HEX_STRINGS = [("0x", ""), ("0X", "")]
        #: Adds TOP; drops the backend operators ``==`` and ``::`` (ADQL has ``=`` and CAST).
        KEYWORDS = {**{k: v for k, v in tokens.Tokenizer.KEYWORDS.items() if k not in ("==", "::")},
                    "TOP": TokenType.TOP}

    class Parser(BaseParser):
        LOG_DEFAULTS_TO_LN = True

        FUNCTIONS = {
            **_standard(BaseParser.FUNCTIONS),
            **{name: f.from_arg_list for name, f in ADQL_FUNCTIONS.items()},
            **{f.name.upper(): f.node.from_arg_list for f in FUNCTIONS.values()},
        }
        #: CAST(x AS type) is the one standard function that is no plain argument list; every
        #: other goes through FUNCTIONS, so its argument count is recorded (sqlglot's FLOOR
        #: parser, for instance, would take the backend's FLOOR(x TO unit)).
        FUNCTION_PARSERS = {"CAST": BaseParser.FUNCTION_PARSERS["CAST"]}
        NO_PAREN_FUNCTIONS: dict = {}

        def validate_expression(self, expression: exp.Expr, args: list | None = None) -> exp.Expr:
            """Record a function call's argument count instead of validating it: sqlglot words a
            wrong count in terms of its own classes, the checker words it in ADQL's."""
            if args is not None:
                expression.meta[ARGUMENT_COUNT_META_KEY] = len(args)
                return expression
            return super().validate_expression(expression, args)

        def _parse_csv(self, parse_method: Callable, sep: TokenType = TokenType.COMMA) -> list:
            """sqlglot's list parsing, except that an empty item is an error: sqlglot drops it, so
            ``SELECT a, FROM t`` and ``IN (1, 2,)`` would pass, and ADQL has no trailing commas."""
            item = parse_method()
            items = [item] if item is not None else []
            while self._match(sep):
                if isinstance(item, exp.Expr):
                    self._add_comments(item)
                item = parse_method()
                if item is None:
                    self.raise_error(f"Expected a value after '{self._prev.text}'")
                else:
                    items.append(item)
            return items

        def _parse_cast(self, strict: bool, safe: bool | None = None) -> exp.Expr:
            """sqlglot's CAST, keeping the target type as written under CAST_TYPE_META_KEY."""
            start = self._curr
            cast = super()._parse_cast(strict, safe)
            written = re.split(r"\bAS\b", self._find_sql(start, self._prev), flags=re.IGNORECASE)[-1]
            cast.meta[CAST_TYPE_META_KEY] = " ".join(written.upper().split())
            return cast


class DuckDBTarget(DuckDB):
    """DuckDB, plus ADQL geometry and the service's user-defined functions."""

    #: The backend's SQL for a row's id, which also orders the rows (see Backend.row_id).
    ROW_ID = backend_type("duckdb").row_id

    class Generator(DuckDBGenerator):
        TRANSFORMS = {**DuckDBGenerator.TRANSFORMS, **geometry.DUCKDB_TRANSFORMS,
                      **generator_transforms("duckdb")}


#: Backend name -> dialect the checked ADQL tree is generated with.
BACKENDS: dict[str, type[Dialect]] = {"duckdb": DuckDBTarget}
