"""Parsing and checking ADQL trees before any SQL is generated.

Two levels: :func:`parse` checks what needs no database (one SELECT, ADQL's grammar, only declared
functions called as declared); :func:`resolve` then checks every table and column of every scope
against TAP_SCHEMA, rewrites them to their published names and records what the generators and
the service need (the table behind each ml_distance, the output columns). Checking the tree rather
than the generated SQL means nothing the user wrote can reach a table the service does not publish.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from sqlglot import exp
from sqlglot.errors import OptimizeError, ParseError, TokenError
from sqlglot.optimizer.scope import Scope, find_all_in_scope, traverse_scope
from sqlglot.tokens import Token, TokenType

from vo_ml.adql.calls import check_calls
from vo_ml.adql.dialect import ADQL
from vo_ml.adql.errors import E01, E02, E03, E04, E07, E09, E13, did_you_mean, position
from vo_ml.adql.functions import DeclaredFunction
from vo_ml.adql.geometry import region_column, region_kind
from vo_ml.adql.grammar import check_grammar
from vo_ml.adql.latent import LatentDistance, output_column, resolve_distance, resolve_measures
from vo_ml.adql.model import UPLOAD_SCHEMA, Encoding, OutputColumn, Reference, upload_view
from vo_ml.archive.tap_schema import Column, Table, TapSchema, undelimited

#: How sqlglot prints a token in parse errors.
_TOKEN = re.compile(r"<Token token_type: TokenType\.(?P<type>\w+), text: (?P<text>.*?), line: [^>]*>")
#: How sqlglot says an expression lacks a part ("Required keyword: 'this' missing for <class ...>").
_MISSING_PART = re.compile(r"Required keyword: '\w+' missing for <class '[\w.]*\.(?P<node>\w+)'>")
#: How ADQL writes the sqlglot nodes whose names are not ADQL's.
_ADQL_SPELLING = {"Limit": "TOP", "EQ": "=", "NEQ": "<>", "GT": ">", "GTE": ">=", "LT": "<", "LTE": "<="}
#: How sqlglot's tokenizer says a quote is never closed: "Missing ' from <line>:<offset in query>".
_UNCLOSED = re.compile(r"Missing (?P<quote>.) from \d+:(?P<offset>\d+)")

#: The deepest nesting of parentheses and CASE expressions a query may have (ADQL-E13). The
#: parser, the checks and the generator recurse once per level, about 25 Python frames each,
#: within Python's limit of 1000 frames that the server's own calls share: 32 levels stay well
#: inside it in every clause, and no query a person writes comes near them.
MAX_NESTING = 32
#: Tokens that open and close a level of nesting.
_OPENING = frozenset({TokenType.L_PAREN, TokenType.CASE})
_CLOSING = frozenset({TokenType.R_PAREN, TokenType.END})
_DIALECT = ADQL()

#: Nodes that write, configure or bind parameters: never part of a TAP query.
_FORBIDDEN_NODES = (exp.DML, exp.DDL, exp.Command, exp.Pragma, exp.Into, exp.Placeholder)

#: Syntax sqlglot reads but ADQL does not have: backend extensions (table functions, literal
#: arrays and structs, subscripts, pivots...) that would reach the database unchecked.
_NOT_ADQL_NODES = (exp.Unnest, exp.Values, exp.Pivot, exp.Struct, exp.Array, exp.Bracket,
                   exp.Qualify, exp.Filter, exp.SimilarTo, exp.Lambda, exp.PropertyEQ, exp.Slice,
                   exp.Explode)


@dataclass(frozen=True)
class ResolvedColumn:
    """A column a scope offers: its label, metadata, and the published table it comes from."""

    name: str
    column: Column | None = None
    datatype_hint: str | None = None
    table: Table | None = None

    def output(self) -> OutputColumn:
        return OutputColumn(self.name, self.column, self.datatype_hint)


@dataclass(frozen=True)
class Source:
    """A FROM-clause item as its scope sees it: a published table, or a subquery's outputs."""

    description: str
    columns: tuple[ResolvedColumn, ...]

    def find(self, identifier: exp.Identifier) -> ResolvedColumn | None:
        return next((c for c in self.columns if _same(identifier, c.name)), None)


def parse(adql: str, declared: Mapping[str, DeclaredFunction] | None = None) -> exp.Query:
    """The single query of ``adql``, checked for everything that needs no schema.

    ``declared`` are other services' user-defined functions (by lower-case name) a check accepts.
    """
    try:
        tokens = _DIALECT.tokenize(adql)
    except TokenError as error:
        raise _token_error(adql, error) from None
    _check_nesting(tokens)
    _approximate_wide_integers(tokens)
    try:
        statements = [s for s in _DIALECT.parser().parse(tokens, adql) if s is not None]
    except ParseError as error:
        first = error.errors[0] if error.errors else {}
        raise E01(first.get("line"), first.get("col"),
                  detail=_in_adql_terms(first.get("description") or str(error))) from None
    if len(statements) != 1:
        raise E02(found=f"{len(statements)} statements" if statements else "an empty query")
    tree = statements[0]
    if not isinstance(tree, exp.Query):
        raise E02(found=tree.key.upper())
    _check_constructs(tree)
    check_calls(tree, declared or {})
    check_grammar(tree)
    return tree


#: The largest integer an ADQL exact literal keeps exact: ADQL's widest integer is BIGINT.
BIGINT_MAX = 2**63 - 1


def _approximate_wide_integers(tokens: list[Token]) -> None:
    """Read an integer literal (decimal or hexadecimal) wider than BIGINT as a double: no output
    format has a wider integer, and DuckDB would hold it as an arbitrary-precision number that
    no result column can carry. One beyond a double's range is refused at its position."""
    for token in tokens:
        if token.token_type == TokenType.NUMBER and token.text.isdigit():
            value = int(token.text)
        elif token.token_type == TokenType.HEX_STRING:
            value = int(token.text, 16)
        else:
            continue
        if value <= BIGINT_MAX:
            continue
        try:
            token.text, token.token_type = repr(float(value)), TokenType.NUMBER
        except OverflowError:
            raise E01(token.line, token.col,
                      detail=f"the number at line {token.line}, column {token.col} is beyond the "
                             "range of a double; write it in exponent form within 1.8E308") from None


def _check_nesting(tokens: list[Token]) -> None:
    """Refuse a query nested deeper than :data:`MAX_NESTING`, counted on its tokens before the
    parser recurses into it, at the token that goes one level too deep."""
    depth = 0
    for token in tokens:
        if token.token_type in _OPENING:
            depth += 1
            if depth > MAX_NESTING:
                raise E13(token.line, token.col - len(token.text) + 1, limit=MAX_NESTING)
        elif token.token_type in _CLOSING:
            depth -= 1


def _token_error(adql: str, error: TokenError) -> E01:
    """The syntax error for a query sqlglot cannot split into tokens: mostly an unclosed quote."""
    unclosed = _UNCLOSED.search(str(error.__cause__ or error))
    if unclosed is None:
        return E01(detail=str(error))
    offset = int(unclosed["offset"])
    return E01(adql.count("\n", 0, offset) + 1, offset - adql.rfind("\n", 0, offset),
               detail=f"this {unclosed['quote']} is never closed")


def _in_adql_terms(message: str) -> str:
    """A sqlglot parse error message with tokens as written and parts named as in ADQL."""
    return _MISSING_PART.sub(_incomplete, _TOKEN.sub(_written_token, message))


def _written_token(token: re.Match) -> str:
    return "the end of the query" if token["type"] == "SENTINEL" else f"'{token['text']}'"


def _incomplete(part: re.Match) -> str:
    return f"incomplete {_ADQL_SPELLING.get(part['node'], part['node'].upper())}"


def _check_constructs(tree: exp.Query) -> None:
    for node in tree.find_all(*_FORBIDDEN_NODES):
        raise E09(**position(node), construct=f"{node.key.upper()} inside a query")
    for node in tree.find_all(*_NOT_ADQL_NODES):
        raise E09(**position(node), construct=f"{node.key.upper()}, which is not ADQL")
    for star in tree.find_all(exp.Star):
        if any(star.args.get(k) for k in ("except", "except_", "replace", "rename")):
            raise E09(**position(star), construct="SELECT * EXCLUDE/REPLACE, which is not ADQL")
    for group in tree.find_all(exp.Group):
        if group.args.get("all"):
            raise E09(**position(group), construct="GROUP BY ALL, which is not ADQL")
    for node in tree.find_all(exp.CTE, exp.Subquery):
        if not (isinstance(node.this, exp.Query) or _is_joined_table(node)):
            raise E09(**position(node), construct=f"{node.this.key.upper()} as a subquery")


def _is_joined_table(node: exp.Expr) -> bool:
    """True for a parenthesised join, ``(t1 JOIN t2)``, which sqlglot reads as a subquery."""
    return isinstance(node, exp.Subquery) and bool(node.this.args.get("joins"))


def label_outputs(tree: exp.Query) -> None:
    """Alias every computed select item, so result labels are predictable on every backend.

    Function calls are labelled with the function name as written (``count``, ``ml_distance``),
    anything else ``col<position>``.
    """
    for select in tree.find_all(exp.Select):
        for number, item in enumerate(select.expressions, start=1):
            if isinstance(item, (exp.Alias, exp.Column, exp.Star)):
                continue
            written = item.meta.get(ADQL.ORIGINAL_NAME_META_KEY)
            label = written.lower() if written else f"col{number}"
            item.replace(exp.alias_(item.copy(), label))


@dataclass
class Resolution:
    """What checking a query's names found: its output columns, the rows it names as latent
    references (to look up) and the uploaded spectra it encodes (to encode)."""

    outputs: list[OutputColumn]
    references: list[Reference]
    encodings: list[Encoding]


def resolve(tree: exp.Query, schema: TapSchema) -> Resolution:
    """Check tables and columns of every scope, the arguments of every latent distance, and
    that every measure of uploaded spectra has their encoding."""
    _resolve_tables(tree, schema)
    try:
        scopes = traverse_scope(tree)
    except OptimizeError as error:
        raise E09(construct=str(error)) from None
    outputs: dict[int, tuple[ResolvedColumn, ...]] = {}
    references: list[Reference] = []
    encodings: dict[tuple, Encoding] = {}
    for scope in scopes:
        sources = _sources(scope, outputs)
        _resolve_columns(scope, sources, outputs)
        references.extend(_resolve_ml_distances(scope, encodings))
        outputs[id(scope.expression)] = _outputs(scope, sources, outputs)
    resolve_measures(tree, encodings)
    return Resolution([c.output() for c in outputs[id(tree)]], list(dict.fromkeys(references)),
                      list(encodings.values()))


def _resolve_tables(tree: exp.Query, schema: TapSchema) -> None:
    """Replace every table name with its published qualified name; CTE names stay as they are."""
    cte_names = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    for table in tree.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier):
            raise E09(**position(table), construct="a function or expression in FROM")
        if not table.db and table.name.lower() in cte_names:
            continue
        published = _published_table(table, schema)
        schema_name, _, table_name = published.name.partition(".")
        table.set("catalog", None)
        if schema_name.upper() == UPLOAD_SCHEMA:
            table.set("db", None)
            table.set("this", exp.to_identifier(upload_view(table_name)))
        else:
            table.set("db", exp.to_identifier(schema_name))
            table.set("this", exp.to_identifier(table_name))
        table.meta["published"] = published


def _published_table(table: exp.Table, schema: TapSchema) -> Table:
    written = ".".join(part.name for part in table.parts)
    if table.db and not table.catalog:
        found = schema.table(f"{table.db}.{table.name}")
    else:
        matches = [t for t in schema.tables.values()
                   if t.name.partition(".")[2].lower() == table.name.lower()]
        found = matches[0] if len(matches) == 1 and not table.db else None
    if found is None:
        raise E03(**position(table), table=written,
                  suggestion=did_you_mean(written, [t.name for t in schema.tables.values()]))
    return found


def _sources(scope: Scope, outputs: dict[int, tuple[ResolvedColumn, ...]]) -> dict[str, Source]:
    """The scope's FROM items by lower-cased alias (or table name), in FROM-clause order."""
    sources = {}
    for name, (_, source) in scope.selected_sources.items():
        if isinstance(source, Scope):
            sources[name.lower()] = Source(f"subquery {name}", outputs[id(source.expression)])
        else:
            sources[name.lower()] = _table_source(source)
    return sources


def _table_source(table_node: exp.Table) -> Source:
    table: Table = table_node.meta["published"]
    return Source(table.name, tuple(ResolvedColumn(c.name, c, None, table) for c in table.columns))


def _same(identifier: exp.Identifier, name: str) -> bool:
    """ADQL identifier comparison: delimited identifiers are exact, regular ones ignore case.

    ``name`` is a published name, itself delimited when it is an ADQL reserved word (``"size"``).
    """
    name = undelimited(name)
    return identifier.name == name if identifier.quoted else identifier.name.lower() == name.lower()


def _sql_identifier(name: str) -> exp.Identifier:
    """The identifier the backend knows a published column by."""
    bare = undelimited(name)
    return exp.to_identifier(bare, quoted=True) if bare != name else exp.to_identifier(name)


def _resolve_columns(scope: Scope, sources: dict[str, Source],
                     outputs: dict[int, tuple[ResolvedColumn, ...]]) -> None:
    if isinstance(scope.expression, exp.SetOperation):
        sources = {"": Source("the query's result", outputs[id(scope.set_operation_scopes[0].expression)])}
    may_name_aliases = _columns_that_may_name_aliases(scope)
    for column in find_all_in_scope(scope.expression, exp.Column):
        if isinstance(column.this, exp.Star):
            _qualifier_source(column, scope, sources)
        elif not (id(column) in may_name_aliases and _is_alias_reference(column, scope)):
            resolved = _resolve_column(column, scope, sources)
            column.set("this", _sql_identifier(resolved.name))
            column.meta["resolved"] = resolved


def _columns_that_may_name_aliases(scope: Scope) -> set[int]:
    """The ids of the columns in the scope's own ORDER BY, GROUP BY and HAVING: found from the
    clauses down, since looking up from each column would walk a long expression once per
    column in it."""
    clauses = (scope.expression.args.get(key) for key in ("order", "group", "having"))
    return {id(column) for clause in clauses if clause is not None
            for column in clause.find_all(exp.Column)}


def _is_alias_reference(column: exp.Column, scope: Scope) -> bool:
    """True for an unqualified name (in ORDER BY, GROUP BY or HAVING) naming a select alias."""
    return not column.table and any(_same(column.this, alias)
                                    for alias in scope.expression.named_selects)


def _resolve_column(column: exp.Column, scope: Scope, sources: dict[str, Source]) -> ResolvedColumn:
    if column.table:
        source = _qualifier_source(column, scope, sources)
        found = source.find(column.this)
        if found is None:
            raise E04(**position(column), column=column.name, where=source.description,
                      suggestion=did_you_mean(column.name, [c.name for c in source.columns]))
        return found
    for candidates in _visible_sources(scope, sources):
        matches = [(name, s, c) for name, s in candidates.items() if (c := s.find(column.this))]
        if len(matches) > 1 and not _merged_by_join(column, scope):
            raise E07(**position(column), column=column.name,
                      tables=" and ".join(s.description for _, s, _ in matches),
                      example=f"{matches[0][0]}.{column.name}")
        if matches:
            return matches[0][2]
    names = [c.name for s in sources.values() for c in s.columns]
    where = " or ".join(s.description for s in sources.values()) or "a query without FROM"
    raise E04(**position(column), column=column.name, where=where,
              suggestion=did_you_mean(column.name, names))


def _merged_by_join(column: exp.Column, scope: Scope) -> bool:
    """True when a USING join naming ``column``, or a NATURAL join, of the scope merges the
    columns of that name into one: then the unqualified name is not ambiguous."""
    for join in find_all_in_scope(scope.expression, exp.Join):
        using = join.args.get("using") or []
        if join.method == "NATURAL" or any(_same(column.this, u.name) for u in using):
            return True
    return False


def _visible_sources(scope: Scope, sources: dict[str, Source]) -> list[dict[str, Source]]:
    """The scope's own sources, then (for correlated subqueries) those of enclosing scopes."""
    visible = [sources]
    parent = scope.parent if scope.is_subquery else None
    while parent is not None:
        visible.append({name.lower(): _table_source(source)
                        for name, (_, source) in parent.selected_sources.items()
                        if not isinstance(source, Scope)})
        parent = parent.parent if parent.is_subquery else None
    return visible


def _qualifier_source(column: exp.Column, scope: Scope, sources: dict[str, Source]) -> Source:
    """The FROM item a qualified column (``s.teff``, ``miles.spectra.teff``) names."""
    qualifier = column.args["table"]
    for candidates in _visible_sources(scope, sources):
        for name, source in candidates.items():
            same_schema = not column.db or source.description.lower() == (
                f"{column.db}.{column.table}".lower())
            if _same(qualifier, name) and same_schema:
                return source
    written = ".".join(p.name for p in column.parts[:-1])
    raise E03(**position(column), table=written,
              suggestion=did_you_mean(column.table, list(sources)))


def _resolve_ml_distances(scope: Scope, encodings: dict[tuple, Encoding]) -> list[Reference]:
    """Resolve every latent distance of the scope; return the rows named by key, which the
    caller looks up, and add the uploaded spectra to encode to ``encodings``."""
    resolved = (resolve_distance(call, encodings)
                for call in find_all_in_scope(scope.expression, LatentDistance))
    return [reference for reference in resolved if reference is not None]


def _outputs(scope: Scope, sources: dict[str, Source],
             outputs: dict[int, tuple[ResolvedColumn, ...]]) -> tuple[ResolvedColumn, ...]:
    """The columns the scope's query returns, with star expanded in FROM-clause order."""
    query = scope.expression
    if isinstance(query, exp.SetOperation):
        return outputs[id(scope.set_operation_scopes[0].expression)]
    result: list[ResolvedColumn] = []
    for item in query.selects:
        if isinstance(item, exp.Star):
            result.extend(c for s in sources.values() for c in s.columns)
        elif isinstance(item, exp.Column) and isinstance(item.this, exp.Star):
            result.extend(_qualifier_source(item, scope, sources).columns)
        else:
            result.append(_item_output(item))
    return tuple(result)


def _item_output(item: exp.Expr) -> ResolvedColumn:
    value = item.unalias()
    declared = output_column(value, item.alias_or_name)
    if declared is not None:
        return ResolvedColumn(item.alias_or_name, declared, declared.datatype)
    kind = None if isinstance(value, exp.Column) else region_kind(value)
    if kind is not None:
        return ResolvedColumn(item.alias_or_name, region_column(item.alias_or_name, kind))
    resolved = value.meta.get("resolved") if isinstance(value, exp.Column) else None
    if resolved is None:
        return ResolvedColumn(item.alias_or_name)
    return ResolvedColumn(item.alias_or_name, resolved.column, resolved.datatype_hint,
                          resolved.table)
