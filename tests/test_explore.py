"""``/explore`` in a real browser: headless Debian Chromium (software WebGL, SwiftShader) driven by
selenium through Debian's chromedriver, against `vo-ml serve` on a copy of the session archive and
on a generated table of 270,000 mapped rows (the browser and the archive: ``tests/browser.py``).

These tests check what the page does, never how fast: its speed is measured, against a baseline
of the same run, by ``benchmarks/explore.py``. The timeouts here only keep a hung page from
holding the suite. The selections' ADQL is run through TAP and must return exactly the rows the
page selected, which the generated positions also give. A MILES star the model never saw, dropped
on the page, must be listed and drawn among archive stars of its temperature.

Screenshots of each page checked go to ``build/screenshots/`` of the checkout, or to the folder
named by the environment variable ``VO_ML_SCREENSHOTS`` (``browser.screenshot``); they are kept
after the run, each test overwriting its own.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import requests
from browser import (
    PAN_KEYS,
    ROWS,
    SYNTHETIC,
    ZOOM_KEYS,
    box_bounds,
    canvas_image,
    chromium,
    click_for_neighbours,
    drop_file,
    frame_rate,
    open_page,
    point_pixel,
    screenshot,
    select_view,
    selection_status,
    session,
    synthetic_archive,
    view_box,
    wait,
)
from conftest import COMMAND_TIMEOUT, DATA, TABLE, copy_archive, run, serving
from matplotlib.path import Path as Polygon
from selenium.webdriver import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

#: Seconds the 270,000-point page may take to paint before it counts as hung: ten times the
#: benchmark's target, so that a loaded machine does not fail it.
PAINT_TIMEOUT = 30
#: A MILES star kept out of the archive and of the model's training (as in ``tests/test_place.py``),
#: and its catalogue Teff: a G/K dwarf.
HELD_OUT = DATA / "miles_held_out" / "MILES_res2.50_star_m0416V.fits"
HELD_OUT_TEFF = 5401
#: The colour of a placed spectrum's marks on the map (the page's PLACED_COLOUR): red, which
#: neither viridis nor cividis holds.
PLACED_RGB = (214, 38, 41)


# --- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """One headless Chromium for the module (installed from Debian's packages if missing)."""
    with session(*chromium(run, COMMAND_TIMEOUT), tmp_path_factory.mktemp("chromium")) as opened:
        yield opened


@pytest.fixture(scope="module")
def miles_root(archive, tmp_path_factory) -> str:
    """`vo-ml serve` on a copy of the session's MILES archive with its index and tags."""
    with serving(copy_archive(archive, tmp_path_factory.mktemp("explore"), index=True)) as root:
        yield root


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> dict:
    """`vo-ml serve` on :func:`browser.synthetic_archive` of :data:`ROWS` rows, with their map
    positions and DIDs."""
    db = tmp_path_factory.mktemp("synthetic") / "synthetic.duckdb"
    positions, dids = synthetic_archive(db, ROWS)
    with serving(db) as root:
        yield {"root": root, "xy": positions, "dids": dids, "db": db}


def _tap_rows(root: str, query: str) -> list[dict[str, str]]:
    """The rows of ``query`` from the server's /tap/sync, as CSV (a missing value is '')."""
    answer = requests.post(f"{root}/tap/sync", data={
        "REQUEST": "doQuery", "LANG": "ADQL", "QUERY": query, "RESPONSEFORMAT": "csv",
        "MAXREC": str(ROWS)}, timeout=60)
    assert answer.ok, answer.text[-500:]
    return list(csv.DictReader(io.StringIO(answer.text)))


def _tap_dids(root: str, query: str) -> set[str]:
    return {row["obs_publisher_did"] for row in _tap_rows(root, query)}


def _open_synthetic(browser, root: str) -> tuple[float, ...]:
    """Open the 270,000-point page and select its first view as a box at once; the bounds of
    that view, which holds every row.

    The selection is made while the page still draws its 5,000-point sample of a view that
    moves: regl-scatterplot splices the points it does not draw out of the array it is given,
    which once cut the page's own selection to those 5,000 rows."""
    open_page(browser, f"{root}/explore/{SYNTHETIC}", PAINT_TIMEOUT)
    first, selected = select_view(browser)
    assert selected == ROWS
    browser.find_element(By.ID, "clear-selection").click()
    return first


def _run_adql(browser) -> dict[str, str | None]:
    """Press "Run on TAP" and wait for the page to compare its rows with its selection."""
    browser.find_element(By.ID, "run-adql").click()
    wait(browser, lambda: selection_status(browser)["same"], "the rows of the ADQL", 60)
    return selection_status(browser)


# --- the routes -------------------------------------------------------------------------------

def test_tables_and_page(client):
    listing = client.get("/explore")
    assert listing.status_code == 200
    assert b'href="/explore/miles.spectra"' in listing.data
    page = client.get("/explore/miles.spectra")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert b'id="explore-config"' in page.data and b"/explore/static/explore.js" in page.data
    missing = client.get("/explore/miles.nothing")
    assert missing.status_code == 404
    assert b"NotFoundFault" in missing.data and b"miles.spectra" in missing.data


def test_points_are_an_arrow_stream_kept_by_model(client, app):
    from vo_ml.service.explore import ARROW_STREAM_MIME

    answer = client.get("/explore/miles.spectra/points")
    assert answer.status_code == 200 and answer.mimetype == ARROW_STREAM_MIME
    points = pa.ipc.open_stream(answer.data).read_all()
    assert points.schema.metadata[b"model_id"]
    assert points.column_names[:4] == ["obs_publisher_did", "target_name", "ml_x", "ml_y"]
    assert points.schema.field("ml_x").type == pa.float64()
    assert points.schema.field("ml_teff").type == pa.float32()
    assert "ml_teff_lo" not in points.column_names
    dids = points.column("obs_publisher_did").to_pylist()
    assert dids == sorted(dids) and len(dids) == 91
    kept = list(Path(f"{app.config['ARCHIVE_DB']}.explore").glob("miles.spectra.*.arrow"))
    assert len(kept) == 1
    written = kept[0].stat().st_mtime_ns
    compressed = client.get("/explore/miles.spectra/points", headers={"Accept-Encoding": "gzip"})
    assert compressed.headers["Content-Encoding"] == "gzip"
    assert kept[0].stat().st_mtime_ns == written


def test_bundle_ships_with_its_licences(client):
    script = client.get("/explore/static/explore.js")
    assert script.status_code == 200 and len(script.data) > 100_000
    licences = client.get("/explore/static/LICENSES.txt").data.decode()
    assert "regl-scatterplot 1.16.0 (MIT)" in licences and "apache-arrow" in licences
    assert "GPL" not in licences.replace("LGPL", "")


# --- the page at archive scale ----------------------------------------------------------------

def test_map_of_270000_points(browser, synthetic):
    first = _open_synthetic(browser, synthetic["root"])
    assert browser.find_element(By.ID, "status").text.startswith(f"{ROWS:,} spectra;")
    # The whole map is in the first view: its box holds every row.
    x, y = synthetic["xy"].T
    assert first[0] <= x.min() and x.max() <= first[1] and first[2] <= y.min() and y.max() <= first[3]
    drawn = canvas_image(browser)
    screenshot(browser, "map-270000")

    browser.find_element(By.ID, "map").send_keys("+")
    zoomed = view_box(browser)
    assert zoomed[1] - zoomed[0] == pytest.approx((first[1] - first[0]) / 1.25, rel=1e-3)
    assert (zoomed[0] + zoomed[1]) / 2 == pytest.approx((first[0] + first[1]) / 2, abs=1e-3)
    browser.find_element(By.ID, "map").send_keys(Keys.ARROW_RIGHT)
    panned = view_box(browser)
    assert panned[0] > zoomed[0] and panned[1] - panned[0] == pytest.approx(zoomed[1] - zoomed[0])
    # A second of moving (a pan or zoom step every frame, the sample of the map drawn), then back
    # to the first view: once it rests, every point is drawn again, as at first.
    frame_rate(browser, [*PAN_KEYS, *ZOOM_KEYS], 1000)
    browser.find_element(By.ID, "reset-view").click()
    assert view_box(browser) == pytest.approx(first, rel=1e-4)
    browser.find_element(By.ID, "clear-selection").click()
    wait(browser, lambda: np.array_equal(canvas_image(browser), drawn),
         "all the points again once the view rests", PAINT_TIMEOUT, 0.1)


def test_box_selection_is_the_adql(browser, synthetic):
    root = synthetic["root"]
    _open_synthetic(browser, root)
    browser.find_element(By.ID, "mode-box").click()
    canvas = browser.find_element(By.ID, "canvas")
    ActionChains(browser).move_to_element_with_offset(canvas, -150, -100).click_and_hold() \
        .move_by_offset(120, 80).move_by_offset(120, 80).release().perform()
    selected = int(wait(browser, lambda: selection_status(browser)["selected"], "a box selection"))
    adql = browser.find_element(By.ID, "adql").get_attribute("value")
    x0, x1, y0, y1 = box_bounds(adql)
    x, y = synthetic["xy"].T
    expected = set(synthetic["dids"][(x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)])
    assert selected == len(expected) > 100
    assert _tap_dids(root, adql) == expected
    ran = _run_adql(browser)
    assert ran["same"] == "true" and int(ran["rows"]) == selected
    screenshot(browser, "box-selection")


def test_lasso_selection_is_the_adql(browser, synthetic):
    root = synthetic["root"]
    _open_synthetic(browser, root)
    browser.find_element(By.ID, "mode-lasso").click()
    canvas = browser.find_element(By.ID, "canvas")
    chain = ActionChains(browser).move_to_element_with_offset(canvas, -120, -90).click_and_hold()
    for dx, dy in ((150, 10), (60, 120), (-90, 40), (-100, -60), (-20, -100)):
        chain = chain.move_by_offset(dx, dy)
    chain.release().perform()
    selected = int(wait(browser, lambda: selection_status(browser)["selected"], "a lasso selection"))
    adql = browser.find_element(By.ID, "adql").get_attribute("value")
    found = re.search(r"1 = ml_in_polygon\(ml_x, ml_y, '([^']+)'\)", adql)
    assert found, adql
    # The rows inside the polygon the ADQL names, from the generated positions (no point lies
    # on an edge of it: the positions are random floats).
    polygon = Polygon(np.array(found.group(1).split(), dtype=float).reshape(-1, 2))
    expected = set(synthetic["dids"][polygon.contains_points(synthetic["xy"])])
    assert selected == len(expected) > 100
    assert _tap_dids(root, adql) == expected
    ran = _run_adql(browser)
    assert ran["same"] == "true" and int(ran["rows"]) == selected
    screenshot(browser, "lasso-selection")


# --- a point, its neighbours and the keyboard, on the MILES archive ---------------------------

def test_click_shows_neighbours(browser, miles_root):
    open_page(browser, f"{miles_root}/explore/miles.spectra")
    x0, x1, y0, y1 = view_box(browser)
    browser.find_element(By.ID, "clear-selection").click()
    before = canvas_image(browser)
    dx, dy = point_pixel(browser)
    click_for_neighbours(browser, (dx, dy))
    # The panel is the point clicked: the row nearest to where the click fell on the map.
    did = browser.find_element(By.CSS_SELECTOR, "#panel .did").text
    points = pa.ipc.open_stream(requests.get(
        f"{miles_root}/explore/miles.spectra/points", timeout=30).content).read_all()
    size = browser.find_element(By.ID, "canvas").size
    clicked = ((x0 + x1) / 2 + dx / size["width"] * (x1 - x0),
               (y0 + y1) / 2 - dy / size["height"] * (y1 - y0))
    distances = np.hypot(points.column("ml_x").to_numpy() - clicked[0],
                         points.column("ml_y").to_numpy() - clicked[1])
    assert did == points.column("obs_publisher_did")[int(np.argmin(distances))].as_py()
    # Its neighbours are those of /datalink/similar, listed and drawn on the map: dark lines
    # from the point to each (the points themselves are paler than these).
    listed = [item.get_attribute("data-did")
              for item in browser.find_elements(By.CSS_SELECTOR, "#neighbours li")]
    similar = requests.get(f"{miles_root}/datalink/similar", params={
        "ID": did, "K": 10, "RESPONSEFORMAT": "csv"}, timeout=30).text
    assert listed == [row["obs_publisher_did"] for row in csv.DictReader(io.StringIO(similar))]
    wait(browser, lambda: (canvas_image(browser) < 40).sum() > (before < 40).sum() + 500,
         "the neighbours drawn on the map")
    wait(browser, lambda: "ml_teff" in browser.find_element(By.ID, "tags").text, "the tags")
    teff = next(row.text for row in browser.find_elements(By.CSS_SELECTOR, "#tags tr")
                if row.text.startswith("ml_teff "))
    assert re.search(r"\[\d+, \d+\] K", teff), teff
    links = browser.find_element(By.LINK_TEXT, "DataLink of this spectrum").get_attribute("href")
    assert "/datalink/links?ID=" in links
    browser.find_element(By.CSS_SELECTOR, "#neighbours li button:nth-of-type(2)").click()
    why = wait(browser, lambda: browser.find_element(By.CSS_SELECTOR, "#why img"), "why similar")
    assert "/datalink/why?" in why.get_attribute("src")
    wait(browser, lambda: browser.execute_script(
        "return document.getElementById('preview').naturalWidth > 0 && "
        "arguments[0].naturalWidth > 0", why), "the preview and why-similar plots", 90, 0.2)
    screenshot(browser, "point-panel")


def test_keyboard(browser, miles_root):
    open_page(browser, f"{miles_root}/explore/miles.spectra")
    tabbed = []
    for _ in range(20):
        # Keys to whatever has the focus, as a person types them (send_keys on a file input
        # would choose a file).
        ActionChains(browser).send_keys(Keys.TAB).perform()
        tabbed.append(browser.switch_to.active_element.get_attribute("id"))
        if tabbed[-1] == "map":
            break
    assert "colour-column" in tabbed and tabbed[-1] == "map", tabbed

    def keyed_view_box() -> tuple[float, ...]:
        browser.find_element(By.ID, "select-view").send_keys(Keys.ENTER)
        return box_bounds(browser.find_element(By.ID, "adql").get_attribute("value"))

    before = keyed_view_box()
    browser.find_element(By.ID, "map").send_keys("+")
    after = keyed_view_box()
    assert after[1] - after[0] == pytest.approx((before[1] - before[0]) / 1.25, rel=1e-3)
    browser.find_element(By.ID, "map").send_keys(Keys.ARROW_RIGHT)
    panned = keyed_view_box()
    assert panned[0] > after[0] and panned[1] - panned[0] == pytest.approx(after[1] - after[0])
    browser.find_element(By.ID, "map").send_keys(Keys.ENTER)
    wait(browser, lambda: browser.find_element(By.ID, "panel").get_attribute(
        "data-neighbours-ms"), "the panel of the point at the centre")
    browser.find_element(By.ID, "map").send_keys(Keys.ESCAPE)
    assert browser.find_element(By.ID, "adql").get_attribute("value") == ""
    assert selection_status(browser)["selected"] == "0"
    screenshot(browser, "keyboard")


def test_dropped_held_out_star_lands_among_stars_of_its_type(browser, miles_root):
    """The acceptance of "place a spectrum": the held-out star, dropped on the map as a file, is
    placed with a good coverage of the model grid; the neighbours the page lists are stars of its
    type by their catalogue Teff, asked of TAP (the bar of ``tests/test_place.py``), and its mark
    is drawn on the map where the page says it landed."""
    open_page(browser, f"{miles_root}/explore/{TABLE}")
    x0, x1, y0, y1 = view_box(browser)
    browser.find_element(By.ID, "clear-selection").click()
    before = canvas_image(browser, "RGB")
    drop_file(browser, browser.find_element(By.ID, "map"), HELD_OUT)
    wait(browser, lambda: browser.find_element(By.ID, "placed-typicality").text != "",
         "the placed spectrum", 120, 0.1)
    assert browser.find_element(By.ID, "placed-title").text == f"{HELD_OUT.name} on the map"
    assert float(browser.find_element(By.ID, "placed-coverage").text) > 0.95
    assert float(browser.find_element(By.ID, "placed-typicality").text) > 1

    # The neighbours as the page lists them, each with its DID and the name on its button.
    items = browser.find_elements(By.CSS_SELECTOR, "#placed-neighbours li")
    listed = {item.get_attribute("data-did"): item.find_element(By.TAG_NAME, "button").text
              for item in items}
    assert len(items) == len(listed) == 10, listed
    quoted = ", ".join(f"'{did}'" for did in listed)
    rows = {row["obs_publisher_did"]: row for row in _tap_rows(
        miles_root, f"SELECT obs_publisher_did, target_name, teff FROM {TABLE} "
        f"WHERE obs_publisher_did IN ({quoted})")}
    assert rows.keys() == listed.keys()
    assert all(name == (rows[did]["target_name"] or did) for did, name in listed.items()), listed
    # Stars of its type: a few archive stars have no catalogue Teff; most of the ten have one
    # within 800 K of its own.
    teffs = np.array([float(rows[did]["teff"] or "nan") for did in listed])
    off = np.abs(teffs[np.isfinite(teffs)] - HELD_OUT_TEFF)
    assert len(off) >= 7 and np.median(off) < 800 and (off < 800).sum() > len(teffs) / 2, teffs

    # Its mark, in red, where the page says the spectrum landed: new red pixels around the spot
    # of its map position in the view (the map's y axis points up, the screen's down).
    position = browser.find_element(By.ID, "placed-position")
    x, y = (float(position.get_attribute(name)) for name in ("data-ml-x", "data-ml-y"))
    assert x0 < x < x1 and y0 < y < y1
    canvas = browser.find_element(By.ID, "canvas")
    scale = before.shape[1] / canvas.size["width"]
    column, row = (x - x0) / (x1 - x0) * before.shape[1], (y1 - y) / (y1 - y0) * before.shape[0]
    ys, xs = np.ogrid[:before.shape[0], :before.shape[1]]
    spot = np.hypot(ys - row, xs - column) < 8 * scale

    def red(image: np.ndarray) -> np.ndarray:
        return (np.abs(image.astype(int) - PLACED_RGB) < 60).all(axis=-1)

    assert not red(before)[spot].any()
    wait(browser, lambda: red(canvas_image(browser, "RGB"))[spot].sum() >= 10,
         "the placed spectrum's mark on the map")
    screenshot(browser, "placed-held-out")
    screenshot(browser, "placed-held-out-panel", browser.find_element(By.ID, "placed"))
