"""Client for HAProxy's runtime API (the admin stats socket), shared by bluegreen's modules.

One command per connection, in HAProxy's non-interactive mode: send the line, read until HAProxy
closes. Commands are built from checked parts only; a newline or `;` (HAProxy's command separator)
in any part is refused so that a value can never smuggle a second command.
"""

from __future__ import annotations

import csv
import io
import socket

BUFFER_SIZE = 65536


class HAProxyRuntimeError(Exception):
    """The runtime API could not be reached or refused a command; the message says which and why."""


def _check_part(part: str) -> str:
    if not part or any(ch in part for ch in "\n\r;"):
        raise HAProxyRuntimeError(
            f"refusing runtime API argument {part!r}: empty, or contains a newline or ';'"
        )
    return part


class HAProxyRuntime:
    """Commands on one HAProxy runtime API socket."""

    def __init__(self, socket_path: str, timeout: float = 5.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def execute(self, *parts: str) -> str:
        """Run one command (given as its words) and return HAProxy's answer, stripped."""
        command = " ".join(_check_part(str(p)) for p in parts)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(self.socket_path)
                sock.sendall(command.encode() + b"\n")
                chunks = []
                while True:
                    chunk = sock.recv(BUFFER_SIZE)
                    if not chunk:
                        break
                    chunks.append(chunk)
        except OSError as exc:
            raise HAProxyRuntimeError(
                f"HAProxy runtime API at {self.socket_path} failed on {command!r}: {exc}"
            ) from exc
        return b"".join(chunks).decode(errors="replace").strip()

    def show_map(self, map_path: str) -> dict[str, str]:
        """Entries of a map file as HAProxy holds them in memory (key -> value)."""
        answer = self.execute("show", "map", map_path)
        if answer.startswith(("Unknown map", "Missing map")):
            raise HAProxyRuntimeError(f"HAProxy has no map {map_path}: {answer}")
        entries: dict[str, str] = {}
        for line in answer.splitlines():
            # each line: "<entry id> <key> <value>"
            fields = line.split(None, 2)
            if len(fields) == 3:
                entries[fields[1]] = fields[2]
        return entries

    def set_map(self, map_path: str, key: str, value: str) -> None:
        """Set one map entry in memory; HAProxy applies it to the very next request."""
        answer = self.execute("set", "map", map_path, key, value)
        if answer:
            # set map answers nothing on success
            raise HAProxyRuntimeError(f"HAProxy refused 'set map {map_path} {key} {value}': {answer}")

    def show_servers_state(self) -> str:
        """Server states in the format HAProxy's server-state-file loads."""
        return self.execute("show", "servers", "state") + "\n"

    def show_stat(self) -> list[dict[str, str]]:
        """`show stat` as one dict per proxy/server row (pxname, svname, status, scur, hrsp_5xx, ...)."""
        answer = self.execute("show", "stat")
        text = answer.removeprefix("# ")
        return list(csv.DictReader(io.StringIO(text)))

    def _expect(self, answer: str, ok: tuple[str, ...], command: str) -> str:
        if answer not in ok:
            raise HAProxyRuntimeError(f"HAProxy refused {command!r}: {answer or 'no answer'}")
        return answer

    def add_server(self, backend: str, name: str, address: str, options: list[str]) -> None:
        """A dynamic server (HAProxy >= 2.4), created in maintenance: it takes no traffic and runs no
        check until `enable_health` / `set_server_state` say so. `options` are server keywords."""
        words = ["add", "server", f"{backend}/{name}", address, *options]
        self._expect(self.execute(*words), ("New server registered.",), " ".join(words))

    def enable_health(self, backend: str, name: str) -> None:
        """Start a server's health checks (a dynamic server's are off until this)."""
        answer = self.execute("enable", "health", f"{backend}/{name}")
        self._expect(answer, ("",), f"enable health {backend}/{name}")

    def set_server_state(self, backend: str, name: str, state: str) -> None:
        """ready (takes traffic), drain (no new traffic, checks run) or maint (no traffic, no checks)."""
        command = f"set server {backend}/{name} state {state}"
        self._expect(self.execute("set", "server", f"{backend}/{name}", "state", state), ("",), command)

    def del_server(self, backend: str, name: str) -> str:
        """Remove a server in maintenance; HAProxy's answer ("Server deleted." or why it refused)."""
        return self.execute("del", "server", f"{backend}/{name}")

    def servers_state(self) -> list[dict[str, str]]:
        """`show servers state` as one dict per server (be_name, srv_name, srv_addr, srv_port, ...)."""
        lines = self.show_servers_state().splitlines()
        header = next((line[2:].split() for line in lines if line.startswith("# ")), [])
        return [
            dict(zip(header, line.split(), strict=False))
            for line in lines[1:]
            if line and not line.startswith("#")
        ]
