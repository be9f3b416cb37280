"""The suite's guard against hanging: a command that stops making progress fails its test fast,
with the stacks of what it was doing (tests/conftest.py)."""

from __future__ import annotations

import sys
import textwrap
import time

import psutil
import pytest
import requests
from conftest import MILES, Child, run, serving

from vo_ml.pipeline import ArchiveConfig, ingest
from vo_ml.resources import config_file, load_yaml

#: A Python program whose only thread sleeps in a function of a telling name.
SLEEPER = textwrap.dedent("""
    import time

    def sleeping_forever():
        time.sleep(3600)

    sleeping_forever()
""")
#: One that starts a worker process sleeping forever, then waits for it.
PARENT_OF_A_SLEEPER = textwrap.dedent("""
    import multiprocessing, time

    def worker_sleeping_forever():
        time.sleep(3600)

    if __name__ == "__main__":
        worker = multiprocessing.get_context("spawn").Process(target=worker_sleeping_forever)
        worker.start()
        print("worker started", flush=True)
        worker.join()
""")


def test_a_command_that_hangs_fails_within_its_timeout_showing_its_stack():
    began = time.monotonic()
    with pytest.raises(pytest.fail.Exception) as failure:
        run([sys.executable, "-c", SLEEPER], timeout=2)
    assert time.monotonic() - began < 15
    message = str(failure.value)
    assert f"{sys.executable} -c" in message and "did not finish in 2 s" in message
    assert " in sleeping_forever" in message and "most recent call first" in message


def test_a_background_command_that_makes_no_progress_fails_showing_its_workers_stacks(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(PARENT_OF_A_SLEEPER)
    with Child([sys.executable, script], tmp_path / "parent.log") as parent:
        parent.wait_until(lambda: "worker started" in parent.output(), "starting its worker", 60)
        workers = psutil.Process(parent.pid).children(recursive=True)
        with pytest.raises(pytest.fail.Exception) as failure:
            parent.wait_until(lambda: False, "a result that never comes", timeout=1)
    message = str(failure.value)
    assert "did not reach a result that never comes in 1 s" in message
    assert " in join\n" in message and " in worker_sleeping_forever\n" in message
    assert not psutil.wait_procs(workers, timeout=5)[1], "a worker of the hung command is left"


def test_a_server_that_logs_more_than_a_pipe_holds_keeps_answering(tmp_path):
    """The served app's output goes to a file: into a pipe nobody read, its access log (some 160
    bytes a request) filled the pipe's 64 KiB after about 400 requests, and the server stopped."""
    db = tmp_path / "two.duckdb"
    ingest(sorted(MILES.glob("*.fits"))[:2], db, ArchiveConfig.from_dict(load_yaml(config_file("miles"))),
           workers=1)
    with serving(db) as root, requests.Session() as session:
        for _ in range(1000):
            assert session.get(f"{root}/tap/availability", timeout=10).ok


def test_a_failed_check_shows_the_commands_error():
    with pytest.raises(pytest.fail.Exception, match="exited with 3:\nbroken"):
        run([sys.executable, "-c", "import sys; sys.stderr.write('broken\\n'); sys.exit(3)"], check=True)
