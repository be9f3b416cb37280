"""``/explore`` in headless Chromium: first paint, pan and zoom frame rates, click to neighbours.

    python benchmarks/explore.py --db vo-ml-demo/miles.duckdb [--rows 270000] [--seconds 3]
                                 [--repeat 3]

The browser, its flags (software WebGL: SwiftShader), the generated archive and the page helpers
are those of ``tests/test_explore.py``, from ``tests/browser.py`` (the tests folder is put on
``sys.path`` for it); Chromium and chromedriver are installed from Debian's packages if missing.
In a temporary folder this builds the generated archive of ``--rows`` mapped rows and serves it
with `vo-ml serve` (stopped by its process id), and times as the page meets them: the first paint
when the points stream is written by that request (cold) and when it is kept (warm); frames per
second while a pan or zoom step goes to the map every frame (requestAnimationFrame), the median
of ``--repeat`` runs of ``--seconds``; and, on the archive ``--db`` (the generated one has no
spectrum files, which ``/datalink/similar`` needs), the time from a click on a point to its
neighbours on the map, as the page measures it and as selenium sees it.

The baseline, measured in the same run: the same page on a generated map of 5,000 rows, the
number of points the page draws while the view moves. It is what the machine can do with this
page under software rendering (the same work a frame as the large map while it moves, with the
same page, bundle and WebGL set-up at first paint); an empty requestAnimationFrame loop would
only give the browser's frame clock, the same whether or not the machine could draw. The click's
baseline is the request it waits for, ``/datalink/similar`` of the same point from Python.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from served import start_server

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from browser import (  # noqa: E402
    PAN_KEYS,
    SYNTHETIC,
    ZOOM_KEYS,
    chromium,
    click_for_neighbours,
    frame_rate,
    open_page,
    point_pixel,
    session,
    synthetic_archive,
)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402

#: Rows of the baseline map: MOVING_POINTS of the page (web/explore/src/explore.js), the sample
#: it draws while the view of a larger map moves.
BASELINE_ROWS = 5_000
#: Seconds apt-get may take to install Chromium when it is missing.
INSTALL_SECONDS = 600
PAINT_TARGET_MS = 3000
FRAMES_TARGET = 30
NEIGHBOURS_TARGET_MS = 300


def generated(folder: Path, rows: int) -> Path:
    """A generated archive of ``rows`` mapped rows in a folder of its own."""
    folder.mkdir()
    db = folder / "synthetic.duckdb"
    synthetic_archive(db, rows)
    return db


def paints(browser: WebDriver, url: str) -> tuple[float, float]:
    """(the page's first paint in ms from navigation, the seconds from the load sent to it)."""
    began = time.monotonic()
    page = open_page(browser, url, timeout=120)
    return page, time.monotonic() - began


def frames(browser: WebDriver, keys: tuple[str, ...], seconds: float, repeat: int) -> float:
    return statistics.median(frame_rate(browser, keys, 1000 * seconds) for _ in range(repeat))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=270_000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=3)
    arguments = parser.parse_args()
    binary, driver = chromium(lambda command, timeout: subprocess.run(command, timeout=timeout),
                              INSTALL_SECONDS)
    with tempfile.TemporaryDirectory(prefix="vo-ml-explore-") as temporary:
        folder = Path(temporary)
        large, small = generated(folder / "large", arguments.rows), generated(folder / "small",
                                                                              BASELINE_ROWS)
        (folder / "chromium").mkdir()
        with (start_server(small) as small_root, start_server(large) as large_root,
              start_server(arguments.db) as miles_root,
              session(binary, driver, folder / "chromium") as browser):
            version = browser.capabilities["browserVersion"]
            paints(browser, f"{small_root}/explore/{SYNTHETIC}")
            baseline_paint, _ = paints(browser, f"{small_root}/explore/{SYNTHETIC}")
            baseline_pan = frames(browser, PAN_KEYS, arguments.seconds, arguments.repeat)
            baseline_zoom = frames(browser, ZOOM_KEYS, arguments.seconds, arguments.repeat)
            cold, cold_seen = paints(browser, f"{large_root}/explore/{SYNTHETIC}")
            warm, warm_seen = paints(browser, f"{large_root}/explore/{SYNTHETIC}")
            pan = frames(browser, PAN_KEYS, arguments.seconds, arguments.repeat)
            zoom = frames(browser, ZOOM_KEYS, arguments.seconds, arguments.repeat)

            open_page(browser, f"{miles_root}/explore/miles.spectra", timeout=120)
            point = point_pixel(browser)
            click_for_neighbours(browser, point)  # the neighbour index loads outside the timings
            did = browser.find_element(By.CSS_SELECTOR, "#panel .did").text
            clicks = [click_for_neighbours(browser, point) for _ in range(arguments.repeat)]
            similar = []
            for _ in range(arguments.repeat):
                began = time.perf_counter()
                requests.get(f"{miles_root}/datalink/similar", timeout=60, params={
                    "ID": did, "K": 10, "RESPONSEFORMAT": "csv"}).raise_for_status()
                similar.append(1000 * (time.perf_counter() - began))
    in_page = statistics.median(page for page, _ in clicks)
    seen = statistics.median(seen for _, seen in clicks)
    asked = statistics.median(similar)
    print(f"/explore in headless Chromium {version} (SwiftShader WebGL), {os.cpu_count()} cores; "
          f"frame rates and clicks the median of {arguments.repeat} ({arguments.seconds:g} s runs)")
    large_points, small_points = f"{arguments.rows:,} points", f"{BASELINE_ROWS:,} points"
    show(f"first paint, {small_points} (baseline)", f"{baseline_paint:.0f} ms")
    show(f"first paint, {large_points}, stream written", f"{cold:.0f} ms",
         f"{cold / baseline_paint:.1f}x the baseline; target < {PAINT_TARGET_MS} ms; "
         f"{cold_seen:.2f} s seen by selenium")
    show(f"first paint, {large_points}, stream kept", f"{warm:.0f} ms",
         f"{warm / baseline_paint:.1f}x the baseline; target < {PAINT_TARGET_MS} ms; "
         f"{warm_seen:.2f} s seen by selenium")
    for motion, baseline, rate in (("pan", baseline_pan, pan), ("zoom", baseline_zoom, zoom)):
        show(f"{motion}, {small_points} (baseline)", f"{baseline:.1f} frames/s")
        show(f"{motion}, {large_points}", f"{rate:.1f} frames/s",
             f"{rate / baseline:.2f}x the baseline; target >= {FRAMES_TARGET}")
    show("/datalink/similar of the point, from Python (baseline)", f"{asked:.0f} ms")
    show("click to neighbours, in the page", f"{in_page:.0f} ms",
         f"{in_page / asked:.1f}x the baseline; target < {NEIGHBOURS_TARGET_MS} ms")
    show("click to neighbours, seen by selenium", f"{seen:.0f} ms")


def show(label: str, figure: str, note: str = "") -> None:
    """One figure of the printout, in a column, with what to read it against."""
    print(f"  {label:<56}{figure:>14}" + (f"  ({note})" if note else ""))

if __name__ == "__main__":
    main()
