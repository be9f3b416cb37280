"""Shared fixtures: a real archive built from the committed MILES spectra, and a real server.

The archive is built once per test session by the same pipeline `vo-ml demo` runs (ingest, train,
embed), with fewer training epochs; the server is `vo-ml serve` in its own process on a free
loopback port, stopped by its process id.

Every command a test starts goes through :func:`run` or :class:`Child`, so none can hang the
suite: a command still running after its timeout is sent SIGABRT, which makes each Python process
in it print its threads' stacks (``PYTHONFAULTHANDLER``), and the test fails with the command, the
time it ran and the end of what it wrote.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil
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
#: A query DuckDB needs minutes for: a five-fold self-join of the table, with a condition no
#: column statistics can decide (a sum of positive S/N values would be known positive, and the
#: join counted without being run).
SLOW = (f"SELECT COUNT(*) FROM {TABLE} AS a, {TABLE} AS b, {TABLE} AS c, {TABLE} AS d, {TABLE} AS e "
        "WHERE SIN(a.snr + b.snr + c.snr + d.snr + e.snr) > 2")
#: Seconds a command a test starts may run before it counts as hung. The per-test timeout of
#: pytest-timeout (setup.cfg) is the backstop and stays longer, so this report comes first.
COMMAND_TIMEOUT = 300
#: Seconds a hung process tree has to print its stacks after SIGABRT before it is killed.
ABORT_GRACE = 10
#: How much of a hung command's output a failure shows: enough for the stacks of every thread.
REPORT_CHARACTERS = 12_000


def run(command: Sequence[object], *, timeout: float = COMMAND_TIMEOUT, check: bool = False,
        env: dict[str, str] | None = None, **options) -> subprocess.CompletedProcess:
    """``subprocess.run(command, capture_output=True, text=True)`` that cannot hang the suite.

    Past ``timeout`` seconds the command fails the test with its stacks (see :func:`_fail_hung`);
    with ``check`` a non-zero exit fails it with the command's stderr."""
    arguments = [str(part) for part in command]
    began = time.monotonic()
    with subprocess.Popen(arguments, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=child_environment(env),
                          **options) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _abort_tree(process)
            stdout, stderr = process.communicate()
            _fail_hung(arguments, f"did not finish in {timeout:.0f} s", began, stderr)
    if check and process.returncode != 0:
        pytest.fail(f"`{shlex.join(arguments)}` exited with {process.returncode}:\n"
                    f"{stderr[-REPORT_CHARACTERS:]}", pytrace=False)
    return subprocess.CompletedProcess(arguments, process.returncode, stdout, stderr)


def vo_ml(*arguments: object, **options) -> subprocess.CompletedProcess:
    """The installed ``vo-ml`` command through :func:`run`, by default in the test data folder, so
    that nothing a command writes where it runs lands in the checkout."""
    return run([VO_ML, *arguments], **{"cwd": DATA, **options})


class Child(subprocess.Popen):
    """A command running beside the test, its stdout and stderr going to the file ``log``: a pipe
    nobody reads fills up and then blocks the child. Used as a context manager, it is stopped by
    its process id when the block ends; a child that will not stop fails the test with its stacks.
    """

    def __init__(self, command: Sequence[object], log: Path, *, env: dict[str, str] | None = None,
                 **options) -> None:
        self.command = [str(part) for part in command]
        self.log = Path(log)
        self.began = time.monotonic()
        with self.log.open("ab") as sink:
            super().__init__(self.command, stdin=subprocess.DEVNULL, stdout=sink,
                             stderr=subprocess.STDOUT, env=child_environment(env), **options)

    def __exit__(self, *exception) -> None:
        self.stop()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_until(self, condition: Callable[[], object], what: str,
                   timeout: float = COMMAND_TIMEOUT) -> None:
        """Poll ``condition`` until it holds; fail if the child exits first or if ``what`` (the
        awaited progress, in words) does not happen within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self.poll() is not None:
                pytest.fail(f"`{shlex.join(self.command)}` exited with {self.returncode} before "
                            f"{what}:\n{self.output()[-REPORT_CHARACTERS:]}", pytrace=False)
            if time.monotonic() > deadline:
                self.fail_hung(f"did not reach {what} in {timeout:.0f} s")
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM, then the stacks and a failure if the child is still there ``ABORT_GRACE`` s later."""
        if self.poll() is None:
            self.terminate()
            try:
                self.wait(timeout=ABORT_GRACE)
            except subprocess.TimeoutExpired:
                self.fail_hung("did not stop on SIGTERM")

    def fail_hung(self, what: str) -> None:
        _abort_tree(self)
        _fail_hung(self.command, what, self.began, self.output())


def child_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment plus ``extra``, with Python's fault handler on in the child and its own."""
    return os.environ | (extra or {}) | {"PYTHONFAULTHANDLER": "1"}


def _abort_tree(process: subprocess.Popen) -> None:
    """SIGABRT to a hung process and every process under it (its workers may be the ones stuck):
    each Python among them writes its threads' stacks to its stderr and exits; no core files.

    The whole tree is stopped first, so the stacks are those of one moment, and then aborted one
    process at a time, workers before their parent, so that their reports do not interleave.
    Whatever still runs ``ABORT_GRACE`` seconds after its SIGABRT is killed."""
    try:
        root = psutil.Process(process.pid)
        tree = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        return
    for member in tree:
        with contextlib.suppress(psutil.Error):
            member.suspend()
    for member in tree:
        with contextlib.suppress(psutil.Error):
            member.rlimit(psutil.RLIMIT_CORE, (0, 0))
            member.send_signal(signal.SIGABRT)
            member.resume()
        deadline = time.monotonic() + ABORT_GRACE
        while not _ended(member) and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(psutil.Error):
            member.kill()
    process.wait()


def _ended(process: psutil.Process) -> bool:
    """Gone, or dead and waiting for its (stopped) parent to collect it."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _fail_hung(command: Sequence[str], what: str, began: float, output: str) -> None:
    pytest.fail(f"`{shlex.join(command)}` {what} (stopped after {time.monotonic() - began:.0f} s); "
                f"the end of its output, with the stacks of its Python threads:\n"
                f"{output[-REPORT_CHARACTERS:]}", pytrace=False)


def quick_model_config() -> dict:
    """The config the demo serves (dense16) with a short training run, enough for 91 stars."""
    from vo_ml.pipeline import DEMO_MODEL
    from vo_ml.resources import config_file, load_yaml

    config = load_yaml(config_file(DEMO_MODEL))
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
    """A DuckDB archive of the MILES fixtures with ML columns from a freshly trained model, and
    its tags."""
    from vo_ml.pipeline import ArchiveConfig, embed, ingest, tag, train_model
    from vo_ml.resources import config_file, load_yaml
    from vo_ml.spectra.miles import MilesDescriber, miles_files

    workdir = tmp_path_factory.mktemp("archive")
    db = workdir / "miles.duckdb"
    config = ArchiveConfig.from_dict(load_yaml(config_file("miles")))
    files = miles_files(miles_sources)
    summary = ingest(files, db, config, MilesDescriber(miles_sources))
    model_dir = train_model(db, TABLE, quick_model_config(), workdir / "models")
    embedded = embed(db, TABLE, model_dir)
    tagged = tag(db, TABLE)
    return {"db": db, "model_dir": model_dir, "summary": summary, "files": files,
            "config": config, "embedded": embedded, "tagged": tagged, "workdir": workdir}


@pytest.fixture(scope="session")
def stilts() -> str:
    """The ``stilts`` command (taplint, votlint), installed from Debian's packages if missing."""
    found = shutil.which("stilts")
    if found is None:
        for command in (["apt-get", "install", "-y", "stilts"], ["apt-get", "update"],
                        ["apt-get", "install", "-y", "stilts"]):
            run(command, timeout=COMMAND_TIMEOUT)
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
    """Like :func:`serving`, yielding (root URL, the server's :class:`Child`) for tests that kill
    it. The server's log is ``serve-PORT.log`` beside ``db``."""
    port = port or free_port()
    root = f"http://127.0.0.1:{port}"
    with Child([VO_ML, "serve", "--db", db, "--host", "127.0.0.1", "--port", port],
               Path(db).parent / f"serve-{port}.log", cwd=Path(db).parent,
               env={f"VO_ML_{k}": v for k, v in (settings or {}).items()}) as server:
        server.wait_until(lambda: _answers(f"{root}/tap/availability"), f"answering on {root}", 60)
        yield root, server


def copy_archive(archive: dict, folder: Path, *, index: bool = False) -> Path:
    """A copy of the session's archive in ``folder`` with its tagging (and its neighbour index
    if ``index``), for a server or an edit of its own: a served DuckDB file is locked against
    the writers other tests run, and a server keeps its jobs beside the file it serves."""
    db = folder / "miles.duckdb"
    shutil.copy(archive["db"], db)
    shutil.copytree(f"{archive['db']}.tags", f"{db}.tags")
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
    linted = run([stilts, "votlint", f"votable={path}"])
    return linted.stdout + linted.stderr


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).ok
    except requests.RequestException:
        return False
