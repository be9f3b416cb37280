"""ADQL 2.1's grammar where sqlglot's parser reads more, checked on the parsed tree.

sqlglot accepts a superset of ADQL: a SELECT without FROM, bare values as conditions, any
identifier, ``x IS 3``, subqueries without a name... A query that passes here is valid on any
ADQL service, not only on this one. Each rule reports what ADQL's BNF does not allow as a
syntax error (E01) at the node concerned.
"""

from __future__ import annotations

import re
from typing import NoReturn

from sqlglot import exp

from vo_ml.adql.calls import geometry_of
from vo_ml.adql.dialect import CAST_TYPE_META_KEY
from vo_ml.adql.errors import E01, position

#: ADQL's reserved words (SQL-92's and ADQL's own): regular identifiers cannot be these.
RESERVED_WORDS = frozenset("""
    ABS ACOS AREA ASIN ATAN ATAN2 BIGINT BOX CAST CEILING CENTROID CHAR CIRCLE COALESCE CONTAINS
    COORD1 COORD2 COORDSYS COS COT DEGREES DISTANCE DOUBLE EXP FLOOR ILIKE INTEGER INTERSECTS
    IN_UNIT LOG LOG10 MOD NULL PI POINT POLYGON POWER PRECISION RADIANS REAL REGION RAND ROUND SIN
    SMALLINT SQRT TIMESTAMP TOP TAN TRUNCATE VARCHAR
    ABSOLUTE ACTION ADD ALL ALLOCATE ALTER AND ANY ARE AS ASC ASSERTION AT AUTHORIZATION AVG BEGIN
    BETWEEN BIT BIT_LENGTH BOTH BY CASCADE CASCADED CASE CATALOG CHARACTER CHAR_LENGTH
    CHARACTER_LENGTH CHECK CLOSE COLLATE COLLATION COLUMN COMMIT CONNECT CONNECTION CONSTRAINT
    CONSTRAINTS CONTINUE CONVERT CORRESPONDING COUNT CREATE CROSS CURRENT CURRENT_DATE CURRENT_TIME
    CURRENT_TIMESTAMP CURRENT_USER CURSOR DATE DAY DEALLOCATE DECIMAL DECLARE DEFAULT DEFERRABLE
    DEFERRED DELETE DESC DESCRIBE DESCRIPTOR DIAGNOSTICS DISCONNECT DISTINCT DOMAIN DROP ELSE END
    ESCAPE EXCEPT EXCEPTION EXEC EXECUTE EXISTS EXTERNAL EXTRACT FALSE FETCH FIRST FLOAT FOR
    FOREIGN FOUND FROM FULL GET GLOBAL GO GOTO GRANT GROUP HAVING HOUR IDENTITY IMMEDIATE IN
    INDICATOR INITIALLY INNER INPUT INSENSITIVE INSERT INT INTERSECT INTERVAL INTO IS ISOLATION
    JOIN KEY LANGUAGE LAST LEADING LEFT LEVEL LIKE LOCAL LOWER MATCH MAX MIN MINUTE MODULE MONTH
    NAMES NATIONAL NATURAL NCHAR NEXT NO NOT NULLIF NUMERIC OCTET_LENGTH OF ON ONLY OPEN OPTION OR
    ORDER OUTER OUTPUT OVERLAPS PAD PARTIAL POSITION PREPARE PRESERVE PRIMARY PRIOR PRIVILEGES
    PROCEDURE PUBLIC READ REFERENCES RELATIVE RESTRICT REVOKE RIGHT ROLLBACK ROWS SCHEMA SCROLL
    SECOND SECTION SELECT SESSION SESSION_USER SET SIZE SOME SPACE SQL SQLCODE SQLERROR SQLSTATE
    SUBSTRING SUM SYSTEM_USER TABLE TEMPORARY THEN TIME TIMEZONE_HOUR TIMEZONE_MINUTE TO TRAILING
    TRANSACTION TRANSLATE TRANSLATION TRIM TRUE UNION UNIQUE UNKNOWN UPDATE UPPER USAGE USER USING
    VALUE VALUES VARYING VIEW WHEN WHENEVER WHERE WITH WORK WRITE YEAR ZONE
""".split())

_REGULAR_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*")

#: The types CAST converts to.
_CAST_TYPE = re.compile(r"SMALLINT|INTEGER|BIGINT|REAL|DOUBLE PRECISION|TIMESTAMP|POINT|CIRCLE|"
                        r"POLYGON|(VAR)?CHAR( ?\( ?\d+ ?\))?")

#: What makes a search condition: comparisons and the other predicates.
_PREDICATES = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Between, exp.In, exp.Like,
               exp.ILike, exp.Is, exp.Exists)

#: Operators whose operands are numbers or strings, never geometries, and how ADQL writes them.
_VALUE_OPERATORS = {exp.DPipe: "||", exp.Add: "+", exp.Sub: "-", exp.Mul: "*", exp.Div: "/",
                    exp.Neg: "-", exp.BitwiseAnd: "&", exp.BitwiseOr: "|", exp.BitwiseXor: "^",
                    exp.BitwiseNot: "~"}

#: Functions that return 1 or 0 where SQL would have a condition.
_PREDICATE_FUNCTIONS = frozenset({"CONTAINS", "INTERSECTS", "ML_IN_POLYGON"})


def check_grammar(tree: exp.Query) -> None:
    """Raise E01 for the first construct of ``tree`` ADQL's grammar does not allow."""
    for rule in (_select_lists, _identifiers, _row_counts, _value_lists, _null_tests,
                 _derived_tables, _with_clauses, _cast_types, _conditions, _geometry_operands):
        rule(tree)


def _fail(node: exp.Expr, detail: str) -> NoReturn:
    raise E01(**position(node), detail=detail)


def _snippet(node: exp.Expr) -> str:
    """``node`` as ADQL text, short enough for a message."""
    text = node.sql()
    return text if len(text) <= 60 else text[:57] + "..."


def _select_lists(tree: exp.Query) -> None:
    """sqlglot reads ``SELECT FROM t`` and ``SELECT 1``; ADQL needs a select list and FROM."""
    for select in tree.find_all(exp.Select):
        if not select.expressions:
            _fail(select, "SELECT needs columns, or *, before FROM")
        if not select.args.get("from_"):
            _fail(select, "ADQL queries need a FROM clause")


def _identifiers(tree: exp.Query) -> None:
    """Names are regular identifiers (a letter, then letters, digits, _) that are no reserved
    word, or delimited ones; column names have at most four parts, table names three."""
    for identifier in tree.find_all(exp.Identifier):
        name = identifier.name
        if identifier.quoted:
            continue
        if not _REGULAR_IDENTIFIER.fullmatch(name):
            _fail(identifier, f"'{name}' is not a regular identifier: delimit it, \"{name}\"")
        if name.upper() in RESERVED_WORDS:
            _fail(identifier, f"'{name}' is an ADQL reserved word: delimit it to use it as a "
                              f"name, \"{name}\"")
    for dotted in tree.find_all(exp.Dot):
        _fail(dotted, f"'{_snippet(dotted)}' has too many parts: ADQL names a column "
                      "[[catalog.]schema.]table.column and a table [[catalog.]schema.]table")


def _row_counts(tree: exp.Query) -> None:
    """TOP and OFFSET take an unsigned integer; sqlglot takes any expression."""
    for clause, keyword in ((exp.Limit, "TOP"), (exp.Offset, "OFFSET")):
        for node in tree.find_all(clause):
            count = node.expression
            if not (isinstance(count, exp.Literal) and not count.is_string and count.name.isdigit()):
                _fail(node, f"{keyword} takes a whole number of rows, not {_snippet(count)}")


def _value_lists(tree: exp.Query) -> None:
    """sqlglot reads ``x IN 5`` (and ``x IN`` at the end of a query) as a membership test."""
    for test in tree.find_all(exp.In):
        if not (test.expressions or test.args.get("query")):
            _fail(test, "IN takes a parenthesised list of values or a subquery")


def _null_tests(tree: exp.Query) -> None:
    """sqlglot reads ``x IS 3`` and ``x IS TRUE``; ADQL's IS only tests for NULL."""
    for test in tree.find_all(exp.Is):
        if not isinstance(test.expression, exp.Null):
            _fail(test, f"IS only tests for NULL (IS NULL, IS NOT NULL), not for "
                        f"{_snippet(test.expression)}")


def _derived_tables(tree: exp.Query) -> None:
    """A subquery in FROM needs a correlation name; a parenthesised join does not."""
    for subquery in tree.find_all(exp.Subquery):
        in_from = isinstance(subquery.parent, (exp.From, exp.Join))
        if in_from and isinstance(subquery.this, exp.Query) and not subquery.alias:
            _fail(subquery, "a subquery in FROM needs a name: (SELECT ...) AS name")


def _with_clauses(tree: exp.Query) -> None:
    """ADQL 2.1 declares every common table expression at the start of the query."""
    for with_clause in tree.find_all(exp.With):
        if with_clause.parent is not tree:
            _fail(with_clause, "WITH may only start the whole query, not a subquery or a set "
                               "operand")


def _cast_types(tree: exp.Query) -> None:
    """CAST converts to ADQL's types only, as written (sqlglot reads FLOAT as REAL)."""
    for cast in tree.find_all(exp.Cast):
        written = cast.meta.get(CAST_TYPE_META_KEY, "")
        if not _CAST_TYPE.fullmatch(written):
            _fail(cast, f"CAST cannot convert to {written}: ADQL's types are SMALLINT, INTEGER, "
                        "BIGINT, REAL, DOUBLE PRECISION, CHAR(n), VARCHAR(n), TIMESTAMP, POINT, "
                        "CIRCLE and POLYGON")


def _conditions(tree: exp.Query) -> None:
    """WHERE, HAVING, ON, a searched WHEN and the operands of AND, OR, NOT take conditions,
    not values: ADQL has no boolean values (CONTAINS returns 1 or 0)."""
    for clause in tree.find_all(exp.Where, exp.Having):
        _require_condition(clause.this, clause.key.upper())
    for join in tree.find_all(exp.Join):
        if join.args.get("on"):
            _require_condition(join.args["on"], "ON")
    for case in tree.find_all(exp.Case):
        for branch in case.args["ifs"] if case.this is None else ():
            _require_condition(branch.this, "WHEN")
    for connective in tree.find_all(exp.And, exp.Or, exp.Not):
        for operand in connective.iter_expressions():
            _require_condition(operand, connective.key.upper())


def _require_condition(node: exp.Expr, clause: str) -> None:
    condition = node.unnest()
    if isinstance(condition, (*_PREDICATES, exp.And, exp.Or, exp.Not)):
        return
    hint = (f"; compare it, e.g. {_snippet(condition)} = 1"
            if isinstance(condition, exp.Func) and condition.sql_name() in _PREDICATE_FUNCTIONS
            else "")
    _fail(node, f"{clause} takes a condition, not the value {_snippet(condition)}{hint}")


def _geometry_operands(tree: exp.Query) -> None:
    """Arithmetic and concatenation take numbers and strings; sqlglot does not know geometries."""
    for operator in tree.find_all(*_VALUE_OPERATORS):
        for operand in operator.iter_expressions():
            if geometry_of(operand):
                _fail(operand, f"a geometry cannot be an operand of {_VALUE_OPERATORS[type(operator)]}"
                               f": {_snippet(operand)}")
