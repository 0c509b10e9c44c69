"""The app as a local server process, for what drives the real page (the end-to-end tests, the screenshot
script): ``streamlit run app.py`` on a free loopback port serving a given bundle, waited for until it answers its
health check, and stopped cleanly. It starts Streamlit as another process; it does not import it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from skin_model.config import PROJECT_ROOT


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class AppServer:
    """A running ``streamlit run app.py``: its process and its URL."""

    process: subprocess.Popen
    url: str

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 20) -> None:
        """Terminate the server, and kill it if it has not exited within ``timeout`` seconds."""
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_app(weights: Path, timeout: float, log: IO | int = subprocess.PIPE) -> AppServer:
    """Start the app serving the bundle ``weights`` on a free loopback port and wait until it is healthy;
    its output goes to ``log`` (a pipe by default, read into the error if it does not start)."""
    port = free_port()
    env = {**os.environ, "SKIN_WEIGHTS_DIR": str(weights), "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    server = AppServer(process, f"http://127.0.0.1:{port}")
    try:
        wait_healthy(server, timeout)
    except Exception:
        server.stop()
        raise
    return server


def wait_healthy(server: AppServer, timeout: float) -> None:
    """Return once the server answers ``/_stcore/health``; raise if it exits or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            output = server.process.stdout.read() if server.process.stdout else ""
            raise RuntimeError(f"streamlit exited with status {server.process.returncode}: {output}")
        try:
            with urllib.request.urlopen(f"{server.url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"streamlit did not answer on {server.url} within {timeout} s")
