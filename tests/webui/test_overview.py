"""The overview against a real HAProxy (its own, on free ports) with real backend servers: colors and
versions from state.json, node health and rates from HAProxy's CSV stats, lock holder, warm period,
and the live stream with its chart history."""

from __future__ import annotations

import datetime as dt
import http.client
import http.server
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ansible_modules import dead_run
from tests.webui.conftest import free_port, login, stream, write_lock
from webui import create_app

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"

CONFIG = """
global
    stats socket {dir}/admin.sock mode 600 level admin
defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend stats
    bind 127.0.0.1:{stats_port}
    stats enable
    stats uri /stats
    # as roles/haproxy renders it: with legends, the CSV carries each server's address
    stats show-legends
frontend live
    bind 127.0.0.1:{live_port}
    use_backend bg_%[path,field(2,/)]
backend bg_blue
    option httpchk GET /health/ready
    default-server check inter 200ms fall 2 rise 1
    server blue-1 127.0.0.1:{blue_port}
    server blue-2 127.0.0.1:{dead_port}
backend bg_green
    option httpchk GET /health/ready
    default-server check inter 200ms fall 2 rise 1
    server green-1 127.0.0.1:{green_port}
"""


class Node(http.server.BaseHTTPRequestHandler):
    """A stand-in node: ready, answers POSTs with the server's status, counts entries in /metrics."""

    def do_GET(self) -> None:
        if self.path == "/metrics":
            body = (
                "# HELP logplatform_entries_accepted_total Entries durably written.\n"
                "# TYPE logplatform_entries_accepted_total counter\n"
                f'logplatform_entries_accepted_total{{service="t",level="info"}} {self.server.entries}\n'
            )
            self._reply(200, body.encode(), "text/plain; version=0.0.4")
        else:
            self._reply(200, b'{"status":"ready"}', "application/json")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.entries += 10
        self._reply(self.server.answer, b"{}", "application/json")

    def _reply(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class NodeServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        pass  # HAProxy's health checks hang up without reading the body


def start_node(answer: int) -> NodeServer:
    server = NodeServer(("127.0.0.1", 0), Node)
    server.answer = answer
    server.entries = 0
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def haproxy(tmp_path: Path) -> Iterator[dict]:
    if not Path(HAPROXY).exists():
        pytest.skip("haproxy is not installed (make test installs it)")
    blue, green = start_node(200), start_node(500)
    ports = {
        "stats_port": free_port(),
        "live_port": free_port(),
        "blue_port": blue.server_address[1],
        "green_port": green.server_address[1],
        "dead_port": free_port(),
    }
    directory = tmp_path / "haproxy"
    directory.mkdir()
    (directory / "haproxy.cfg").write_text(CONFIG.format(dir=directory, **ports))
    process = subprocess.Popen([HAPROXY, "-db", "-f", str(directory / "haproxy.cfg")], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", ports["stats_port"], timeout=1)
                conn.request("GET", "/stats;csv")
                if b"bg_blue" in conn.getresponse().read():
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"haproxy did not start: {process.stderr.read().decode()}")
            time.sleep(0.05)
        time.sleep(0.5)  # a few health checks: blue-2 goes DOWN
        yield {"url": f"http://127.0.0.1:{ports['stats_port']}/stats;csv", **ports}
    finally:
        process.terminate()
        process.wait(timeout=10)
        blue.shutdown()
        green.shutdown()


def send(port: int, path: str, count: int) -> None:
    for _ in range(count):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("POST", path, body=b"[]", headers={"Content-Type": "application/json"})
        conn.getresponse().read()
        conn.close()


def test_overview_shows_state_health_rates_lock_and_chart(config, users_file, haproxy, project):
    state_dir = project / ".lab" / "lb" / "state"
    warm_until = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    state = json.loads((state_dir / "state.json").read_text())
    state.update(
        live="green", previous="blue", versions={"blue": "1.0.0", "green": "1.1.0"}, warm_until=warm_until
    )
    (state_dir / "state.json").write_text(json.dumps(state))
    holder = subprocess.Popen(["sleep", "60"])
    write_lock(state_dir, holder.pid)
    app = create_app({**config, "HAPROXY_STATS_URL": haproxy["url"]})
    shutil.copy(users_file, app.config["USERS_FILE"])
    client = app.test_client()
    login(client, "victor")
    try:
        page = client.get("/").get_data(as_text=True)
        assert 'id="live-color" data-testid="live-color" data-color="green"' in page
        reader = stream(client, "/overview/events")
        first = reader.next()["data"]
        assert first["live"] == {"color": "green", "version": "1.1.0"}
        assert first["idle"] == {"color": "blue", "version": "1.0.0"}
        assert first["warm_until"] == warm_until
        assert 1700 < first["warm_seconds_left"] <= 1800
        assert first["lock"]["user"] == "carol"
        assert first["lock"]["stale"] is False
        assert "held by deployment 20260101T120000Z-1.1.0" in first["lock_text"]
        assert first["haproxy"] == {"ok": True, "error": None}
        assert isinstance(first["chart"], list)
        blue = first["backends"]["blue"]
        assert {s["name"]: s["status"] for s in blue["servers"]} == {"blue-1": "UP", "blue-2": "DOWN"}
        assert (blue["servers_up"], blue["servers_total"]) == (1, 2)
        assert [s["status"] for s in first["backends"]["green"]["servers"]] == ["UP"]

        # traffic: 40 requests to blue (200), 20 to green (500); the poller turns counters into rates
        send(haproxy["live_port"], "/blue/v1/logs", 40)
        send(haproxy["live_port"], "/green/v1/logs", 20)
        seen = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            data = reader.next()["data"]
            seen.append(data)
            if data["backends"]["blue"]["stot"] >= 40 and data["backends"]["green"]["hrsp_5xx"] >= 20:
                break
        last = seen[-1]
        assert last["backends"]["blue"]["hrsp_5xx"] == 0
        assert last["backends"]["green"]["hrsp_5xx"] == 20
        assert [s["stot"] for s in last["backends"]["green"]["servers"]] == [20]
        # some interval saw the traffic: req/s, 5xx/s and error rate per backend, and sink entries/s
        assert max(d["backends"]["blue"]["req_per_s"] or 0 for d in seen) > 0
        assert max(d["backends"]["green"]["err_per_s"] or 0 for d in seen) > 0
        assert max(d["backends"]["green"]["error_rate"] or 0 for d in seen) == 1.0
        assert max(d["backends"]["blue"]["entries_per_s"] or 0 for d in seen) > 0
        points = [d["point"] for d in seen if "point" in d]
        assert points
        assert max(p["blue"] or 0 for p in points) > 0
        assert max(p["green_5xx"] or 0 for p in points) > 0
        reader.close()

        # the API serves the same sample with the chart history, bounded by CHART_SECONDS / POLL_INTERVAL
        data = client.get("/api/overview").get_json()
        assert data["live"]["color"] == "green"
        assert len(data["chart"]) >= len(points)
        assert app.extensions["bluegreen"].monitor.chart.maxlen == int(600 / 0.2)
    finally:
        app.extensions["bluegreen"].monitor.stop()
        holder.kill()
        holder.wait()


def viewer_client(config: dict, users_file: Path):
    """The dashboard app (no HAProxy) and a test client logged in as a viewer."""
    app = create_app(config)
    shutil.copy(users_file, app.config["USERS_FILE"])
    client = app.test_client()
    login(client, "victor")
    return app, client


def test_overview_without_haproxy_or_state(config, users_file, project):
    (project / ".lab" / "lb" / "state" / "state.json").unlink()
    app, client = viewer_client(config, users_file)
    try:
        data = client.get("/api/overview").get_json()
        assert data["live"] is None
        assert "no state.json" in data["state_error"]
        assert data["haproxy"]["ok"] is False
        assert "cannot read HAProxy stats" in data["haproxy"]["error"]
        assert data["backends"] == {}
        assert data["lock"] is None
        page = client.get("/").get_data(as_text=True)
        assert 'data-color=""' in page
        assert "no state.json" in page
    finally:
        app.extensions["bluegreen"].monitor.stop()


def test_overview_shows_a_dead_runs_stage_stale_lock_and_stored_failure(config, users_file, project):
    """A controller that died in stage 3 after `fail` stored why: the overview shows the deployment at
    validate as abandoned, the stale lock (Break enabled), and the failure - all from the state dir."""
    state_dir = project / ".lab" / "lb" / "state"
    failure = {"stage": "validate", "check": "health_ready", "host": "green-1", "observed": "503 for 30s"}
    run, dead_pid = dead_run(state_dir, failure)
    app, client = viewer_client(config, users_file)
    try:
        data = client.get("/api/overview").get_json()
        assert data["lock"]["stale"] is True and str(dead_pid) in data["lock"]["stale_reason"]
        assert data["abandoned"]["run_id"] == run["id"] and data["abandoned"]["stage"] == "validate"
        assert {k: data["failure"][k] for k in failure} == failure
        text = f'{run["id"]} in stage validate: check "health_ready" on green-1: 503 for 30s'
        assert data["failure_text"] == text
        page = client.get("/").get_data(as_text=True)
        assert f"{run['id']} (validate) ABANDONED: holder process {dead_pid}" in page
        assert f"failed {text}".replace('"', "&#34;") in page
    finally:
        app.extensions["bluegreen"].monitor.stop()


def overview_once(client, predicate, timeout: float = 10.0) -> dict:
    """/api/overview once the poller's sample satisfies `predicate` (it samples every POLL_INTERVAL)."""
    deadline = time.monotonic() + timeout
    while True:
        data = client.get("/api/overview").get_json()
        if predicate(data) or time.monotonic() > deadline:
            return data
        time.sleep(0.05)


def test_overview_shows_each_lbs_live_color_and_flags_lbs_that_disagree(
    config, users_file, project, tmp_path
):
    """Several lbs (LB_STATE_DIRS): each lb's live color from its own state.json, in the page, the API and
    the stream; when they differ (or one cannot be read) the overview says so, naming each lb."""
    state = json.loads((project / ".lab" / "lb" / "state" / "state.json").read_text())
    dirs = {}
    for lb in ("lb-1", "lb-2"):
        dirs[lb] = tmp_path / lb / "state"
        dirs[lb].mkdir(parents=True)
        (dirs[lb] / "state.json").write_text(json.dumps(state))
    lb_state_dirs = ",".join(f"{lb}={path}" for lb, path in dirs.items())
    app, client = viewer_client({**config, "LB_STATE_DIRS": lb_state_dirs}, users_file)
    try:
        data = client.get("/api/overview").get_json()
        assert [(lb["name"], lb["live"], lb["version"]) for lb in data["lbs"]] == [
            ("lb-1", "blue", "1.0.0"),
            ("lb-2", "blue", "1.0.0"),
        ]
        assert (data["lbs_agree"], data["lbs_disagreement"]) == (True, [])
        page = client.get("/").get_data(as_text=True)
        assert (
            '<li data-lb="lb-1" data-color="blue">' in page
            and '<li data-lb="lb-2" data-color="blue">' in page
        )
        assert 'id="lbs-disagree" data-testid="lbs-disagree" hidden' in page

        # lb-2 alone moved to green: the page, the API and the stream say the lbs disagree
        (dirs["lb-2"] / "state.json").write_text(json.dumps({**state, "live": "green"}))
        expected = ["live color in state.json differs: lb-1 blue, lb-2 green"]
        data = overview_once(client, lambda d: d["lbs"][1]["live"] == "green")
        assert [lb["live"] for lb in data["lbs"]] == ["blue", "green"]
        assert (data["lbs_agree"], data["lbs_disagreement"]) == (False, expected)
        page = client.get("/").get_data(as_text=True)
        assert '<li data-lb="lb-2" data-color="green">' in page
        assert f"load balancers disagree: {expected[0]}" in page
        reader = stream(client, "/overview/events")
        sample = reader.next()["data"]
        assert (sample["lbs_agree"], sample["lbs_disagreement"]) == (False, expected)
        reader.close()

        # an lb whose state cannot be read is a disagreement too, with its error shown
        (dirs["lb-2"] / "state.json").write_text("{torn")
        data = overview_once(client, lambda d: d["lbs"][1]["error"])
        assert data["lbs"][1]["live"] is None and "not valid JSON" in data["lbs"][1]["error"]
        assert data["lbs_disagreement"] == [
            "no status from lb-2 (unreachable, or its status could not be read)"
        ]
    finally:
        app.extensions["bluegreen"].monitor.stop()


def test_one_lb_shows_no_lb_list(config, users_file):
    app, client = viewer_client(config, users_file)
    try:
        data = client.get("/api/overview").get_json()
        assert "lbs" not in data
        assert 'id="lbs" data-testid="lbs" class="lbs" hidden' in client.get("/").get_data(as_text=True)
    finally:
        app.extensions["bluegreen"].monitor.stop()
