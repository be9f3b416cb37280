"""ADQL translation: ADQL in, checked DuckDB SQL out, run on a real in-memory DuckDB archive."""

from __future__ import annotations

import math
import re
from decimal import Decimal

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vo_ml import adql
from vo_ml.adql.errors import E01, E02, E03, E04, E05, E06, E07, E08, E09
from vo_ml.archive.tap_schema import load, tap_schema_rows

STARS = [
    # obs_publisher_did, target_name, teff, logg, feh, embedding
    ("ivo://test/miles?s0001", "HD 1", 5800.0, 4.4, 0.0, [0.0, 0.0]),
    ("ivo://test/miles?s0002", "HD 2", 4500.0, 2.1, -0.5, [3.0, 4.0]),
    ("ivo://test/miles?s0003", "HD 3", 9500.0, 4.0, 0.2, [1.0, 0.0]),
    ("ivo://test/miles?s0004", "HD 4", 6100.0, 4.2, -1.0, None),
]
SELF = STARS[0][0]


@pytest.fixture(scope="module")
def schema():
    return load(model="test", latent_dim=2)


@pytest.fixture(scope="module")
def db(schema):
    """miles.spectra and TAP_SCHEMA.columns, created from the published column metadata."""
    connection = duckdb.connect()
    for table in (schema.table("miles.spectra"), schema.table("TAP_SCHEMA.columns")):
        namespace, _, name = table.name.partition(".")
        connection.execute(f'CREATE SCHEMA IF NOT EXISTS "{namespace}"')
        definitions = ", ".join(f'"{c.sql_name}" {c.sql_type}' for c in table.columns)
        connection.execute(f'CREATE TABLE "{namespace}"."{name}" ({definitions})')
    names = ("obs_publisher_did", "target_name", "teff", "logg", "feh", "embedding")
    for star in STARS:
        connection.execute(
            f"INSERT INTO miles.spectra ({', '.join(names)}) VALUES (?, ?, ?, ?, ?, ?)", star)
    for row in tap_schema_rows(schema)["columns"]:
        connection.execute(
            f"INSERT INTO TAP_SCHEMA.columns VALUES ({', '.join('?' for _ in row)})", row)
    yield connection
    connection.close()


def run(db, schema, query):
    """Translate and execute; return (result labels, rows, translation)."""
    translation = adql.translate(query, schema)
    result = db.execute(translation.sql)
    return [d[0] for d in result.description], result.fetchall(), translation


RESULTS = [
    ("SELECT TOP 2 target_name FROM miles.spectra ORDER BY teff DESC",
     ["target_name"], [("HD 3",), ("HD 4",)]),
    ("SELECT target_name FROM miles.spectra ORDER BY teff OFFSET 3",
     ["target_name"], [("HD 3",)]),
    ("SELECT DISTINCT logg > 3 AS dwarf FROM miles.spectra ORDER BY dwarf",
     ["dwarf"], [(False,), (True,)]),
    ("select TARGET_NAME from MILES.SPECTRA where TEFF < 5000",
     ["target_name"], [("HD 2",)]),
    ("SELECT s.target_name AS \"Star\" FROM miles.spectra AS s WHERE s.feh = 0 ORDER BY 1",
     ["Star"], [("HD 1",)]),
    ("SELECT COUNT(*), MAX(teff) AS hottest FROM miles.spectra",
     ["count", "hottest"], [(4, 9500.0)]),
    ("SELECT logg > 3 AS dwarf, COUNT(*) AS n FROM miles.spectra GROUP BY dwarf HAVING n > 1",
     ["dwarf", "n"], [(True, 3)]),
    ("SELECT ROUND(LOG(EXP(2)), 6), LOG10(1000), TRUNCATE(2.789, 1), MOD(7, 4), POWER(2, 3) "
     "FROM miles.spectra WHERE feh = 0",
     ["round", "log10", "truncate", "mod", "power"], [(2.0, 3.0, 2.7, 3, 8.0)]),
    ("SELECT TOP 1 column_name FROM TAP_SCHEMA.columns WHERE column_name = 'teff'",
     ["column_name"], [("teff",)]),
    ("SELECT t.target_name FROM (SELECT target_name, teff FROM miles.spectra) AS t "
     "WHERE t.teff > 9000", ["target_name"], [("HD 3",)]),
    ("SELECT a.target_name FROM miles.spectra AS a JOIN miles.spectra AS b "
     "ON a.obs_id = b.obs_id", ["target_name"], []),
    ("SELECT target_name FROM miles.spectra WHERE teff = (SELECT MAX(teff) FROM miles.spectra)",
     ["target_name"], [("HD 3",)]),
    ("SELECT target_name FROM miles.spectra WHERE feh < 0 "
     "UNION SELECT target_name FROM miles.spectra WHERE logg < 3 ORDER BY target_name",
     ["target_name"], [("HD 2",), ("HD 4",)]),
    ("SELECT a.target_name FROM miles.spectra AS a JOIN (miles.spectra AS b JOIN miles.spectra AS c "
     "ON b.teff = c.teff) ON a.teff = b.teff WHERE a.teff > 9000", ["target_name"], [("HD 3",)]),
    ("SELECT target_name FROM miles.spectra AS a JOIN miles.spectra AS b USING (target_name) "
     "WHERE a.feh = 0", ["target_name"], [("HD 1",)]),
    ("SELECT 0x1F & 7 AS b, 5 | 2 AS o, 6 ^ 3 AS x, ~1 AS n, 'HD' || '!' AS s FROM miles.spectra "
     "WHERE target_name ILIKE 'hd 1'", ["b", "o", "x", "n", "s"], [(7, 7, 5, -2, "HD!")]),
    ("SELECT CASE WHEN teff > 9000 THEN 'hot' ELSE 'cool' END AS kind, CAST(teff AS INTEGER) AS t "
     "FROM miles.spectra WHERE logg BETWEEN 3.9 AND 4.1", ["kind", "t"], [("hot", 9500)]),
    ("WITH cool AS (SELECT target_name, teff FROM miles.spectra WHERE teff < 6000) "
     "SELECT target_name FROM cool ORDER BY teff", ["target_name"], [("HD 2",), ("HD 1",)]),
]


@pytest.mark.parametrize(("query", "labels", "rows"), RESULTS)
def test_results_and_labels(db, schema, query, labels, rows):
    got_labels, got_rows, translation = run(db, schema, query)
    assert got_labels == labels
    assert [c.name for c in translation.output_columns] == labels
    assert [tuple(map(comparable, r)) for r in got_rows] == [tuple(map(comparable, r)) for r in rows]


def comparable(value):
    """Numbers as floats, so integer, decimal and double results compare alike."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return value
    return pytest.approx(float(value))


def test_ml_distance_self_reference_comes_first(db, schema):
    labels, rows, translation = run(
        db, schema,
        f"SELECT TOP 3 obs_publisher_did, ml_distance(embedding, '{SELF}') AS d "
        "FROM miles.spectra ORDER BY d")
    assert labels == ["obs_publisher_did", "d"]
    assert rows[0] == (SELF, 0.0)
    assert [r[1] for r in rows] == sorted(r[1] for r in rows)
    assert rows[1][1] == pytest.approx(1.0)
    assert translation.references == [
        adql.Reference("miles.spectra", ("obs_publisher_did", "obs_id"), SELF, "embedding")]
    assert translation.output_columns[1].datatype_hint == "double"
    assert translation.output_columns[0].column.name == "obs_publisher_did"


def test_ml_distance_in_order_by_and_via_alias_of_table(db, schema):
    _, rows, translation = run(
        db, schema,
        f"SELECT s.target_name FROM miles.spectra s "
        f"ORDER BY ml_distance(s.embedding, '{SELF}'), s.target_name")
    assert [r[0] for r in rows] == ["HD 1", "HD 3", "HD 2", "HD 4"]
    assert len(translation.references) == 1


def test_ml_distance_is_null_without_embedding(db, schema):
    _, rows, _ = run(db, schema, f"SELECT ml_distance(embedding, '{SELF}') FROM miles.spectra "
                                 "WHERE target_name = 'HD 4'")
    assert rows == [(None,)]


def test_unknown_reference_is_reported_by_the_caller(db, schema):
    translation = adql.translate(
        "SELECT ml_distance(embedding, 'ivo://nowhere') FROM miles.spectra", schema)
    [reference] = translation.references
    found = db.execute(f"SELECT 1 FROM {reference.table} WHERE {reference.key_columns[0]} = ?",
                       [reference.value]).fetchall()
    assert found == []
    error = adql.unknown_reference_error(reference)
    assert isinstance(error, E08)
    assert "no row of miles.spectra has obs_publisher_did or obs_id 'ivo://nowhere'" in str(error)


@pytest.mark.parametrize("reference", ["ml_vector('0 0')", "ml_vector('0, 0')", "o.embedding"])
def test_ml_distance_to_a_vector_or_another_embedding(db, schema, reference):
    _, rows, _ = run(
        db, schema,
        f"SELECT s.target_name, ml_distance(s.embedding, {reference}) AS d "
        f"FROM miles.spectra AS s, miles.spectra AS o WHERE o.target_name = 'HD 1' "
        "AND s.embedding IS NOT NULL ORDER BY d")
    assert rows == [("HD 1", 0.0), ("HD 3", 1.0), ("HD 2", 5.0)]


def test_ml_cosine_distance_compares_directions(db, schema):
    _, rows, _ = run(db, schema, "SELECT target_name, ml_cosine_distance(embedding, "
                                 "ml_vector('2 0')) AS d FROM miles.spectra WHERE target_name IN "
                                 "('HD 2', 'HD 3') ORDER BY d")
    assert rows == [("HD 3", pytest.approx(0.0)), ("HD 2", pytest.approx(0.4))]


def test_star_output_columns_follow_tap_schema(db, schema):
    labels, _, translation = run(db, schema, "SELECT * FROM miles.spectra")
    published = schema.table("miles.spectra").columns
    assert labels == [c.name for c in published]
    assert [o.column for o in translation.output_columns] == list(published)


def test_aliased_column_keeps_its_metadata(schema):
    [output] = adql.translate("SELECT teff AS t FROM miles.spectra", schema).output_columns
    assert output.name == "t"
    assert output.column.name == "teff"


ERRORS = [
    ("SELECT tef FROM miles.spectra", E04, ["'tef'", "miles.spectra", "did you mean 'teff'"]),
    ("SELECT s.loggg FROM miles.spectra AS s", E04, ["'loggg'", "'logg'"]),
    ("SELECT * FROM miles.spectrum", E03, ["'miles.spectrum'", "did you mean 'miles.spectra'"]),
    ("SELECT * FROM private.secrets", E03, ["'private.secrets'"]),
    ("SELECT teff FROM miles.spectra a, miles.spectra b", E07, ["'teff'", "a.teff"]),
    ("SELECT read_csv('x')", E05, ["'read_csv'"]),
    ("SELECT * FROM read_csv('x')", E05, ["'read_csv'"]),
    ("SELECT pg_sleep(1) FROM miles.spectra", E05, ["'pg_sleep'"]),
    ("SELECT current_setting('threads')", E05, ["'current_setting'"]),
    ("SELECT 1; DROP TABLE x", E02, ["2 statements"]),
    ("INSERT INTO miles.spectra (teff) VALUES (1)", E02, ["INSERT"]),
    ("COPY miles.spectra TO 'out.csv'", E02, ["COPY"]),
    ("PRAGMA version", E02, ["PRAGMA"]),
    ("ATTACH 'other.db' AS other", E01, []),
    ("SELECT * FROM 'data.csv'", E03, ["'data.csv'"]),
    ("SELECT * FROM \"data.csv\"", E03, ["'data.csv'"]),
    ("SELECT teff INTO copy FROM miles.spectra", E09, ["INTO"]),
    ("SELECT ml_distance(embedding) FROM miles.spectra", E06, ["2 arguments"]),
    ("SELECT ml_distance(teff, 'x') FROM miles.spectra", E06, ["'teff'"]),
    ("SELECT ml_distance(embedding, target_name) FROM miles.spectra", E06,
     ["'target_name' is not an embedding"]),
    ("SELECT ml_distance(embedding, 1) FROM miles.spectra", E06, ["string literal", "ml_vector"]),
    ("SELECT ml_distance(embedding, ml_vector('1 2 3')) FROM miles.spectra", E06,
     ["dimension mismatch: the embedding has 2 dimensions, the reference 3"]),
    ("SELECT ml_distance(embedding, ml_vector('1 x')) FROM miles.spectra", E06,
     ["'1 x' is not a list of numbers"]),
    ("SELECT ml_vector('1 2') FROM miles.spectra", E06, ["second argument of ml_distance"]),
    ("SELECT ml_distance('x', 'y') FROM miles.spectra", E06, ["embedding column"]),
    ("SELECT teff FROM miles.spectra WHERE obs_id IN (SELECT nope FROM miles.spectra)",
     E04, ["'nope'"]),
    ("SELECT teff FROM miles.spectra WHERE obs_id IN (SELECT x FROM hidden.table1)",
     E03, ["'hidden.table1'"]),
]


@pytest.mark.parametrize(("query", "error", "fragments"), ERRORS)
def test_errors(schema, query, error, fragments):
    with pytest.raises(error) as raised:
        adql.translate(query, schema)
    assert raised.value.code == error.code
    for fragment in fragments:
        assert fragment in str(raised.value)


def test_syntax_error_has_a_position():
    with pytest.raises(E01) as raised:
        adql.check("SELECT teff\nFROM miles.spectra WHERE")
    assert isinstance(raised.value, adql.AdqlError)
    assert raised.value.line == 2
    assert raised.value.col is not None


@pytest.mark.parametrize(("query", "valid"), [
    ("SELECT whatever FROM anywhere", True),
    ("SELECT ml_distance(embedding, 'x') FROM t", True),
    ("SELECT read_csv('x')", False),
    ("SELECT 1; SELECT 2", False),
])
def test_check_without_schema_only_checks_syntax_and_functions(query, valid):
    if valid:
        adql.check(query)
    else:
        with pytest.raises(adql.AdqlError):
            adql.check(query)


def test_check_with_schema_checks_names(schema):
    adql.check("SELECT teff FROM miles.spectra", schema)
    with pytest.raises(E04):
        adql.check("SELECT whatever FROM miles.spectra", schema)


def test_function_registry_declares_ml_distance():
    function = adql.FUNCTIONS["ml_distance"]
    assert function.form == "ml_distance(embedding REAL ARRAY, ref VARCHAR) -> DOUBLE"
    assert "duckdb" in function.generators
    assert function.description


def test_unknown_backend_is_refused(schema):
    with pytest.raises(ValueError, match="postgres"):
        adql.translate("SELECT teff FROM miles.spectra", schema, backend="postgres")


@pytest.mark.parametrize("query", [
    "SELECT * FROM UNNEST([1, 2])",
    "SELECT * FROM (VALUES (1), (2)) AS v(a)",
    "SELECT * EXCLUDE (teff) FROM miles.spectra",
    "SELECT {'a': 1} AS s FROM miles.spectra",
    "SELECT embedding[1] FROM miles.spectra",
    "SELECT teff FROM miles.spectra QUALIFY 1 = 1",
    "SELECT COUNT(*) FILTER (WHERE teff > 1) FROM miles.spectra",
    "SELECT teff FROM miles.spectra GROUP BY ALL",
    "SELECT * FROM miles.spectra PIVOT (COUNT(*) FOR teff IN (1))",
])
def test_backend_syntax_that_is_not_adql_never_reaches_the_database(query):
    with pytest.raises(E09, match="not ADQL"):
        adql.translate(query, load(model="test", latent_dim=2))


@pytest.mark.parametrize(("query", "expected"), [
    ("SELECT POINT('ICRS', teff, logg) FROM miles.spectra WHERE target_name = 'HD 1'",
     [5800.0, 4.4]),
    ("SELECT CONTAINS(POINT(0, logg), CIRCLE(0, 4.0, 0.3)) FROM miles.spectra "
     "WHERE target_name = 'HD 1'", 0),
    ("SELECT IN_UNIT(teff, 'mK') FROM miles.spectra WHERE target_name = 'HD 1'", 5800000.0),
    ("SELECT CAST('1 2' AS POINT) FROM miles.spectra WHERE target_name = 'HD 1'", [1.0, 2.0]),
    ("SELECT AREA(REGION('Circle ICRS 10 20 1')) FROM miles.spectra WHERE target_name = 'HD 1'",
     2 * math.pi * (1 - math.cos(math.radians(1))) * math.degrees(1) ** 2),
])
def test_geometry_and_units_run_as_plain_sql(db, schema, query, expected):
    _, rows, _ = run(db, schema, query)
    value = rows[0][0]
    assert (list(value) if isinstance(value, (list, tuple)) else value) == pytest.approx(expected)


def test_declared_functions_are_accepted_by_checks_only(schema):
    udf = "ivo_healpix_index(order INTEGER, ra DOUBLE, dec DOUBLE) -> BIGINT"
    query = "SELECT ivo_healpix_index(6, teff, logg) FROM miles.spectra"
    adql.check(query, udfs=[udf])
    adql.check(query, schema, udfs=[udf])
    with pytest.raises(E05, match="ivo_healpix_index"):
        adql.check(query)
    with pytest.raises(E05, match="ivo_healpix_index"):
        adql.translate(query, schema)
    with pytest.raises(E06, match="takes 3 arguments, got 1"):
        adql.check("SELECT IVO_HEALPIX_INDEX(6) FROM t", udfs=[udf])
    with pytest.raises(ValueError, match="not a function form"):
        adql.check(query, udfs=["ivo_healpix_index"])
    with pytest.raises(ValueError, match="already an ADQL function"):
        adql.check(query, udfs=["point(x REAL) -> REAL"])


@pytest.mark.parametrize(("query", "error", "fragment"), [
    ("SELECT ABS(teff, 2) FROM t", E06, "ABS: takes 1 argument, got 2"),
    ("SELECT COALESCE() FROM t", E06, "1 or more arguments, got 0"),
    ("SELECT CIRCLE('ICRS', 1, 2) FROM t", E06, "CIRCLE([coordsys,] center point"),
    ("SELECT x FROM t WHERE CONTAINS(p, c)", E01, "compare it, e.g. CONTAINS(p, c) = 1"),
    ("SELECT POINT(1, 2) || 'a' FROM t", E01, "geometry cannot be an operand of ||"),
    ("SELECT distance FROM t", E01, "reserved word"),
    ("SELECT x, FROM t", E01, "Expected a value after ','"),
    ("SELECT x FROM t WHERE x IS 3", E01, "IS only tests for NULL"),
    ("SELECT x FROM (SELECT x FROM t)", E01, "needs a name"),
    ("SELECT x FROM t OFFSET 1.5", E01, "OFFSET takes a whole number"),
    ("SELECT CAST(x AS FLOAT) FROM t", E01, "CAST cannot convert to FLOAT"),
    ("SELECT x FROM t WHERE y IN (SELECT z FROM (WITH w AS (SELECT 1 AS z FROM u) "
     "SELECT z FROM w) AS v)", E01, "WITH may only start the whole query"),
    ("SELECT 'abc FROM t", E01, "' is never closed"),
])
def test_adql_grammar_errors(query, error, fragment):
    with pytest.raises(error, match=re.escape(fragment)):
        adql.check(query)


@pytest.fixture(scope="module")
def client(schema, tmp_path_factory):
    """The service (Flask's test client) on an archive file holding STARS."""
    from vo_ml.archive.backends import open_backend
    from vo_ml.service import create_app

    db = tmp_path_factory.mktemp("served") / "stars.duckdb"
    with open_backend(db) as backend:
        table = schema.table("miles.spectra")
        backend.ensure_table(table, table.columns)
        names = ("obs_publisher_did", "target_name", "teff", "logg", "feh", "embedding")
        backend.insert_rows(table, [dict(zip(names, star, strict=True)) for star in STARS],
                            [(f"{star[1]}.fits", star[1], star[0]) for star in STARS])
        backend.publish_tap_schema(load())
    return create_app({"ARCHIVE_DB": str(db)}).test_client()


def _ask(client, query: str):
    """The sync TAP answer to ``query``: its status and text (CSV rows, or the DALI error)."""
    response = client.post("/tap/sync", data={"LANG": "ADQL", "QUERY": query,
                                               "RESPONSEFORMAT": "csv"})
    return response.status_code, response.get_data(as_text=True)


def _nested(clause: str, depth: int) -> str:
    """A query with ``depth`` nested levels in one clause, selecting target_name of hot stars."""
    if clause == "select list":
        return f"SELECT target_name, {'(' * depth}teff{')' * depth} AS t FROM miles.spectra " \
               "WHERE teff > 9000"
    if clause == "where":
        return f"SELECT target_name FROM miles.spectra WHERE {'(' * depth}teff > 9000{')' * depth}"
    if clause == "function arguments":
        return (f"SELECT target_name FROM miles.spectra WHERE {'ABS(' * depth}teff{')' * depth} "
                "> 9000")
    if clause == "case":
        return (f"SELECT target_name FROM miles.spectra WHERE "
                f"{'CASE WHEN teff > 9000 THEN ' * depth}1{' ELSE 0 END' * depth} = 1")
    source = "miles.spectra"
    for level in range(depth - 1):
        source = f"(SELECT target_name, teff FROM {source} AS s{level})"
    return f"SELECT target_name FROM {source} AS s WHERE teff > 9000"


CLAUSES = ["select list", "where", "function arguments", "case", "from subqueries"]


@pytest.mark.parametrize("clause", CLAUSES)
def test_queries_nested_thirty_levels_deep_run(client, clause):
    status, text = _ask(client, _nested(clause, 30))
    assert status == 200, text
    assert [line.split(",")[0] for line in text.splitlines()[1:]] == ['"HD 3"']


@pytest.mark.parametrize("clause", CLAUSES)
@pytest.mark.parametrize("depth", [60, 500, 100_000])
def test_deeper_nesting_is_refused_naming_the_limit(client, clause, depth):
    if clause == "from subqueries" and depth == 100_000:
        depth = 5000  # each level is a whole subquery: 5000 make a query of 200 kB already
    status, text = _ask(client, _nested(clause, depth))
    assert status == 400, text
    assert "ADQL-E13" in text and f"more than {adql.checker.MAX_NESTING} levels deep" in text


@pytest.mark.parametrize("condition", [" NOT " * 5000 + "teff > 9000",
                                       "teff > " + "- " * 5000 + "9000"])
def test_runs_of_operators_too_deep_to_parse_are_refused(client, condition):
    status, text = _ask(client, f"SELECT target_name FROM miles.spectra WHERE {condition}")
    assert status == 400 and "ADQL-E14" in text, text


@pytest.mark.parametrize(("condition", "rows"), [
    ("teff IN (" + ", ".join(str(t) for t in range(1, 20_000, 100)) + ", 9500)", 1),
    (" AND ".join(["teff > 9000"] * 3000), 1),
    (" OR ".join(f"teff = {t}" for t in range(3000)), 0),
])
def test_very_large_flat_queries_run(client, condition, rows):
    status, text = _ask(client, f"SELECT target_name FROM miles.spectra WHERE {condition}")
    assert status == 200, text
    assert len(text.splitlines()) == 1 + rows


def test_integers_wider_than_bigint_are_read_as_doubles(client):
    """Hypothesis found it: a 40-digit literal reached DuckDB as an arbitrary-precision number,
    which no output format can carry, and the response failed while being written."""
    status, text = _ask(client, "SELECT TOP 1 " + "1" * 40 + " AS wide, 0x" + "F" * 20
                        + " AS hex FROM miles.spectra")
    assert status == 200, text
    wide, hexadecimal = (float(v) for v in text.splitlines()[1].split(","))
    assert wide == pytest.approx(1.111111111111111e39)
    assert hexadecimal == pytest.approx(16.0**20 - 1)
    status, text = _ask(client, "SELECT " + "9" * 400 + " FROM miles.spectra")
    assert status == 400 and "beyond the range of a double" in text


#: Pieces of ADQL, each repeated many times, that nest (or chain) in every way the grammar has.
_PIECES = ["(", ")", "ABS(", "CASE WHEN teff > 1 THEN ", " ELSE 0 END", " NOT ", "- ", "teff",
           " + ", " > 1", " AND ", " OR ", ", ", "'x'", "(SELECT teff FROM miles.spectra AS s",
           "ml_distance(embedding, ", "POINT(", "1"]


@settings(max_examples=80, deadline=None)
@given(parts=st.lists(st.tuples(st.sampled_from(_PIECES), st.integers(1, 3000)), max_size=6),
       template=st.sampled_from(["SELECT target_name FROM miles.spectra WHERE {}",
                                 "SELECT {} FROM miles.spectra", "{}"]))
def test_any_text_however_deep_gets_rows_or_a_dali_error(client, parts, template):
    query = template.format("".join(piece * count for piece, count in parts))
    status, text = _ask(client, query)
    assert status in (200, 400), text
    assert status == 200 or 'name="QUERY_STATUS" value="ERROR"' in text


def test_each_latent_function_declares_its_form_and_output(schema):
    assert [f.form for f in adql.FUNCTIONS.values()] == [
        "ml_distance(embedding REAL ARRAY, ref VARCHAR) -> DOUBLE",
        "ml_cosine_distance(embedding REAL ARRAY, ref VARCHAR) -> DOUBLE",
        "ml_vector(values VARCHAR) -> REAL ARRAY",
        "ml_encode(wavelength REAL ARRAY, flux REAL ARRAY) -> REAL ARRAY",
        "ml_coverage(wavelength REAL ARRAY, flux REAL ARRAY) -> DOUBLE",
        "ml_encode_error(wavelength REAL ARRAY, flux REAL ARRAY) -> DOUBLE",
        "ml_typicality(wavelength REAL ARRAY, flux REAL ARRAY) -> DOUBLE",
        "ml_tag(wavelength REAL ARRAY, flux REAL ARRAY, tag VARCHAR) -> DOUBLE",
        "ml_in_polygon(x DOUBLE, y DOUBLE, vertices VARCHAR) -> INTEGER"]
    translation = adql.translate(f"SELECT ml_distance(embedding, '{SELF}') AS d, "
                                 f"ml_cosine_distance(embedding, '{SELF}') FROM miles.spectra",
                                 schema)
    labels = [(o.name, o.column.name, o.column.datatype, o.column.description.split()[0])
              for o in translation.output_columns]
    assert labels == [("d", "d", "double", "Euclidean"),
                      ("ml_cosine_distance", "ml_cosine_distance", "double", "one")]


def _with_upload(schema):
    """The schema plus an uploaded table of spectra, TAP_UPLOAD.mine."""
    from vo_ml.archive.tap_schema import Column, Schema, Table, TapSchema

    mine = Table("TAP_UPLOAD", "TAP_UPLOAD.mine", "", (
        Column("wavelength", "double", arraysize="*"), Column("flux", "double", arraysize="*")))
    return TapSchema([*schema.schemas, Schema("TAP_UPLOAD", "", (mine,))])


def test_measures_of_uploaded_spectra_read_the_columns_their_encoding_adds(schema):
    translation = adql.translate(
        "SELECT ml_distance(s.embedding, ml_encode(u.wavelength, u.flux)) AS d, "
        "ml_coverage(u.wavelength, u.flux), ml_encode_error(u.wavelength, u.flux) AS e, "
        "ml_typicality(u.wavelength, u.flux) FROM miles.spectra AS s, TAP_UPLOAD.mine AS u",
        _with_upload(schema))
    [encoding] = translation.encodings
    assert encoding.typicality_wanted and encoding.embedding == "embedding"
    for measure in adql.MEASURES:
        assert f"u.{encoding.measure_column(measure)}" in translation.sql
    assert [(o.name, o.column.ucd) for o in translation.output_columns[1:]] == [
        ("ml_coverage", "stat.filling;em.wl"), ("e", "stat.fit.residual"),
        ("ml_typicality", "stat.percentile")]


@pytest.mark.parametrize(("query", "code", "fragment"), [
    ("SELECT ml_coverage(u.wavelength, u.flux) FROM TAP_UPLOAD.mine AS u", "ADQL-E15",
     "no ml_encode(u.wavelength, u.flux)"),
    ("SELECT ml_typicality(u.flux, u.wavelength), ml_distance(s.embedding, ml_encode("
     "u.wavelength, u.flux)) FROM miles.spectra AS s, TAP_UPLOAD.mine AS u", "ADQL-E15",
     "e.g. with ml_distance(s.embedding, ml_encode(u.flux, u.wavelength))"),
    ("SELECT ml_encode_error(u.flux) FROM TAP_UPLOAD.mine AS u", "ADQL-E06",
     "write ml_encode_error(wavelength, flux)"),
])
def test_a_measure_without_its_encoding_is_an_adql_error(schema, query, code, fragment):
    with pytest.raises(adql.AdqlError) as raised:
        adql.translate(query, _with_upload(schema))
    assert raised.value.code == code and fragment in str(raised.value)
