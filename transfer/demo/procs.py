"""Start, stop and kill ``handover serve`` processes (the demo and the end-to-end tests)."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from transfer.errors import TransportError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServeProcess:
    """One ``handover serve`` process for the node in ``data_dir``."""

    name: str
    data_dir: Path
    base_url: str
    log_file: Path
    ca_file: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    #: More ``handover serve`` arguments (e.g. ``("--port", "8444")``).
    extra_args: tuple[str, ...] = ()

    def start(self) -> None:
        if self.running:
            return
        env = {**os.environ, **self.env}
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "transfer.cli", "serve", "--data-dir", str(self.data_dir)]
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                [*argv, *self.extra_args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )

    def sibling(self, name: str, port: int | None = None) -> ServeProcess:
        """Another ``serve`` process of the same node (same data directory, same database),
        listening on its own loopback port: several processes sharing one PostgreSQL database.
        """
        port = port or free_port()
        return ServeProcess(
            name,
            self.data_dir,
            f"https://127.0.0.1:{port}",
            self.log_file.with_name(f"{name}.log"),
            ca_file=self.ca_file,
            env=dict(self.env),
            extra_args=("--port", str(port)),
        )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the node answers on its public URL (or raise with its log's tail)."""
        ctx = ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file else None
        deadline = time.monotonic() + timeout
        url = self.base_url.rstrip("/") + "/api/v1/openapi.json"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise TransportError(f"the {self.name} node stopped at start-up: {self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:  # noqa: S310
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        raise TransportError(f"the {self.name} node did not answer within {timeout:.0f} s")

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(text.strip().splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        """Ask the node to stop (SIGTERM) and wait; kill it if it does not."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def kill(self) -> None:
        """Kill the node at once (SIGKILL), as a crash would."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None
