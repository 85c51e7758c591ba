"""Real logplatform nodes for the validation modules' tests: the venv's service on free loopback ports.

`fleet(directory)` yields a `start(name, color, fault=..., **config)` factory; nodes start in the
background (start several, then `wait_ready()` each) and every process is stopped by PID when the
block ends (SIGTERM, then SIGKILL), whatever the test did. Each node's config file is rendered the
way roles/logplatform renders it, so a test can edit it "by hand" after the start.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

START_TIMEOUT = 15.0
VENV_LOGPLATFORM = Path(sys.executable).parent / "logplatform"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def to_toml(config: dict[str, Any]) -> str:
    """Our flat config plus the [fault] table (JSON scalars and lists are valid TOML)."""
    lines = [f"{key} = {json.dumps(value)}" for key, value in config.items() if not isinstance(value, dict)]
    for name, table in config.items():
        if isinstance(table, dict):
            lines += ["", f"[{name}]"] + [f"{key} = {json.dumps(value)}" for key, value in table.items()]
    return "\n".join(lines) + "\n"


class LpNode:
    def __init__(self, directory: Path, name: str, color: str, config: dict[str, Any]) -> None:
        self.name, self.color = name, color
        self.port = free_port()
        self.sink_dir = directory / name / "sink"
        self.config_path = directory / name / "logplatform.toml"
        self.log_path = directory / name / "service.log"
        self.config = {
            "node": name,
            "color": color,
            "listen_host": "127.0.0.1",
            "listen_port": self.port,
            "sink_dir": str(self.sink_dir),
            "drain_grace_seconds": 0.0,
            "shutdown_timeout_seconds": 5.0,
            **config,
        }
        self.config_path.parent.mkdir(parents=True)
        self.config_path.write_text(to_toml(self.config))
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "logplatform", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def wait_listening(self) -> LpNode:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"{self.name} exited {self.proc.returncode}:\n{self.log_path.read_text()}")
            try:
                self.get("/health/live")
                return self
            except OSError:
                time.sleep(0.05)
        pytest.fail(f"{self.name} not listening after {START_TIMEOUT}s:\n{self.log_path.read_text()}")

    def wait_ready(self) -> LpNode:
        self.wait_listening()
        deadline = time.monotonic() + START_TIMEOUT
        while self.get("/health/ready")[0] != 200:
            if time.monotonic() > deadline:
                pytest.fail(f"{self.name} not ready after {START_TIMEOUT}s")
            time.sleep(0.05)
        return self

    def edit_config(self, **changes: Any) -> None:
        """Change keys of the config file by hand (the running process keeps what it loaded)."""
        self.config_path.write_text(to_toml({**self.config, **changes}))

    def restore_config(self) -> None:
        self.config_path.write_text(to_toml(self.config))

    def batches(self, result: str = "ok") -> int:
        """logplatform_batches_total{result=...} from /metrics."""
        text = self.get("/metrics")[1].decode()
        match = re.search(rf'^logplatform_batches_total\{{result="{result}"\}} (\S+)$', text, re.M)
        return int(float(match.group(1))) if match else 0

    def sink_ids(self) -> list[str]:
        ids = []
        for path in sorted(self.sink_dir.glob("*.ndjson")):
            ids += [json.loads(line).get("id") for line in path.read_text().splitlines()]
        return ids

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


@contextmanager
def fleet(directory: Path) -> Iterator[Callable[..., LpNode]]:
    """A factory of started nodes (not waited for); every node is stopped when the block ends."""
    nodes: list[LpNode] = []

    def start(name: str, color: str = "green", fault: dict[str, Any] | None = None, **config: Any) -> LpNode:
        node = LpNode(directory, name, color, {**config, **({"fault": fault} if fault else {})})
        nodes.append(node)
        return node

    try:
        yield start
    finally:
        for node in nodes:
            node.stop()
