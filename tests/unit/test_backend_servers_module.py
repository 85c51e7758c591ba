"""bluegreen_backend_servers against a real HAProxy with real HTTP nodes: nodes join once healthy and leave
drained, through the runtime API, with no failed request and no reload."""

from __future__ import annotations

import http.client
import json
import threading
import time
from pathlib import Path

import pytest

from tests.ansible_modules import run_module
from tests.unit import haproxy_fixture
from tests.unit.node_fixture import Node, running_nodes

# a joining server's options, as roles/haproxy renders them on every server line (fast checks here)
OPTIONS = "check inter 200ms fall 2 rise 1"


@pytest.fixture
def lab(tmp_path):
    """blue-1 live; green-1, green-2 idle (the preview frontend's), in HAProxy; green-3 running, not in it."""
    with running_nodes(blue=["1.0.0"], green=["1.0.0", "1.0.0", "1.0.0"]) as nodes:
        addresses = {"blue": [nodes["blue"][0].address], "green": [n.address for n in nodes["green"][:2]]}
        (tmp_path / "lb").mkdir()
        with haproxy_fixture.running(tmp_path / "lb", nodes=addresses, shadow=True) as lb:
            yield lb, nodes


def render(lb, green: dict[str, str], path: Path, timeout_client: str = "10s") -> str:
    """haproxy.cfg as a render would write it: the running one, with these green server lines."""
    lines, inside = [], False
    for line in (lb.dir / "haproxy.cfg").read_text().splitlines():
        if line and not line[0].isspace():
            if inside:
                lines.extend(f"    server {name} {address} {OPTIONS}" for name, address in green.items())
            inside = line.strip() == "backend bg_green"
        if inside and line.strip().startswith("server "):
            continue
        lines.append(line.replace("timeout client 10s", f"timeout client {timeout_client}"))
    if inside:
        lines.extend(f"    server {name} {address} {OPTIONS}" for name, address in green.items())
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def apply(lb, config: str, previous: str | None = None, check_mode: bool = False, **args):
    params = {"socket": lb.socket, "config": config, "timeout": 10.0, **args}
    if previous:
        params["previous"] = previous
    return run_module("bluegreen_backend_servers", params, check_mode=check_mode)


def green_names(nodes, *indexes: int) -> dict[str, str]:
    return {f"green-{i}": nodes["green"][i - 1].address for i in indexes}


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


class Traffic:
    """Requests through a frontend, back to back, in a thread, until stop(): statuses and serving nodes."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.statuses: list[int] = []
        self.nodes: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        while not self._stop.is_set():
            try:
                conn.request("POST", "/v1/logs", body=b"[]")
                response = conn.getresponse()
                response.read()
                self.statuses.append(response.status)
                self.nodes.append(response.getheader("X-Bluegreen-Node") or "")
            except (OSError, http.client.HTTPException):
                self.statuses.append(0)
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def test_a_new_node_joins_once_healthy_under_traffic_and_a_rerun_changes_nothing(lab, tmp_path):
    lb, nodes = lab
    previous = render(lb, green_names(nodes, 1, 2), tmp_path / "previous.cfg")
    config = render(lb, green_names(nodes, 1, 2, 3), tmp_path / "haproxy.cfg")
    traffic = Traffic(lb.preview_port)  # the preview frontend routes to green, the idle color
    try:
        failed, result = apply(lb, config, previous)
        assert not failed, result
        assert result["changed"] is True
        assert result["added"] == ["bg_green/green-3"]
        assert result["removed"] == result["kept"] == []
        assert result["reload"] is False, result["reload_reason"]
        assert result["servers"]["bg_green"] == ["green-1", "green-2", "green-3"]
        assert lb.server_status()["bg_green/green-3"] == "UP"
        served = len(traffic.nodes)
        wait_for(lambda: len(traffic.nodes) >= served + 30)
    finally:
        traffic.stop()
    assert set(traffic.statuses) == {200}
    assert "green-3" in traffic.nodes[served:]

    failed, again = apply(lb, config)
    assert not failed, again
    assert again["changed"] is False
    assert again["added"] == again["removed"] == []
    assert again["reload"] is False


def test_a_node_that_never_passes_its_check_takes_no_request_and_is_named(lab, tmp_path):
    lb, nodes = lab
    broken = nodes["green"][2]
    broken.ready = False
    config = render(lb, green_names(nodes, 1, 2, 3), tmp_path / "haproxy.cfg")
    traffic = Traffic(lb.preview_port)
    try:
        failed, result = apply(lb, config, timeout=2.0)
    finally:
        traffic.stop()
    assert failed
    assert "bg_green/green-3" in result["msg"] and broken.address in result["msg"]
    assert "did not pass its health check within 2 s" in result["msg"]
    assert "bg_green/green-3" not in lb.server_status()  # removed again
    assert broken.requests == 0
    assert set(traffic.statuses) == {200} and "green-3" not in traffic.nodes


def test_a_node_leaves_drained_under_traffic_with_no_failed_request(lab, tmp_path):
    lb, nodes = lab
    previous = render(lb, green_names(nodes, 1, 2), tmp_path / "previous.cfg")
    config = render(lb, green_names(nodes, 1), tmp_path / "haproxy.cfg")
    traffic = Traffic(lb.preview_port)
    try:
        wait_for(lambda: "green-2" in traffic.nodes)
        failed, result = apply(lb, config, previous)
        leaving = nodes["green"][1].requests
        served = len(traffic.nodes)
        wait_for(lambda: len(traffic.nodes) >= served + 30)
    finally:
        traffic.stop()
    assert not failed, result
    assert result["removed"] == ["bg_green/green-2"]
    assert result["reload"] is False
    assert "bg_green/green-2" not in lb.server_status()
    assert set(traffic.statuses) == {200}
    assert nodes["green"][1].requests == leaving  # nothing new after it left
    assert "green-2" not in traffic.nodes[served:]


def test_a_server_the_lua_mirror_holds_is_kept_in_maintenance_and_named(lab, tmp_path):
    lb, nodes = lab
    # the mirror reads the idle backend's servers when it mirrors: HAProxy 2.6 then keeps them
    lb.command(f"set map {lb.shadow_map} percent 100")
    for _ in range(5):
        lb.request(lb.live_port, "POST", "/v1/logs")

    def mirrored() -> int:  # sent to a green node (our stand-in nodes' answers count as shadow errors)
        counters = json.loads(lb.command("bluegreen shadow"))
        return counters["mirrored"] + counters["errors"]

    wait_for(lambda: mirrored() == 5)
    lb.command(f"set map {lb.shadow_map} percent 0")
    config = render(lb, green_names(nodes, 1), tmp_path / "haproxy.cfg")
    failed, result = apply(lb, config)
    assert not failed, result
    assert result["kept"] == ["bg_green/green-2"] and result["removed"] == []
    assert any("green-2" in warning and "next reload" in warning for warning in result["warnings"])
    assert lb.server_status()["bg_green/green-2"] == "MAINT"
    assert {lb.request(lb.preview_port, "POST", "/v1/logs") for _ in range(6)} == {200}

    assert result["changed"] is True
    failed, again = apply(lb, config)  # nothing more to do: it stays kept, nothing changes
    assert not failed and again["kept"] == ["bg_green/green-2"]
    assert again["changed"] is False
    assert lb.server_status()["bg_green/green-2"] == "MAINT"


def test_a_change_beyond_the_server_lists_still_needs_a_reload(lab, tmp_path):
    lb, nodes = lab
    previous = render(lb, green_names(nodes, 1, 2), tmp_path / "previous.cfg")
    config = render(lb, green_names(nodes, 1, 2), tmp_path / "haproxy.cfg", timeout_client="20s")
    failed, result = apply(lb, config, previous)
    assert not failed, result
    assert result["changed"] is False
    assert result["reload"] is True
    assert "beyond the backends' server lists" in result["reload_reason"]

    moved = {"green-1": nodes["green"][2].address, "green-2": nodes["green"][1].address}
    failed, result = apply(lb, render(lb, moved, tmp_path / "moved.cfg"), previous)
    assert not failed, result
    assert result["reload"] is True
    assert "bg_green/green-1" in result["reload_reason"]
    assert nodes["green"][2].address in result["reload_reason"]


def test_check_mode_says_what_would_change_and_changes_nothing(lab, tmp_path):
    lb, nodes = lab
    config = render(lb, green_names(nodes, 1, 3), tmp_path / "haproxy.cfg")
    failed, result = apply(lb, config, check_mode=True)
    assert not failed, result
    assert result["changed"] is True
    assert (result["added"], result["removed"]) == (["bg_green/green-3"], ["bg_green/green-2"])
    assert "bg_green/green-3" in result["diff"]["after"] and "green-2" in result["diff"]["before"]
    assert set(lb.server_status()) == {"bg_blue/blue-1", "bg_green/green-1", "bg_green/green-2"}


def test_no_haproxy_changes_nothing_and_a_missing_config_is_named(tmp_path):
    config = tmp_path / "haproxy.cfg"
    config.write_text("backend bg_green\n    server green-1 127.0.0.1:9 check\n")
    failed, result = run_module(
        "bluegreen_backend_servers", {"socket": str(tmp_path / "admin.sock"), "config": str(config)}
    )
    assert not failed, result
    assert (result["changed"], result["running"], result["reload"]) == (False, False, False)
    failed, result = run_module(
        "bluegreen_backend_servers",
        {"socket": str(tmp_path / "admin.sock"), "config": str(tmp_path / "nope.cfg")},
    )
    assert failed and "no haproxy.cfg at" in result["msg"] and "nope.cfg" in result["msg"]


def test_node_fixture_counts_requests():
    node = Node("green").start()
    try:
        conn = http.client.HTTPConnection(*node.address.split(":"), timeout=5)
        conn.request("GET", "/health/ready")
        conn.getresponse().read()
        conn.request("POST", "/v1/logs", body=b"[]")
        conn.getresponse().read()
        conn.close()
    finally:
        node.stop()
    assert node.requests == 1


def test_the_rendered_config_and_the_saved_state_bring_the_same_servers_back_after_a_restart(tmp_path):
    """A node joined and one left at runtime; then the saved server state and the rendered config are what a
    restart loads: the same servers, each with its own state (HAProxy numbers them anew, matched by name)."""
    with running_nodes(blue=["1.0.0"], green=["1.0.0", "1.0.0", "1.0.0"]) as nodes:
        green = [n.address for n in nodes["green"]]
        addresses = {"blue": [nodes["blue"][0].address], "green": green[:2]}
        with haproxy_fixture.running(tmp_path, nodes=addresses, load_state=True) as lb:
            config = render(lb, {"green-2": green[1], "green-3": green[2]}, tmp_path / "rendered.cfg")
            failed, result = apply(lb, config)
            assert not failed, result
            assert (result["added"], result["removed"]) == (["bg_green/green-3"], ["bg_green/green-1"])
            assert lb.command("set server bg_green/green-2 state maint").strip() == ""  # a state to keep
            failed, saved = run_module(
                "bluegreen_server_state", {"socket": lb.socket, "path": str(tmp_path / "server-state")}
            )
            assert not failed, saved
            (tmp_path / "haproxy.cfg").write_text(Path(config).read_text())
            haproxy_fixture.restart(lb)
            lb.wait_status({"bg_green/green-3": "UP", "bg_blue/blue-1": "UP"})
            assert lb.server_status() == {
                "bg_blue/blue-1": "UP",
                "bg_green/green-2": "MAINT",
                "bg_green/green-3": "UP",
            }
            failed, again = apply(lb, config)  # the restarted HAProxy holds what the config lists
            assert not failed and again["changed"] is False
