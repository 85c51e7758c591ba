"""A real HAProxy for unit tests: live and preview frontends routed by the live-color map, like
roles/haproxy renders, with backends that answer their own color (no node processes needed)."""

from __future__ import annotations

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
defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend live
    bind 127.0.0.1:{live_port}
    use_backend bg_%[str(live),map({dir}/live.map,blue)]
frontend preview
    bind 127.0.0.1:{preview_port}
    use_backend bg_%[str(live),map({dir}/live.map,blue),map({dir}/idle.map)]
backend bg_blue
    http-request return status 200 content-type text/plain string blue
    server blue-1 127.0.0.1:9 disabled
backend bg_green
    http-request return status 200 content-type text/plain string green
    server green-1 127.0.0.1:9 disabled
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

    def color_at(self, port: int) -> str:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
        return data.split(b"\r\n\r\n", 1)[1].decode()


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


def start(directory: Path, live: str = "blue") -> HAProxy:
    (directory / "live.map").write_text(f"live {live}\n")
    (directory / "idle.map").write_text("blue green\ngreen blue\n")
    live_port, preview_port = free_port(), free_port()
    cfg = directory / "haproxy.cfg"
    cfg.write_text(CONFIG.format(dir=directory, live_port=live_port, preview_port=preview_port))
    return HAProxy(directory, live_port, preview_port, _launch(directory))


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
