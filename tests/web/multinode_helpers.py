"""Real `zaima serve` processes for the multi-node test: each node is its own OS process (started with
`python -m zaima.cli serve`), configured only through ZAIMA_* environment variables, with its output
going to a log file so that a failing test can show what the nodes said."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


def node_environment(settings: dict[str, str]) -> dict[str, str]:
    """The parent's environment without any ZAIMA_* variable (a developer's ZAIMA_WORKERS or
    ZAIMA_DATABASE_URL must not leak into the nodes), plus `settings`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("ZAIMA_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(settings)
    return env


def _die_with_parent() -> None:
    """Linux: the node gets SIGTERM if the test process dies without its teardown (kill -9 of pytest),
    instead of living on with a port and database connections."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Node:
    """One `zaima serve` process on 127.0.0.1:`port`."""

    def __init__(self, name: str, port: int, settings: dict[str, str], workdir: Path):
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.env = node_environment({**settings, "ZAIMA_HOST": "127.0.0.1", "ZAIMA_PORT": str(port)})
        # Its own working directory: Settings reads a `.env` from the current directory.
        self.workdir = workdir
        self.log_path = workdir / f"node-{name}.log"
        self.proc: subprocess.Popen | None = None
        self._log = None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "zaima.cli", "serve"], env=self.env,
                                     cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def wait_ready(self, timeout: float = 20.0) -> None:
        """Until GET /healthz answers 200 (the lifespan, hub included, has started)."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=self.url, timeout=2.0) as http:
            while True:
                if not self.running:
                    raise RuntimeError(f"node {self.name} exited with {self.proc.returncode} before it was "
                                       f"ready:\n{self.logs()}")
                try:
                    if (await http.get("/healthz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"node {self.name} not ready after {timeout} s:\n{self.logs()}")
                await asyncio.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no goodbye to Redis or to the sockets (a crash)."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate politely, then hard; idempotent, safe whatever state the process is in."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def report(self) -> str:
        rc = None if self.proc is None else self.proc.returncode
        return f"----- node {self.name} ({self.url}, exit code {rc}) -----\n{self.logs()}"
