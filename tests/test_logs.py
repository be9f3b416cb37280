"""What the commands write to a log that is not a terminal (a file, CI): a few progress lines
with counts instead of redrawn bars, why training stopped, no TensorFlow banners, one access
line per request, and each warning once."""

from __future__ import annotations

import io
import re
import shutil
import sys
import warnings
from pathlib import Path

import dask.array as da
import pytest
import requests
import yaml
from conftest import MILES, VO_ML, Child, quick_model_config, server_process

from vo_ml.progress import DaskProgress, progress, tracked

#: Lines TensorFlow writes on import (twice each, before vo_ml.ml.framework).
TF_BANNERS = ("All log messages before absl::InitializeLog", "oneDNN custom operations")
#: ``host - user [time] "request" status bytes "referer" "agent" seconds``
ACCESS_LINE = re.compile(r'vo_ml\.access: 127\.0\.0\.1 - - \[[^]]+\] "POST /tap/sync HTTP/1\.1" 200 \d+ '
                         r'"-" "[^"]*" \d+\.\d{3}$')


def _logged(command: list[object], log: Path, timeout: float) -> str:
    """What a command that must succeed wrote, read as bytes: text mode would turn a bar's
    carriage returns into lines. It runs as conftest's Child, so a hang fails with its stacks."""
    with Child(command, log) as child:
        child.wait_until(lambda: child.poll() is not None, "its end", timeout)
    written = log.read_bytes().decode()
    assert child.returncode == 0, written
    return written


@pytest.fixture(scope="module")
def ingest_run(tmp_path_factory) -> tuple[Path, str]:
    """The MILES fixtures ingested by ``vo-ml ingest`` (no model: none of these tests needs one),
    and what the command logged."""
    folder = tmp_path_factory.mktemp("logs")
    db = folder / "miles.duckdb"
    return db, _logged([VO_ML, "ingest", "--db", db, "--config", "miles", MILES],
                       folder / "ingest.log", 300)


@pytest.fixture(scope="module")
def ingested(ingest_run) -> Path:
    return ingest_run[0]


def test_ingest_logs_its_progress_as_one_line(ingest_run):
    log = ingest_run[1]
    assert "\r" not in log
    lines = [line.split(": ", 1)[1] for line in log.splitlines() if "vo_ml.progress" in line]
    assert len(lines) == 1
    assert re.fullmatch(r"ingest miles.spectra: done, 91/91 file \(100%\), \d+ s", lines[0])


def test_training_logs_a_few_progress_lines_why_it_stopped_and_no_banner(ingested, tmp_path):
    config = quick_model_config()
    # A learning rate of zero never improves on the untrained model (epoch 0): it stops at epoch 3.
    config["training"].update(epochs=60, patience=3, learning_rate=0.0)
    (tmp_path / "quick.yaml").write_text(yaml.safe_dump(config))
    log = _logged([VO_ML, "train", "--db", ingested, "--config", tmp_path / "quick.yaml",
                   "--models", tmp_path / "models"], tmp_path / "train.log", 600)
    assert "\r" not in log
    assert 1 <= len([line for line in log.splitlines() if "vo_ml.progress" in line]) <= 12
    stopped = re.search(r"training dense16-\w+ stopped early at epoch (\d+) of 60: the validation "
                        r"loss had not improved for 3 epochs; best epoch (\d+), validation loss "
                        r"\d\.\d{3}e-\d\d", log)
    assert stopped, log
    assert int(stopped[1]) - int(stopped[2]) == 3
    assert re.search(rf"train dense16-\w+: done, {stopped[1]}/60 epoch", log)
    for banner in TF_BANNERS:
        assert log.count(banner) <= 1, log


def test_a_served_request_is_one_access_line_and_a_unit_warning_is_said_once(ingested, tmp_path):
    db = tmp_path / "miles.duckdb"
    shutil.copy(ingested, db)
    query = {"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": "SELECT TOP 3 obs_id, logg FROM miles.spectra"}
    with server_process(db) as (root, server):
        for _ in range(2):  # logg's unit, log(cm.s**-2), is one astropy cannot read
            requests.post(f"{root}/tap/sync", data=query, timeout=60).raise_for_status()
        server.stop()
        log = server.output()
    assert len([line for line in log.splitlines() if ACCESS_LINE.search(line)]) == 2, log
    assert log.count("Invalid unit string") <= 1, log


def test_a_unit_written_in_a_query_warns_once_however_often_it_runs(ingested, tmp_path):
    """IN_UNIT's target is read once per unit, not once per query (astropy warns of Angstrom,
    which VOUnit deprecates, at every parse)."""
    from astropy.units import UnitsWarning

    from vo_ml.service import create_app

    shutil.copy(ingested, tmp_path / "miles.duckdb")
    client = create_app({"ARCHIVE_DB": str(tmp_path / "miles.duckdb")}).test_client()
    query = {"REQUEST": "doQuery", "LANG": "ADQL",
             "QUERY": "SELECT TOP 2 IN_UNIT(em_min, 'Angstrom') AS em_min_a FROM miles.spectra"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            assert client.post("/tap/sync", data=query).status_code == 200
    assert len([w for w in caught if issubclass(w.category, UnitsWarning)]) <= 1


def test_progress_in_a_log_is_one_line_for_a_short_step(monkeypatch, caplog):
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a log file, not a terminal
    caplog.set_level("INFO", "vo_ml.progress")
    with progress(1000, "count", "item") as bar:
        for _ in range(1000):
            bar.update(1)
    assert sys.stderr.getvalue() == ""
    assert len(caplog.messages) == 1
    assert re.fullmatch(r"count: done, 1000/1000 item \(100%\), \d+ s", caplog.messages[0])


def test_a_step_that_fails_is_logged_as_stopped_not_done(monkeypatch, caplog):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    caplog.set_level("INFO", "vo_ml.progress")
    with pytest.raises(KeyboardInterrupt), progress(10, "copy", "file") as bar:
        bar.update(3)
        raise KeyboardInterrupt
    assert len(caplog.messages) == 1
    assert re.fullmatch(r"copy: stopped, 3/10 file \(30%\), \d+ s", caplog.messages[0])


def test_dask_tasks_and_iterations_are_counted(monkeypatch, caplog):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    caplog.set_level("INFO", "vo_ml.progress")
    array = da.ones((100, 3), chunks=(10, 3))
    with progress(None, "encode", "task") as bar, DaskProgress(bar):
        assert array.sum().compute(scheduler="threads") == 300
    assert list(tracked(range(5), "walk", "step")) == [0, 1, 2, 3, 4]
    tasks = re.fullmatch(r"encode: done, (\d+)/(\d+) task \(100%\), \d+ s", caplog.messages[0])
    assert tasks and tasks[1] == tasks[2] and int(tasks[1]) >= 10
    assert len(caplog.messages) == 2
    assert re.fullmatch(r"walk: done, 5/5 step \(100%\), \d+ s", caplog.messages[1])
