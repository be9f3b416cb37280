"""What the service benchmarks share: `vo-ml serve` in its own process, and percentiles."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import requests

VO_ML = str(Path(sys.executable).with_name("vo-ml"))
#: How long `vo-ml serve` may take to answer, and then to exit once asked to.
START_SECONDS = 120
STOP_SECONDS = 30


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


@contextlib.contextmanager
def start_server(db: Path, settings: dict[str, str] | None = None) -> Iterator[str]:
    """`vo-ml serve` on ``db`` on a free loopback port, once it answers: yields its root URL.
    ``settings`` go to the service as environment variables."""
    with server_process(db, settings) as (root, _):
        yield root


@contextlib.contextmanager
def server_process(db: Path, settings: dict[str, str] | None = None
                   ) -> Iterator[tuple[str, subprocess.Popen]]:
    """Like :func:`start_server`, yielding (root URL, the server's process) for a benchmark that
    watches the server itself. The server is stopped by its process id however the block ends,
    also when it never answered, so no benchmark leaves one behind."""
    port = _free_port()
    server = subprocess.Popen([VO_ML, "serve", "--db", str(db), "--host", "127.0.0.1",
                               "--port", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=os.environ | (settings or {}))
    root = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(root, server)
        yield root, server
    finally:
        _stop(server)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_up(root: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError("vo-ml serve exited early")
        try:
            if requests.get(f"{root}/tap/availability", timeout=2).ok:
                return
        except requests.ConnectionError:
            time.sleep(0.2)
    raise RuntimeError(f"vo-ml serve did not start within {START_SECONDS} s")


def _stop(server: subprocess.Popen) -> None:
    """Terminate, and kill what does not exit in time: a stuck server must not outlive the run."""
    server.terminate()
    try:
        server.wait(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
