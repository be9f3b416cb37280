"""What the service benchmarks share: `vo-ml serve` in its own process, and percentiles."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

VO_ML = str(Path(sys.executable).with_name("vo-ml"))


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def start_server(db: Path, settings: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """`vo-ml serve` on ``db`` on a free loopback port, once it answers: (process, root URL).
    ``settings`` go to the service as environment variables; stop it by its process id."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([VO_ML, "serve", "--db", str(db), "--host", "127.0.0.1",
                               "--port", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=os.environ | (settings or {}))
    root = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError("vo-ml serve exited early")
        try:
            if requests.get(f"{root}/tap/availability", timeout=2).ok:
                return server, root
        except requests.ConnectionError:
            time.sleep(0.2)
    server.terminate()
    raise RuntimeError("vo-ml serve did not start within 120 s")
