"""``ml_in_polygon``: a lasso on the latent map as ADQL, against matplotlib's point-in-polygon
on the archive's own ml_x, ml_y, through the TAP service of the session's archive."""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy.io.votable import parse
from conftest import TABLE
from lxml import etree
from matplotlib.path import Path as PolygonPath

from vo_ml import adql
from vo_ml.adql.planar import MAX_VERTICES

#: The function as the capabilities declare it.
FORM = "ml_in_polygon(x DOUBLE, y DOUBLE, vertices VARCHAR) -> INTEGER"


def _post(client, query: str):
    return client.post("/tap/sync", data={"LANG": "ADQL", "QUERY": query, "MAXREC": "100000"})


def _rows(client, query: str):
    response = _post(client, query)
    assert response.status_code == 200, response.text
    return parse(io.BytesIO(response.data)).get_first_table()


@pytest.fixture(scope="module")
def points(client) -> tuple[np.ndarray, np.ndarray]:
    """The publisher DIDs and map positions of every embedded spectrum of the archive."""
    table = _rows(client, f"SELECT obs_publisher_did, ml_x, ml_y FROM {TABLE} "
                          "WHERE ml_x IS NOT NULL").to_table()
    return (np.asarray(table["obs_publisher_did"]).astype(str),
            np.column_stack([np.ma.getdata(table[c]) for c in ("ml_x", "ml_y")]).astype(float))


def _text(vertices: np.ndarray) -> str:
    return " ".join(f"{float(x)!r} {float(y)!r}" for x, y in vertices)


def _shapes(xy: np.ndarray) -> dict[str, np.ndarray]:
    """Polygons over the archive's map: convex, concave, self-crossing and a long lasso."""
    # Quantiles can fall on a row's position: nudged off them, no row lies on an edge, where
    # matplotlib and the half-open rule may differ.
    (x0, y0), (x1, y1) = (np.quantile(xy, q, axis=0) + 1.2345e-6 * np.ptp(xy, axis=0)
                          for q in (0.1, 0.9))
    cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
    angle = np.linspace(0, 2 * np.pi, 300, endpoint=False)
    radius = 0.5 * (1 + 0.5 * np.sin(3 * angle))
    star = np.linspace(0, 2 * np.pi, 14, endpoint=False)
    pentagram = np.arange(5) * 4 * np.pi / 5 + np.pi / 2
    return {
        "triangle": np.array([[x0, y0], [x1, y0], [cx, y1]]),
        "box": np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]),
        # A C opening to the right: its hollow is outside.
        "concave C": np.array([[x0, y0], [x1, y0], [x1, y0 + h / 3], [x0 + w / 3, y0 + h / 3],
                               [x0 + w / 3, y1 - h / 3], [x1, y1 - h / 3], [x1, y1], [x0, y1]]),
        "star": np.column_stack([cx + w / 2 * np.where(np.arange(14) % 2, 0.3, 1) * np.cos(star),
                                 cy + h / 2 * np.where(np.arange(14) % 2, 0.3, 1) * np.sin(star)]),
        # Polygons that cross themselves: each wing of a bow tie is inside, and a pentagram's
        # centre, wound around twice, is outside by the even-odd rule.
        "bow tie": np.array([[x0, y0], [x1, y1], [x1, y0], [x0, y1]]),
        "pentagram": np.column_stack([cx + w / 2 * np.cos(pentagram),
                                      cy + h / 2 * np.sin(pentagram)]),
        "300-vertex lasso": np.column_stack([cx + w * radius * np.cos(angle),
                                             cy + h * radius * np.sin(angle)]),
    }


@pytest.mark.parametrize("shape", ["triangle", "box", "concave C", "star", "bow tie",
                                   "pentagram", "300-vertex lasso"])
def test_rows_inside_are_those_matplotlib_finds(client, points, shape):
    dids, xy = points
    vertices = _shapes(xy)[shape]
    table = _rows(client, f"SELECT obs_publisher_did FROM {TABLE} WHERE "
                          f"1 = ml_in_polygon(ml_x, ml_y, '{_text(vertices)}')").to_table()
    expected = set(dids[PolygonPath(vertices).contains_points(xy)])
    assert 0 < len(expected) < len(dids)
    assert set(np.asarray(table["obs_publisher_did"]).astype(str)) == expected


def test_the_value_is_an_integer_one_or_zero_for_every_row(client, points):
    dids, xy = points
    vertices = _shapes(xy)["concave C"]
    table = _rows(client, f"SELECT obs_publisher_did, ml_in_polygon(ml_x, ml_y, "
                          f"'{_text(vertices)}') AS inside FROM {TABLE} WHERE ml_x IS NOT NULL")
    field = next(f for f in table.fields if f.name == "inside")
    assert field.datatype == "int"
    rows = table.to_table()
    inside = dict(zip(np.asarray(rows["obs_publisher_did"]).astype(str), rows["inside"],
                      strict=True))
    expected = PolygonPath(vertices).contains_points(xy).astype(int)
    assert [inside[did] for did in dids] == list(expected)


@pytest.mark.parametrize(("x", "y", "inside"), [
    ("0.5", "0.5", 1), ("2", "0.5", 0),
    # The half-open rule: left and lower edges are inside, right and upper ones outside.
    ("0", "0.5", 1), ("0.5", "0", 1), ("1", "0.5", 0), ("0.5", "1", 0),
    ("0", "0", 1), ("1", "1", 0),
    ("NULL", "0.5", None), ("0.5", "NULL", None),
])
def test_points_on_the_boundary_follow_the_half_open_rule(client, x, y, inside):
    table = _rows(client, f"SELECT TOP 1 ml_in_polygon({x}, {y}, '0 0 1 0 1 1 0 1') AS p "
                          f"FROM {TABLE}").to_table()
    value = table["p"][0]
    assert (None if np.ma.is_masked(value) else int(value)) == inside


def test_a_point_on_an_edge_two_polygons_share_is_in_exactly_one(client):
    left, right = "'0 0 1 0 1 1 0 1'", "'1 0 2 0 2 1 1 1'"
    for point in ("1, 0.5", "1, 0", "1.0, 0.25"):
        table = _rows(client, f"SELECT TOP 1 ml_in_polygon({point}, {left}) AS a, "
                              f"ml_in_polygon({point}, {right}) AS b FROM {TABLE}").to_table()
        assert int(table["a"][0]) + int(table["b"][0]) == 1, point


def test_the_largest_polygon_runs_and_one_more_vertex_is_refused(client, points):
    _, xy = points
    angle = np.linspace(0, 2 * np.pi, MAX_VERTICES, endpoint=False)
    centre, size = xy.mean(axis=0), xy.std(axis=0)
    vertices = np.column_stack([centre[0] + size[0] * np.cos(angle),
                                centre[1] + size[1] * np.sin(angle)])
    table = _rows(client, f"SELECT COUNT(*) AS n FROM {TABLE} WHERE "
                          f"ml_in_polygon(ml_x, ml_y, '{_text(vertices)}') = 1").to_table()
    assert int(table["n"][0]) == PolygonPath(vertices).contains_points(xy).sum()
    more = np.vstack([vertices, vertices[:1] * 0.5])
    response = _post(client, f"SELECT COUNT(*) FROM {TABLE} WHERE "
                             f"ml_in_polygon(ml_x, ml_y, '{_text(more)}') = 1")
    assert response.status_code == 400 and b"simplify the lasso" in response.data


@pytest.mark.parametrize(("call", "fragments"), [
    ("ml_in_polygon(ml_x, ml_y, target_name)", ["string literal", "x1 y1 x2 y2"]),
    ("ml_in_polygon(ml_x, ml_y, '0 0 1 0 1')", ["5 numbers, an odd count"]),
    ("ml_in_polygon(ml_x, ml_y, '0 0 1 1')", ["2 vertices", "at least 3"]),
    ("ml_in_polygon(ml_x, ml_y, '0 0 1 0 one 1')", ["'one' is not a number"]),
    ("ml_in_polygon(ml_x, ml_y, '0 0 1 0 NaN 1')", ["'NaN' is not a finite number"]),
    ("ml_in_polygon(ml_x, ml_y)", ["takes 3 arguments", "got 2"]),
    ("ml_in_polygon('a', ml_y, '0 0 1 0 1 1')", ["x and y are numbers"]),
    ("ml_in_polygon(embedding, ml_y, '0 0 1 0 1 1')", ["'embedding' is not"]),
])
def test_bad_calls_are_dali_errors_naming_the_problem(client, call, fragments):
    response = _post(client, f"SELECT obs_publisher_did FROM {TABLE} WHERE 1 = {call}")
    assert response.status_code == 400
    text = response.text
    assert 'name="QUERY_STATUS" value="ERROR"' in text and "ADQL-E06" in text
    assert "ml_in_polygon" in text
    for fragment in fragments:
        assert fragment in text


def test_a_bare_call_as_a_condition_is_told_to_compare():
    with pytest.raises(adql.AdqlError, match=r"compare it, e\.g\. .* = 1"):
        adql.check(f"SELECT * FROM {TABLE} WHERE ml_in_polygon(ml_x, ml_y, '0 0 1 0 1 1')")


def test_the_capabilities_declare_the_function(client):
    assert adql.FUNCTIONS["ml_in_polygon"].form == FORM
    document = etree.fromstring(client.get("/tap/capabilities").data)
    assert FORM in [form.text for form in document.iter("form")]
