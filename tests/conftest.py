"""Shared fixtures: a real archive built from the committed MILES spectra, and a real server.

The archive is built once per test session by the same pipeline `vo-ml demo` runs (ingest, train,
embed), with fewer training epochs; the server is `vo-ml serve` in its own process on a free
loopback port, stopped by its process id.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pyvo
import requests

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DATA = Path(__file__).parent / "data"
MILES = DATA / "miles"
HARPS_CUT = DATA / "harps" / "HARPS.2012-03-24T08:37:45.581_s1d_A_cut.fits"
TABLE = "miles.spectra"
#: The installed console script, run as users run it (``python -m`` from the checkout would
#: import the source tree instead of the installed package).
VO_ML = str(Path(sys.executable).with_name("vo-ml"))
#: The similarity reference of the tests: tau Ceti, a star of the MILES fixtures.
TAU_CETI = "ivo://vo-ml.example/miles?m0067"
#: A query DuckDB needs minutes for: a five-fold self-join of the table.
SLOW = (f"SELECT COUNT(*) FROM {TABLE} AS a, {TABLE} AS b, {TABLE} AS c, {TABLE} AS d, {TABLE} AS e "
        "WHERE a.snr + b.snr + c.snr + d.snr + e.snr > 0")


def quick_model_config() -> dict:
    """The packaged dense2d config with a short training run, enough for 91 stars."""
    from vo_ml.resources import config_file, load_yaml

    config = load_yaml(config_file("dense2d"))
    config["training"].update(epochs=150, patience=40)
    return config


@pytest.fixture(scope="session")
def miles_sources(tmp_path_factory) -> Path:
    """The committed MILES fixtures plus one file that is not FITS, as an operator might have."""
    folder = tmp_path_factory.mktemp("sources")
    for item in MILES.iterdir():
        shutil.copy(item, folder / item.name)
    (folder / "MILES_res2.50_star_m9999V.fits").write_text("this is not a FITS file\n")
    return folder


@pytest.fixture(scope="session")
def archive(tmp_path_factory, miles_sources) -> dict:
    """A DuckDB archive of the MILES fixtures with ML columns from a freshly trained model."""
    from vo_ml.pipeline import ArchiveConfig, embed, ingest, train_model
    from vo_ml.resources import config_file, load_yaml
    from vo_ml.spectra.miles import MilesDescriber, miles_files

    workdir = tmp_path_factory.mktemp("archive")
    db = workdir / "miles.duckdb"
    config = ArchiveConfig.from_dict(load_yaml(config_file("miles")))
    files = miles_files(miles_sources)
    summary = ingest(files, db, config, MilesDescriber(miles_sources))
    model_dir = train_model(db, TABLE, quick_model_config(), workdir / "models")
    embedded = embed(db, TABLE, model_dir)
    return {"db": db, "model_dir": model_dir, "summary": summary, "files": files,
            "config": config, "embedded": embedded, "workdir": workdir}


@pytest.fixture(scope="session")
def stilts() -> str:
    """The ``stilts`` command (taplint, votlint), installed from Debian's packages if missing."""
    found = shutil.which("stilts")
    if found is None:
        for command in (["apt-get", "install", "-y", "stilts"], ["apt-get", "update"],
                        ["apt-get", "install", "-y", "stilts"]):
            subprocess.run(command, capture_output=True, timeout=1800, check=False)
            found = shutil.which("stilts")
            if found:
                break
    if found is None:
        pytest.fail("stilts is missing and 'apt-get install -y stilts' did not install it; "
                    "install Debian's stilts package and run the tests again")
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serving(db: Path, settings: dict[str, str] | None = None, port: int | None = None):
    """`vo-ml serve` on ``db`` in its own process on a loopback port; yields the root URL.

    ``settings`` go to the service as ``VO_ML_*`` environment variables. Stopped by its process
    id when the block ends."""
    with server_process(db, settings, port) as (root, _):
        yield root


@contextlib.contextmanager
def server_process(db: Path, settings: dict[str, str] | None = None, port: int | None = None):
    """Like :func:`serving`, yielding (root URL, the server's Popen) for tests that kill it."""
    port = port or free_port()
    environment = os.environ | {f"VO_ML_{k}": v for k, v in (settings or {}).items()}
    server = subprocess.Popen(
        [VO_ML, "serve", "--db", str(db), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=Path(db).parent,
        env=environment)
    root = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(f"{root}/tap", server)
        yield root, server
    finally:
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()


def copy_archive(archive: dict, folder: Path, *, index: bool = False) -> Path:
    """A copy of the session's archive in ``folder`` (with its neighbour index if ``index``),
    for a server or an edit of its own: a served DuckDB file is locked against the writers other
    tests run, and a server keeps its jobs beside the file it serves."""
    db = folder / "miles.duckdb"
    shutil.copy(archive["db"], db)
    if index:
        shutil.copytree(f"{archive['db']}.neighbours", f"{db}.neighbours")
    return db


@pytest.fixture(scope="session")
def tap_url(archive, tmp_path_factory) -> str:
    """The TAP root URL of `vo-ml serve` on a copy of the session's archive and its index."""
    with serving(copy_archive(archive, tmp_path_factory.mktemp("served"), index=True)) as root:
        yield f"{root}/tap"


@pytest.fixture(scope="session")
def service(tap_url) -> pyvo.dal.TAPService:
    """pyvo's client of the session's server, as users query it."""
    return pyvo.dal.TAPService(tap_url)


@pytest.fixture(scope="session")
def app(archive, tmp_path_factory):
    """The service as a Flask app in this process, on a copy of the session's archive and its
    index: route-level tests go through its test client, with no server to start."""
    from vo_ml.service import create_app

    return create_app({"ARCHIVE_DB": str(copy_archive(
        archive, tmp_path_factory.mktemp("app"), index=True))})


@pytest.fixture(scope="session")
def client(app):
    """Flask's test client of :func:`app`."""
    return app.test_client()


def votlint(stilts: str, document: bytes, tmp_path: Path) -> str:
    """What ``stilts votlint`` reports on ``document`` (empty when the VOTable is valid)."""
    path = tmp_path / "document.vot"
    path.write_bytes(document)
    run = subprocess.run([stilts, "votlint", f"votable={path}"], capture_output=True, text=True,
                         timeout=300)
    return run.stdout + run.stderr


def _wait_until_up(url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"vo-ml serve exited early:\n{server.stdout.read()}")
        try:
            if requests.get(f"{url}/availability", timeout=2).ok:
                return
        except requests.ConnectionError:
            time.sleep(0.2)
    raise RuntimeError("vo-ml serve did not answer within 60 s")
