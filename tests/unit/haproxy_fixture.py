"""A real HAProxy for unit tests: live and preview frontends routed by the live-color map, like
roles/haproxy renders, with backends that answer their own color (no node processes needed).

With `nodes` (color -> addresses of real HTTP servers, see node_fixture), the backends forward to
those servers instead and health-check them (`GET /health/ready` every 200 ms), as in production;
with `load_state`, HAProxy loads its server-state-file at start."""

from __future__ import annotations

import contextlib
import csv
import http.client
import io
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"

CONFIG = """
global
    stats socket {dir}/admin.sock mode 600 level admin
    server-state-file {dir}/server-state
{global_shadow}defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
    load-server-state-from-file {load_state}
frontend live
    bind 127.0.0.1:{live_port}
    http-request del-header X-Bluegreen- -m beg
{live_shadow}    use_backend bg_%[str(live),map({dir}/live.map,blue)]
frontend preview
    bind 127.0.0.1:{preview_port}
    http-request del-header X-Bluegreen- -m beg
    use_backend bg_%[str(live),map({dir}/live.map,blue),map({dir}/idle.map)]
{backends}"""

# Shadow traffic as roles/haproxy renders it (keep in step with haproxy.cfg.j2): the real Lua mirror,
# the runtime-only map.
SHADOW_LUA = Path(__file__).resolve().parents[2] / "roles" / "haproxy" / "files" / "bluegreen_shadow.lua"
GLOBAL_SHADOW = """    setenv BLUEGREEN_SHADOW_PATH /v1/logs
    setenv BLUEGREEN_SHADOW_BACKEND_PREFIX bg_
    setenv BLUEGREEN_SHADOW_FRONTEND live
    setenv BLUEGREEN_SHADOW_QUEUE {shadow_queue}
    setenv BLUEGREEN_SHADOW_WORKERS 4
    setenv BLUEGREEN_SHADOW_TIMEOUT_MS {shadow_timeout_ms}
    lua-load {lua}
"""
LIVE_SHADOW = """    http-request set-var(txn.bg_shadow_percent) str(percent),map_str_int({dir}/shadow.map,0) if METH_POST {{ path /v1/logs }}
    http-request set-var(txn.bg_shadow) rand(100),neg,add(txn.bg_shadow_percent) if {{ var(txn.bg_shadow_percent) -m int gt 0 }}
    acl bg_shadow_sampled var(txn.bg_shadow) -m int gt 0
    http-request wait-for-body time 1s if bg_shadow_sampled
    http-request set-var(txn.bg_shadow_length) req.hdr(content-length) if bg_shadow_sampled
    http-request set-var(txn.bg_shadow_type) req.hdr(content-type) if bg_shadow_sampled
    http-request set-var(txn.bg_shadow_body) req.body if bg_shadow_sampled
    http-request set-var(txn.bg_shadow_idle) str(live),map({dir}/live.map,blue),map({dir}/idle.map) if bg_shadow_sampled
    http-response lua.bluegreen_shadow_enqueue if bg_shadow_sampled
"""  # noqa: E501 - HAProxy config lines, as roles/haproxy renders them

STANDALONE_BACKENDS = """
backend bg_blue
    http-request return status 200 content-type text/plain string blue
    server blue-1 127.0.0.1:9 disabled
backend bg_green
    http-request return status 200 content-type text/plain string green
    server green-1 127.0.0.1:9 disabled
"""

CHECKED_BACKEND = """
backend bg_{color}
    option httpchk GET /health/ready
    default-server check inter 200ms fall 2 rise 1
    http-response set-header X-Bluegreen-Color {color}
    http-response set-header X-Bluegreen-Node %[srv_name]
{servers}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class HAProxy:
    dir: Path
    live_port: int
    preview_port: int
    process: subprocess.Popen

    @property
    def socket(self) -> str:
        return str(self.dir / "admin.sock")

    @property
    def live_map(self) -> str:
        return str(self.dir / "live.map")

    @property
    def shadow_map(self) -> str:
        return str(self.dir / "shadow.map")

    def color_at(self, port: int) -> str:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
        return data.split(b"\r\n\r\n", 1)[1].decode()

    def request(self, port: int, method: str = "GET", path: str = "/") -> int:
        """Send one request through a frontend; its HTTP status."""
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request(method, path, body=b"{}" if method == "POST" else None)
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()

    def command(self, line: str) -> str:
        """One runtime API command, answered as text (independent of the code under test)."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(self.socket)
            sock.sendall(line.encode() + b"\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        return data.decode()

    def server_status(self) -> dict[str, str]:
        """Every server's status (UP, DOWN, MAINT, ...) by `backend/server`, as `show stat` says now."""
        rows = csv.DictReader(io.StringIO(self.command("show stat").removeprefix("# ")))
        return {
            f"{row['pxname']}/{row['svname']}": row["status"]
            for row in rows
            if row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def wait_status(self, expected: dict[str, str], timeout: float = 5.0) -> None:
        """Wait until every named server has its expected status (health checks run every 200 ms)."""
        deadline = time.monotonic() + timeout
        while True:
            now = self.server_status()
            if all(now.get(name) == status for name, status in expected.items()):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"servers did not reach {expected} in {timeout}s: {now}")
            time.sleep(0.05)


def process_uids(pid: int) -> dict[int, int]:
    """pid -> real uid of a process and of its children (HAProxy's master and its workers), from /proc."""
    uids = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat_file.read_text().rsplit(")", 1)[1].split()[1])
            status = (stat_file.parent / "status").read_text()
        except OSError:
            continue
        this = int(stat_file.parent.name)
        if pid in (this, ppid):
            uids[this] = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
    return uids


def _launch(directory: Path) -> subprocess.Popen:
    sock = directory / "admin.sock"
    sock.unlink(missing_ok=True)
    cfg = directory / "haproxy.cfg"
    proc = subprocess.Popen(
        [HAPROXY, "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 10
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"haproxy did not start: {proc.stderr.read().decode()}")
        time.sleep(0.05)
    return proc


def _backends(nodes: dict[str, list[str]] | None) -> str:
    if nodes is None:
        return STANDALONE_BACKENDS
    return "".join(
        CHECKED_BACKEND.format(
            color=color,
            servers="\n".join(
                f"    server {color}-{n} {address}" for n, address in enumerate(nodes.get(color, []), 1)
            ),
        )
        for color in ("blue", "green")
    )


def start(  # noqa: PLR0917 - callers name every argument after directory
    directory: Path,
    live: str = "blue",
    nodes: dict[str, list[str]] | None = None,
    load_state: bool = False,
    shadow: bool = False,
    shadow_queue: int = 256,
    shadow_timeout_ms: int = 5000,
) -> HAProxy:
    """Start HAProxy; with nodes, return once its health checks see every node UP.

    With shadow, the live frontend has the shadow-traffic rules and the Lua mirror (off: the map
    file says percent 0)."""
    (directory / "live.map").write_text(f"live {live}\n")
    (directory / "idle.map").write_text("blue green\ngreen blue\n")
    live_port, preview_port = free_port(), free_port()
    if shadow:
        (directory / "shadow.map").write_text("percent 0\n")
    fields = {"dir": directory, "preview_port": preview_port}
    cfg = directory / "haproxy.cfg"
    cfg.write_text(
        CONFIG.format(
            dir=directory,
            live_port=live_port,
            preview_port=preview_port,
            load_state="global" if load_state else "none",
            backends=_backends(nodes),
            global_shadow=GLOBAL_SHADOW.format(
                **fields, lua=SHADOW_LUA, shadow_queue=shadow_queue, shadow_timeout_ms=shadow_timeout_ms
            )
            if shadow
            else "",
            live_shadow=LIVE_SHADOW.format(**fields) if shadow else "",
        )
    )
    haproxy = HAProxy(directory, live_port, preview_port, _launch(directory))
    if nodes:
        try:
            haproxy.wait_status(
                {
                    f"bg_{color}/{color}-{n}": "UP"
                    for color, addresses in nodes.items()
                    for n in range(1, len(addresses) + 1)
                }
            )
        except AssertionError:
            stop(haproxy)
            raise
    return haproxy


def restart(haproxy: HAProxy) -> None:
    """Stop and start again (not a reload) from the same files; what survives is what is on disk."""
    stop(haproxy)
    haproxy.process = _launch(haproxy.dir)


def stop(haproxy: HAProxy) -> None:
    haproxy.process.send_signal(signal.SIGTERM)
    try:
        haproxy.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        haproxy.process.kill()
        haproxy.process.wait()


@contextlib.contextmanager
def running(directory: Path, **kwargs):
    """start(), and stop() whatever happens in the with-block."""
    haproxy = start(directory, **kwargs)
    try:
        yield haproxy
    finally:
        stop(haproxy)
