"""The real entry points: `python -m webui.users` writes hashed users, `python -m webui` serves the app
with waitress, which streams SSE as it is produced (checked over a real socket)."""

from __future__ import annotations

import http.client
import json
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

from tests.conftest import REPO
from tests.webui.conftest import PASSWORD, free_port
from webui import users
from webui.users import UserStore


def users_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "webui.users", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_users_cli_adds_hashed_users(tmp_path: Path, monkeypatch):
    data_dir = tmp_path / "data"
    env = {"BLUEGREEN_WEBUI_DATA_DIR": str(data_dir), "BLUEGREEN_WEBUI_PASSWORD": PASSWORD}
    done = users_cli("add", "alice", "--role", "operator", env=env)
    assert done.returncode == 0, done.stderr
    path = data_dir / "users.json"
    assert f"saved in {path}" in done.stdout
    text = path.read_text()
    assert PASSWORD not in text
    record = json.loads(text)["users"]["alice"]
    assert record["role"] == "operator"
    assert record["password_hash"].startswith("scrypt:")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert UserStore(path).authenticate("alice", PASSWORD) == {"name": "alice", "role": "operator"}
    assert UserStore(path).authenticate("alice", PASSWORD + "x") is None

    # the same entry point in-process, for the refusals
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert users.main(["add", "alice"]) == 2  # exists
    assert users.main(["add", "Bad Name"]) == 2
    monkeypatch.setenv("BLUEGREEN_WEBUI_PASSWORD", "short")
    assert users.main(["add", "bob"]) == 2
    monkeypatch.setenv("BLUEGREEN_WEBUI_PASSWORD", "")
    assert users.main(["add", "bob"]) == 2  # no terminal to ask on, no password in the environment
    monkeypatch.setenv("BLUEGREEN_WEBUI_PASSWORD", PASSWORD)
    assert users.main(["add", "bob", "--role", "viewer"]) == 0
    assert users.main(["add", "bob", "--role", "operator", "--replace"]) == 0
    assert UserStore(path).names() == {"alice": "operator", "bob": "operator"}
    assert users.main(["remove", "alice"]) == 0
    assert users.main(["remove", "alice"]) == 2
    assert list(json.loads(path.read_text())["users"]) == ["bob"]
    other = tmp_path / "other.json"
    assert users.main(["--users-file", str(other), "add", "carol", "--role", "viewer"]) == 0
    assert UserStore(other).names() == {"carol": "viewer"}


class Client:
    """Just enough of a browser: one cookie, plain http.client requests."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookie = ""

    def request(self, method: str, path: str, body: dict | None = None, headers: dict | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        headers = {**(headers or {}), "Cookie": self.cookie}
        data = None
        if body is not None:
            data = urlencode(body)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        if response.getheader("Set-Cookie"):
            self.cookie = response.getheader("Set-Cookie").split(";", 1)[0]
        return conn, response


def test_python_m_webui_serves_with_waitress_and_streams(tmp_path: Path, project: Path, users_file: Path):
    port = free_port()
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "users.json").write_bytes(users_file.read_bytes())
    env = {
        **os.environ,
        "BLUEGREEN_WEBUI_HAPROXY_STATS_URL": f"http://127.0.0.1:{free_port()}/stats;csv",
        "BLUEGREEN_WEBUI_POLL_INTERVAL": "0.2",
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "webui",
            "--port",
            str(port),
            "--project-dir",
            str(project),
            "--data-dir",
            str(data_dir),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        client = Client(port)
        deadline = time.monotonic() + 15
        while True:
            try:
                conn, response = client.request("GET", "/login")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(server.stdout.read().decode()) from None
                time.sleep(0.1)
        assert response.getheader("Server") == "bluegreen-webui"
        page = response.read().decode()
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        conn.close()

        conn, response = client.request(
            "POST", "/login", {"username": "olivia", "password": PASSWORD, "csrf_token": token}
        )
        assert response.status == 302
        cookie = response.getheader("Set-Cookie")
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        conn.close()

        # the overview stream never ends by itself: a first event arriving proves waitress streams
        started = time.monotonic()
        conn, response = client.request("GET", "/overview/events", headers={"Accept": "text/event-stream"})
        assert response.status == 200
        assert response.getheader("Content-Type").startswith("text/event-stream")
        data = None
        while data is None and time.monotonic() - started < 10:
            line = response.fp.readline().decode()
            if line.startswith("data: "):
                data = json.loads(line[len("data: ") :])
        conn.close()
        assert data is not None
        assert data["live"] == {"color": "blue", "version": "1.0.0"}
        assert time.monotonic() - started < 5

        conn, response = client.request("GET", "/api/me")
        assert json.loads(response.read()) | {"csrf_token": None} == {
            "user": "olivia",
            "role": "operator",
            "csrf_token": None,
        }
        conn.close()
    finally:
        server.terminate()
        server.wait(timeout=10)


def start_server(tmp_path: Path, project: Path, users_file: Path, *args: str, **env: str):
    """`python -m webui` on a free port with the test users; (process, port) once it answers."""
    port = free_port()
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "users.json").write_bytes(users_file.read_bytes())
    server = subprocess.Popen(
        [
            sys.executable,
            *("-m", "webui", "--port", str(port), "--project-dir", str(project), "--data-dir", str(data_dir)),
            *args,
        ],
        cwd=REPO,
        env={
            **os.environ,
            "BLUEGREEN_WEBUI_HAPROXY_STATS_URL": f"http://127.0.0.1:{free_port()}/stats;csv",
            "BLUEGREEN_WEBUI_POLL_INTERVAL": "0.2",
            **env,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 15
    while True:
        try:
            http.client.HTTPConnection("127.0.0.1", port, timeout=5).request("GET", "/login")
            return server, port
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise AssertionError(server.stdout.read().decode()) from None
            time.sleep(0.1)


def logged_in(port: int, name: str) -> tuple[Client, str]:
    """A client logged in as name, and its CSRF token."""
    client = Client(port)
    conn, response = client.request("GET", "/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', response.read().decode()).group(1)
    conn.close()
    conn, response = client.request(
        "POST", "/login", {"username": name, "password": PASSWORD, "csrf_token": token}
    )
    assert response.status == 302, response.read()
    conn.close()
    conn, response = client.request("GET", "/api/me")
    token = json.loads(response.read())["csrf_token"]
    conn.close()
    return client, token


def open_stream(client: Client):
    """An overview stream that has sent its first event (so a server thread is serving it)."""
    conn, response = client.request("GET", "/overview/events", headers={"Accept": "text/event-stream"})
    if response.status == 200:
        deadline = time.monotonic() + 10
        while not response.fp.readline().startswith(b"data: "):
            assert time.monotonic() < deadline
    return conn, response


def test_streams_are_capped_and_actions_keep_their_threads(tmp_path: Path, project: Path, users_file: Path):
    """6 server threads, 2 kept from streams, 2 streams per user: a viewer's third tab is refused (429),
    and with every stream slot taken the operator's action is still accepted at once."""
    users = tmp_path / "users.json"
    users.write_bytes(users_file.read_bytes())
    UserStore(users).add("walter", "viewer", PASSWORD)
    server, port = start_server(
        tmp_path,
        project,
        users,
        "--threads",
        "6",
        BLUEGREEN_WEBUI_STREAMS_PER_USER="2",
        BLUEGREEN_WEBUI_STREAM_RESERVED_THREADS="2",
    )
    streams = []
    try:
        olivia, token = logged_in(port, "olivia")
        victor, _ = logged_in(port, "victor")
        walter, _ = logged_in(port, "walter")
        for _ in range(2):
            streams.append(open_stream(victor))
            assert streams[-1][1].status == 200
        conn, response = open_stream(victor)
        assert response.status == 429
        assert "victor has 2 event streams open" in json.loads(response.read())["error"]
        conn.close()
        for _ in range(2):
            streams.append(open_stream(walter))
            assert streams[-1][1].status == 200
        conn, response = open_stream(olivia)  # 4 of 6 threads stream: the rest are kept for requests
        assert response.status == 429
        assert "at most 4 event streams" in json.loads(response.read())["error"]
        conn.close()

        started = time.monotonic()
        conn, response = olivia.request(
            "POST", "/runs", {"action": "deploy", "version": "1.0.0", "csrf_token": token}
        )
        assert response.status == 303, response.read()[:500]
        assert (
            time.monotonic() - started < 10
        )  # "at once": a thread was free (a starved server waits forever)
        run_url = response.getheader("Location")
        conn.close()
        run_id = run_url.rsplit("/", 1)[1]
        deadline = time.monotonic() + 60
        while True:
            conn, response = olivia.request("GET", f"/api/runs/{run_id}")
            run = json.loads(response.read())
            conn.close()
            if run["finished"] or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert run["status"] == "successful", run

        # a closed tab gives its slot back (the response holds the socket too: close both)
        for conn, response in streams[:2]:
            response.close()
            conn.close()
        deadline = time.monotonic() + 30
        while True:
            conn, response = open_stream(victor)
            response.close()
            conn.close()
            if response.status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert response.status == 200
    finally:
        for conn, response in streams:
            response.close()
            conn.close()
        server.terminate()
        server.wait(timeout=10)
