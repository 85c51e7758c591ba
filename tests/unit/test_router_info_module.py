"""bluegreen_router_info against a real HAProxy health-checking real nodes."""

from __future__ import annotations

import pytest

from tests.ansible_modules import run_module
from tests.unit import haproxy_fixture
from tests.unit.node_fixture import running_nodes


@pytest.fixture
def nodes():
    with running_nodes(blue=["1.0.0", "1.0.0"], green=["1.1.0", "1.1.0"]) as running:
        yield running


@pytest.fixture
def haproxy(tmp_path, nodes):
    with haproxy_fixture.running(
        tmp_path, nodes={color: [n.address for n in group] for color, group in nodes.items()}
    ) as lb:
        yield lb


def info(haproxy, **extra):
    return run_module("bluegreen_router_info", {"socket": haproxy.socket, "map": haproxy.live_map, **extra})


def test_reports_live_color_and_every_server_up(haproxy, nodes):
    failed, result = info(haproxy, require_healthy=["blue", "green"])
    assert not failed, result
    assert result["changed"] is False
    assert (result["live"], result["idle"]) == ("blue", "green")
    for color in ("blue", "green"):
        backend = result["colors"][color]
        assert (backend["status"], backend["servers_up"], backend["servers_total"]) == ("UP", 2, 2)
    keys = ("color", "name", "address", "status", "check_status")
    servers = [tuple(s[key] for key in keys) for s in result["servers"]]
    assert servers == [
        ("blue", "blue-1", nodes["blue"][0].address, "UP", "L7OK"),
        ("blue", "blue-2", nodes["blue"][1].address, "UP", "L7OK"),
        ("green", "green-1", nodes["green"][0].address, "UP", "L7OK"),
        ("green", "green-2", nodes["green"][1].address, "UP", "L7OK"),
    ]


def test_follows_the_live_color_in_haproxys_memory(haproxy):
    haproxy.command(f"set map {haproxy.live_map} live green")
    failed, result = info(haproxy)
    assert not failed
    assert (result["live"], result["idle"]) == ("green", "blue")
    assert haproxy.color_at(haproxy.live_port) == "green"


def test_require_healthy_fails_naming_the_down_server_and_its_check(haproxy, nodes):
    nodes["green"][1].ready = False  # answers 503 on /health/ready
    haproxy.wait_status({"bg_green/green-2": "DOWN"})
    failed, result = info(haproxy, require_healthy=["green"])
    assert failed
    assert "green is not healthy" in result["msg"]
    assert "green-2 (DOWN, check L7STS)" in result["msg"]
    assert "green-1" not in result["msg"]
    assert "lb " in result["msg"]
    assert result["colors"]["green"]["servers_up"] == 1  # the facts come with the failure
    # the other color is not judged by green's trouble
    failed, result = info(haproxy, require_healthy=["blue"])
    assert not failed, result["msg"] if failed else ""
    # and once the node is ready again, HAProxy brings it back
    nodes["green"][1].ready = True
    haproxy.wait_status({"bg_green/green-2": "UP"})
    failed, _ = info(haproxy, require_healthy=["green"])
    assert not failed


def test_stopped_node_is_a_layer4_failure(haproxy, nodes):
    nodes["blue"][0].stop()
    haproxy.wait_status({"bg_blue/blue-1": "DOWN"})
    failed, result = info(haproxy, require_healthy=["blue"])
    assert failed
    assert "blue-1 (DOWN, check L4CON)" in result["msg"]


def test_unknown_color_is_refused(haproxy):
    failed, result = info(haproxy, require_healthy=["red"])
    assert failed
    assert "unknown color 'red'" in result["msg"]


def test_servers_in_maintenance_are_not_healthy(tmp_path):
    with haproxy_fixture.running(tmp_path) as lb:  # its servers are `disabled`
        failed, result = info(lb, require_healthy=["blue"])
    assert failed
    assert "blue-1 (MAINT, check -)" in result["msg"]


def test_unreachable_haproxy_fails_naming_the_socket(tmp_path):
    failed, result = run_module(
        "bluegreen_router_info", {"socket": str(tmp_path / "missing.sock"), "map": str(tmp_path / "live.map")}
    )
    assert failed
    assert "router check on lb " in result["msg"]
    assert "missing.sock" in result["msg"]


def test_members_fail_naming_the_nodes_haproxy_lacks_and_the_servers_it_has_beyond_them(haproxy):
    failed, result = info(haproxy, members={"blue": ["blue-1", "blue-2"], "green": ["green-1", "green-2"]})
    assert not failed, result

    grown = {"blue": ["blue-1", "blue-2"], "green": ["green-1", "green-2", "green-3"]}
    failed, result = info(haproxy, members=grown)
    assert failed
    assert "green-3" in result["msg"] and "not in HAProxy" in result["msg"]
    assert "site.yml" in result["msg"]

    failed, result = info(haproxy, members={"blue": ["blue-1"], "green": ["green-1", "green-2"]})
    assert failed
    assert "blue-2" in result["msg"] and "not in the inventory" in result["msg"]

    # a server kept in maintenance (HAProxy would not delete it) takes no traffic: not a difference
    assert haproxy.command("set server bg_blue/blue-2 state maint").strip() == ""
    failed, result = info(haproxy, members={"blue": ["blue-1"], "green": ["green-1", "green-2"]})
    assert not failed, result


def test_members_of_an_unknown_color_are_refused(haproxy):
    failed, result = info(haproxy, members={"purple": ["x"]})
    assert failed and "purple" in result["msg"]
