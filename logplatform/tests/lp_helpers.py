"""Helpers for the logplatform tests: run the real service as a subprocess, talk HTTP to it.

(Named lp_helpers, not conftest or helpers, so it cannot clash with the repository's other test
directories on sys.path.)
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

START_TIMEOUT = 15.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def to_toml(config: dict[str, Any]) -> str:
    """Enough TOML for our flat config plus the [fault] table (json strings are valid TOML)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        raise TypeError(v)

    lines = [f"{k} = {value(v)}" for k, v in config.items() if not isinstance(v, dict)]
    for name, table in config.items():
        if isinstance(table, dict):
            lines.append(f"\n[{name}]")
            lines += [f"{k} = {value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def entry(n: int = 0, **fields: Any) -> dict[str, Any]:
    """A valid entry with a unique id."""
    base = {
        "ts": "2026-11-24T10:00:00Z",
        "level": "info",
        "service": "api",
        "message": f"message {n}",
        "id": f"t-{uuid.uuid4().hex}",
    }
    base.update(fields)
    return base


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Service:
    proc: subprocess.Popen[bytes]
    port: int
    sink_dir: Path
    config_path: Path
    log_path: Path
    config: dict[str, Any] = field(default_factory=dict)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | Iterable[bytes] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> Response:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            chunked = body is not None and not isinstance(body, bytes)
            conn.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
            resp = conn.getresponse()
            return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()

    def get(self, path: str) -> Response:
        return self.request("GET", path)

    def post_json(self, entries: Any, content_type: str | None = "application/json") -> Response:
        headers = {"Content-Type": content_type} if content_type else {}
        return self.request("POST", "/v1/logs", json.dumps(entries).encode(), headers)

    def sink_lines(self) -> list[dict[str, Any]]:
        """Every line of every sink file, parsed (fails the test on a line that is not JSON)."""
        lines: list[dict[str, Any]] = []
        for path in sorted(self.sink_dir.glob("*.ndjson")):
            data = path.read_bytes()
            assert not data or data.endswith(b"\n"), f"{path} does not end with a newline"
            lines += [json.loads(line) for line in data.splitlines()]
        return lines

    def sink_ids(self) -> list[str]:
        return [line["id"] for line in self.sink_lines() if "id" in line]

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"service exited {self.proc.returncode} before ready:\n{self.log()}")
            try:
                if self.get("/health/ready").status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        pytest.fail(f"service not ready after {timeout}s:\n{self.log()}")

    def wait_listening(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"service exited {self.proc.returncode}:\n{self.log()}")
            try:
                self.get("/health/live")
                return
            except OSError:
                time.sleep(0.05)
        pytest.fail(f"service not listening after {timeout}s:\n{self.log()}")

    def terminate(self) -> None:
        os.kill(self.proc.pid, signal.SIGTERM)

    def wait_exit(self, timeout: float = 20.0) -> int:
        return self.proc.wait(timeout)


def base_config(port: int, sink_dir: Path) -> dict[str, Any]:
    return {
        "node": "blue-1",
        "color": "blue",
        "listen_host": "127.0.0.1",
        "listen_port": port,
        "sink_dir": str(sink_dir),
        # Tests stop many services; no need to wait for a load balancer that is not there.
        "drain_grace_seconds": 0.0,
        "shutdown_timeout_seconds": 5.0,
    }


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)


def launcher(directory: Path) -> tuple[Callable[..., Service], list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(*, wait: str = "ready", fault: dict[str, Any] | None = None, **overrides: Any) -> Service:
        """Start a node; ``wait`` is "ready", "listening" or "none"."""
        n = len(started)
        port = free_port()
        config = base_config(port, directory / f"sink-{n}")
        config.update(overrides)
        if fault:
            config["fault"] = fault
        config_path = directory / f"logplatform-{n}.toml"
        config_path.write_text(to_toml(config))
        log_path = directory / f"service-{n}.log"
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "logplatform", "--config", str(config_path)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        started.append(proc)
        service = Service(proc, port, Path(config["sink_dir"]), config_path, log_path, config)
        if wait == "ready":
            service.wait_ready()
        elif wait == "listening":
            service.wait_listening()
        return service

    return start, started
