"""A stand-in platform node for HAProxy's health checks: a real HTTP server on loopback, in a thread.

`GET /health/ready` answers 200 (503 once `ready` is False), `GET /version` answers
`{"version": ...}`, and every other request (GET or POST) answers `status` (200, or 500 on demand;
0 closes the connection without an answer), so a test can make a node that HAProxy sees UP fail its
traffic, or fail its health check.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    node: Node

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # HAProxy resets a health check's connection once it has the status line


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: HAProxy checks every 200 ms

    def _answer(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        if status == 0:
            self.close_connection = True  # hang up without a response: HAProxy's eresp
            return
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        node = self.server.node
        if self.path == "/health/ready":
            self._answer(200 if node.ready else 503, b"ready" if node.ready else b"not ready")
        elif self.path == "/version":
            self._answer(200, json.dumps({"version": node.version}).encode(), "application/json")
        else:
            node.requests += 1
            self._answer(node.status, node.color.encode())

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.node.requests += 1
        self._answer(self.server.node.status, self.server.node.color.encode())


class Node:
    """One node: its address, and the knobs a test turns (ready, status, version)."""

    def __init__(self, color: str, version: str = "1.0.0") -> None:
        self.color = color
        self.version = version
        self.ready = True
        self.status = 200
        self.requests = 0  # requests served, health checks and /version left out
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.node = self
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    def start(self) -> Node:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening (a test may stop a node early; the fixture's second stop does nothing)."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()


@contextmanager
def running_nodes(**versions: list[str]) -> Iterator[dict[str, list[Node]]]:
    """Nodes per color, e.g. running_nodes(blue=["1.0.0", "1.0.0"], green=["1.1.0"]); all stopped after."""
    nodes: dict[str, list[Node]] = {color: [] for color in versions}
    try:
        for color, vs in versions.items():
            for version in vs:
                nodes[color].append(Node(color, version).start())
        yield nodes
    finally:
        for group in nodes.values():
            for node in group:
                node.stop()
