"""Headless Chromium against `vo-ml serve`: what ``tests/test_explore.py`` (does the ``/explore``
page work) and ``benchmarks/explore.py`` (how fast is it) both need, kept in one place so that the
benchmark measures the very page, archive and browser the tests check.

Plain functions and context managers, no pytest: the benchmark imports this module with the
tests folder on ``sys.path``. Every process started here is stopped by its process id; a wait
that does not end raises :class:`TimeoutError` with what the page or process said.

Screenshots (:func:`screenshot`) go to the folder named by the environment variable
``VO_ML_SCREENSHOTS``, by default ``build/screenshots/`` of the checkout (``build/`` is not
committed), where they outlive the test run.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import requests
from PIL import Image
from selenium import webdriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.utils import free_port
from selenium.webdriver.remote.file_detector import UselessFileDetector
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement

from vo_ml.archive import tap_schema
from vo_ml.archive.backend import MlColumns
from vo_ml.archive.duckdb_backend import DuckDBBackend

#: The table of :func:`synthetic_archive`.
SYNTHETIC = "synth.spectra"
#: Rows of the archive-scale map: the size of the archive the page is meant for.
ROWS = 270_000
#: Runs a command with a timeout in seconds: ``run(command, timeout=...)``, as conftest's ``run``
#: (which fails the test with the stacks of a hung command) or ``subprocess.run``.
Runner = Callable[..., subprocess.CompletedProcess]
#: Installs both programs; apt-get is tried again after an update, for a stale package list.
INSTALL = ("apt-get", "install", "-y", "chromium", "chromium-driver")
#: Chromium as the brief sets it: headless, nothing from the network but the service, its own
#: profile, and WebGL through ANGLE on SwiftShader (there is no GPU).
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--use-angle=swiftshader",
                  "--enable-unsafe-swiftshader", "--window-size=1280,900")
#: Counts animation frames for ``arguments[1]`` ms while a key from ``arguments[0]`` goes to the
#: map at each frame (the page pans or zooms a step per key): frames per second of the page. With
#: no keys nothing is redrawn, and the count is the browser's own frame rate.
FRAME_RATE = """
const done = arguments[arguments.length - 1];
const [keys, period] = [arguments[0], arguments[1]];
const map = document.getElementById('map');
let frames = 0, start = null, i = 0;
function tick(now) {
  if (start === null) start = now; else frames += 1;
  if (keys.length) {
    map.dispatchEvent(new KeyboardEvent('keydown', {key: keys[i++ % keys.length], bubbles: true}));
  }
  if (now - start < period) requestAnimationFrame(tick);
  else done(frames / ((now - start) / 1000));
}
requestAnimationFrame(tick);
"""
PAN_KEYS = ("ArrowLeft", "ArrowUp", "ArrowRight", "ArrowDown")
ZOOM_KEYS = ("+", "-")
#: The folder of :func:`screenshot` when ``VO_ML_SCREENSHOTS`` is not set.
SCREENSHOTS = Path(__file__).resolve().parent.parent / "build" / "screenshots"


# --- processes --------------------------------------------------------------------------------

def chromium(run: Runner, timeout: float) -> tuple[str, str]:
    """(chromium, chromedriver) on the PATH, installed from Debian's packages if missing."""
    def found() -> tuple[str | None, str | None]:
        return shutil.which("chromium"), shutil.which("chromedriver")

    for command in (INSTALL, ("apt-get", "update"), INSTALL):
        if None not in found():
            break
        run(list(command), timeout=timeout)
    binary, driver = found()
    if binary is None or driver is None:
        raise RuntimeError(f"chromium or chromedriver is missing and '{' '.join(INSTALL)}' did not "
                           "install them; install them and run again")
    return binary, driver


@contextlib.contextmanager
def beside(command: Sequence[object], log: Path, ready: str, timeout: float) -> Iterator[None]:
    """``command`` running beside the caller, its output going to ``log`` (a pipe nobody reads
    would block it), until ``ready`` answers; stopped by its process id when the block ends."""
    with Path(log).open("ab") as sink:
        process = subprocess.Popen([str(part) for part in command], stdin=subprocess.DEVNULL,
                                   stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while not _answers(ready):
            if process.poll() is not None or time.monotonic() > deadline:
                raise TimeoutError(f"`{command[0]}` did not answer on {ready} in {timeout:.0f} s "
                                   f"(exit status {process.poll()}):\n"
                                   f"{Path(log).read_text(errors='replace')[-4000:]}")
            time.sleep(0.05)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def session(binary: str, driver: str, folder: Path) -> Iterator[WebDriver]:
    """A headless Chromium with its profile in ``folder``, through a chromedriver started here
    (it ends the browser it started when the session is closed)."""
    port = free_port()
    with beside([driver, f"--port={port}"], folder / "chromedriver.log",
                f"http://127.0.0.1:{port}/status", 30):
        options = webdriver.ChromeOptions()
        options.binary_location = binary
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={folder / 'profile'}"):
            options.add_argument(flag)
        browser = webdriver.Remote(f"http://127.0.0.1:{port}", options=options)
        browser.set_script_timeout(60)
        # The browser runs on this machine: a file input takes the local path as it is (the
        # default detector uploads files to a Selenium Grid, which chromedriver is not).
        browser.file_detector = UselessFileDetector()
        try:
            yield browser
        finally:
            browser.quit()


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).ok
    except requests.RequestException:
        return False


# --- the archive ------------------------------------------------------------------------------

def synthetic_archive(db: Path, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """An archive of ``rows`` generated spectra rows of :data:`SYNTHETIC` on a latent map: 40
    clusters, with an S/N that follows the cluster, embedded by a (two-dimensional) model of their
    own. Returns their map positions and DIDs, which tell what any region of the map holds."""
    schema = tap_schema.load().describing([SYNTHETIC])
    table = schema.table(SYNTHETIC)
    generator = np.random.default_rng(18)
    cluster = generator.integers(0, 40, rows)
    positions = generator.normal(0, 5, (40, 2))[cluster] + generator.normal(0, 0.6, (rows, 2))
    dids = [f"ivo://vo-ml.example/synth?s{i:07d}" for i in range(rows)]
    values = pa.table({"obs_publisher_did": dids,
                       "target_name": [f"T{i % 5000:04d}" for i in range(rows)],
                       "snr": 5.0 + 5 * cluster + generator.uniform(0, 20, rows)})
    with DuckDBBackend(db) as backend:
        backend.ensure_table(table, [table.column(name) for name in values.column_names])
        connection = backend._connection
        connection.register("generated", values)
        connection.execute(f"INSERT INTO {SYNTHETIC} SELECT * FROM generated")
        connection.unregister("generated")
        backend.write_ml_columns(table, MlColumns(
            "synthetic-2d", dids, positions.astype(np.float32), positions,
            np.abs(generator.normal(0, 0.01, rows)), {"model_id": "synthetic-2d"}))
        backend.publish_tap_schema(schema)
    return positions, np.array(dids)


# --- the page ---------------------------------------------------------------------------------

def open_page(browser: WebDriver, url: str, timeout: float = 30) -> float:
    """Load the page and wait for its first paint; the milliseconds from navigation to it."""
    browser.get(url)
    return float(wait(browser, lambda: browser.find_element(By.ID, "explore")
                      .get_attribute("data-first-paint-ms"), "the first paint", timeout))


def wait(browser: WebDriver, condition: Callable[[], object], what: str, timeout: float = 20,
         interval: float = 0.01) -> object:
    """The first true value of ``condition``, polled; a condition that raises counts as false
    (the element it reads may not be there yet)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            value = condition()
            if value:
                return value
        time.sleep(interval)
    raise TimeoutError(f"the page did not show {what} in {timeout} s; its status: "
                       f"{browser.find_element(By.ID, 'status').text!r}")


def selection_status(browser: WebDriver) -> dict[str, str | None]:
    """What the page says of its selection: its text, the rows selected on the map, the rows its
    ADQL returned and whether they are the same rows."""
    element = browser.find_element(By.ID, "selection-status")
    return {"text": element.text, "selected": element.get_attribute("data-selected"),
            "rows": element.get_attribute("data-rows"), "same": element.get_attribute("data-same")}


def box_bounds(adql: str) -> tuple[float, ...]:
    """(x0, x1, y0, y1) of a box selection's ADQL."""
    found = re.search(r"ml_x BETWEEN (\S+) AND (\S+) AND ml_y BETWEEN (\S+) AND (\S+)", adql)
    if not found:
        raise ValueError(f"not the ADQL of a box: {adql}")
    return tuple(float(value) for value in found.groups())


def select_view(browser: WebDriver) -> tuple[tuple[float, ...], int]:
    """The part of the map in view, in map units, as the page's "Select the view as a box" button
    writes it into the ADQL, and the rows it selected: read in the same task as the click, before
    anything else the page does (a view still settling) can change the selection."""
    adql, selected = browser.execute_script(
        "document.getElementById('select-view').click();"
        "return [document.getElementById('adql').value,"
        " document.getElementById('selection-status').dataset.selected];")
    return box_bounds(adql), int(selected)


def view_box(browser: WebDriver) -> tuple[float, ...]:
    """The part of the map in view (see :func:`select_view`)."""
    return select_view(browser)[0]


def frame_rate(browser: WebDriver, keys: Sequence[str], milliseconds: float) -> float:
    """Frames per second of the page while ``keys`` go to the map, one a frame (see
    :data:`FRAME_RATE`)."""
    return float(browser.execute_async_script(FRAME_RATE, list(keys), milliseconds))


def screenshot(browser: WebDriver, name: str, element: WebElement | None = None) -> Path:
    """Save the browser's window (or only ``element``, scrolled into view) as ``name`` (``.png``
    added if missing) in the folder given by ``VO_ML_SCREENSHOTS``, or :data:`SCREENSHOTS`, made
    if missing; its path."""
    folder = Path(os.environ.get("VO_ML_SCREENSHOTS") or SCREENSHOTS)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name if name.endswith(".png") else f"{name}.png")
    saved = element.screenshot(str(path)) if element else browser.save_screenshot(str(path))
    if not saved:
        raise OSError(f"the screenshot could not be written to {path}")
    return path


def drop_file(browser: WebDriver, target: WebElement, path: Path) -> None:
    """Drop the file at ``path`` on ``target`` as a person drags it there from their desktop:
    selenium cannot drag from outside the page, so the file is read by a file input made for it
    (then removed) and goes to ``target`` in the ``dataTransfer`` of a ``drop`` event."""
    chooser = browser.execute_script(
        "const input = document.createElement('input'); input.type = 'file';"
        "input.style.display = 'none'; document.body.append(input); return input;")
    chooser.send_keys(str(Path(path).resolve()))
    browser.execute_script(
        "const [input, target] = arguments; const files = new DataTransfer();"
        "files.items.add(input.files[0]); input.remove();"
        "for (const type of ['dragenter', 'dragover', 'drop']) {"
        "  target.dispatchEvent(new DragEvent(type, {dataTransfer: files, bubbles: true,"
        "                                            cancelable: true}));"
        "}", chooser, target)


def canvas_image(browser: WebDriver, mode: str = "L") -> np.ndarray:
    """The map's canvas as grey levels (or in another PIL ``mode``: ``"RGB"`` for its colours),
    at the screenshot's scale (see :func:`point_pixel`)."""
    png = browser.find_element(By.ID, "canvas").screenshot_as_png
    return np.asarray(Image.open(io.BytesIO(png)).convert(mode))


def point_pixel(browser: WebDriver) -> tuple[int, int]:
    """Where a point is on the map: the darkest pixel of the canvas (the points are coloured
    on white), as an offset in CSS pixels from the canvas's centre, as selenium clicks it."""
    canvas = browser.find_element(By.ID, "canvas")
    image = canvas_image(browser)
    row, column = np.unravel_index(np.argmin(image), image.shape)
    scale = image.shape[1] / canvas.size["width"]
    return (round(column / scale - canvas.size["width"] / 2),
            round(row / scale - canvas.size["height"] / 2))


def click_for_neighbours(browser: WebDriver, offset: tuple[int, int],
                         timeout: float = 30) -> tuple[float, float]:
    """Click the map at ``offset`` from its centre and wait for the panel's neighbours: (the
    milliseconds the page measured from the click to its neighbours on the map, those seen from
    here, from the click sent to the page's attribute read)."""
    panel = browser.find_element(By.ID, "panel")
    # A panel already open keeps the time of its point until the new one starts.
    browser.execute_script("arguments[0].removeAttribute('data-neighbours-ms')", panel)
    canvas = browser.find_element(By.ID, "canvas")
    ActionChains(browser).move_to_element_with_offset(canvas, *offset).perform()
    began = time.monotonic()
    ActionChains(browser).click().perform()
    page = float(wait(browser, lambda: panel.get_attribute("data-neighbours-ms"), "the neighbours",
                      timeout, 0.002))
    return page, 1000 * (time.monotonic() - began)
