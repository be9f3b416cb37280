"""ADQL as a sqlglot dialect, and the backend dialects ADQL trees are generated with.

The ADQL dialect only reads: it adds ADQL's ``TOP`` and restricts the function names the parser
recognises to :mod:`vo_ml.adql.functions`, mapping each to the expression with ADQL semantics
(``LOG`` is the natural logarithm, ``TRUNCATE`` truncates). Generation goes through a backend
dialect whose generator knows the service's own functions.
"""

from __future__ import annotations

from sqlglot import tokens
from sqlglot.dialects.dialect import Dialect, NormalizationStrategy
from sqlglot.dialects.duckdb import DuckDB
from sqlglot.generators.duckdb import DuckDBGenerator
from sqlglot.parsers.base import BaseParser
from sqlglot.tokens import TokenType

from vo_ml.adql.functions import FUNCTIONS, STANDARD_FUNCTIONS, generator_transforms


def _standard(table: dict) -> dict:
    """The entries of a sqlglot parser table that are standard ADQL functions."""
    return {name: build for name, build in table.items() if name in STANDARD_FUNCTIONS}


class ADQL(Dialect):
    """ADQL 2.1 (first cut: no geometry): regular identifiers are case-insensitive."""

    NORMALIZATION_STRATEGY = NormalizationStrategy.CASE_INSENSITIVE
    #: Keeps the function name as written, so unaliased calls are labelled as the user wrote them.
    ORIGINAL_NAME_META_KEY = "adql_name"
    #: ADQL leaves NULL ordering open; sorting NULLs last keeps rows without an embedding out of
    #: the top of an ``ORDER BY ml_distance(...)``.
    NULL_ORDERING = "nulls_are_last"

    class Tokenizer(tokens.Tokenizer):
        QUOTES = ["'"]
        IDENTIFIERS = ['"']
        KEYWORDS = {**tokens.Tokenizer.KEYWORDS, "TOP": TokenType.TOP}

    class Parser(BaseParser):
        LOG_DEFAULTS_TO_LN = True

        FUNCTIONS = {
            **_standard(BaseParser.FUNCTIONS),
            **{f.name.upper(): f.node.from_arg_list for f in FUNCTIONS.values()},
        }
        FUNCTION_PARSERS = _standard(BaseParser.FUNCTION_PARSERS)
        NO_PAREN_FUNCTIONS: dict = {}


class DuckDBTarget(DuckDB):
    """DuckDB, plus the service's user-defined functions."""

    class Generator(DuckDBGenerator):
        TRANSFORMS = {**DuckDBGenerator.TRANSFORMS, **generator_transforms("duckdb")}


#: Backend name -> dialect the checked ADQL tree is generated with.
BACKENDS: dict[str, type[Dialect]] = {"duckdb": DuckDBTarget}

