"""bluegreen_switch as the one traffic-switch unit: gate, change, probe (and switch back), and the map
file compared with HAProxy's entry; against a real HAProxy health-checking real HTTP nodes."""

from __future__ import annotations

import json

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
    addresses = {color: [n.address for n in group] for color, group in nodes.items()}
    (tmp_path / "lb").mkdir()
    with haproxy_fixture.running(tmp_path / "lb", nodes=addresses) as lb:
        yield lb


@pytest.fixture
def state_dir(tmp_path):
    path = tmp_path / "state"
    path.mkdir()
    state = {"live": "blue", "previous": None, "versions": {"blue": "1.0.0", "green": "1.1.0"}}
    (path / "state.json").write_text(json.dumps(state))
    return path


def switch(haproxy, state_dir, **extra):
    return run_module(
        "bluegreen_switch",
        {"socket": haproxy.socket, "map": haproxy.live_map, "state_dir": str(state_dir), **extra},
    )


def live_url(haproxy) -> str:
    return f"http://127.0.0.1:{haproxy.live_port}"


def on_disk(haproxy, state_dir) -> tuple[str, str]:
    return (haproxy.dir / "live.map").read_text(), json.loads((state_dir / "state.json").read_text())["live"]


def test_gate_and_probe_pass_the_switch_moves_traffic(haproxy, state_dir):
    failed, result = switch(
        haproxy, state_dir, color="green", expect_version="1.1.0", probe_url=live_url(haproxy)
    )
    assert not failed, result
    assert (result["previous"], result["live"], result["changed"]) == ("blue", "green", True)
    assert {name: s["version"] for name, s in result["gate"].items()} == {
        "green-1": "1.1.0",
        "green-2": "1.1.0",
    }
    assert (result["probe"]["status"], result["probe"]["color"]) == (200, "green")
    assert result["probe"]["node"] in ("green-1", "green-2")
    assert haproxy.color_at(haproxy.live_port) == "green"
    assert on_disk(haproxy, state_dir) == ("live green\n", "green")


def test_gate_refuses_a_target_that_is_down_in_haproxy_and_changes_nothing(haproxy, state_dir, nodes):
    nodes["green"][1].ready = False
    haproxy.wait_status({"bg_green/green-2": "DOWN"})
    failed, result = switch(
        haproxy, state_dir, color="green", expect_version="1.1.0", probe_url=live_url(haproxy)
    )
    assert failed
    assert "switch to green on lb" in result["msg"]
    assert "refused, blue stays live: green is not up in HAProxy: green-2 (DOWN" in result["msg"]
    assert haproxy.color_at(haproxy.live_port) == "blue"
    assert on_disk(haproxy, state_dir) == ("live blue\n", "blue")


def test_gate_refuses_a_target_on_another_version(haproxy, state_dir, nodes):
    nodes["green"][0].version = "9.9.9"
    failed, result = switch(haproxy, state_dir, color="green", expect_version="1.1.0")
    assert failed
    assert "node green-1 of green runs 9.9.9, but state.json records 1.1.0 for green" in result["msg"]
    assert haproxy.color_at(haproxy.live_port) == "blue"
    assert on_disk(haproxy, state_dir) == ("live blue\n", "blue")


def test_a_failed_probe_switches_back_and_says_so(haproxy, state_dir, nodes):
    for node in nodes["green"]:
        node.status = 500  # ready for HAProxy's checks, but every request fails
    failed, result = switch(
        haproxy, state_dir, color="green", expect_version="1.1.0", probe_url=live_url(haproxy)
    )
    assert failed
    assert "a new request after the switch answered 500 by green" in result["msg"]
    assert "expected 200 by green; switched back: blue is live again on this lb" in result["msg"]
    assert result["live"] == "blue"
    assert haproxy.color_at(haproxy.live_port) == "blue"
    assert on_disk(haproxy, state_dir) == ("live blue\n", "blue")


def test_map_file_that_disagrees_with_haproxy_is_reported_refused_or_repaired(haproxy, state_dir):
    # a controller that died after writing the file and state.json, before the runtime change
    (haproxy.dir / "live.map").write_text("live green\n")
    state = json.loads((state_dir / "state.json").read_text())
    (state_dir / "state.json").write_text(json.dumps({**state, "live": "green"}))

    failed, report = switch(haproxy, state_dir)
    assert not failed
    assert (report["live"], report["on_disk"], report["changed"]) == ("blue", "green", False)
    assert "a reload or restart would move traffic to green" in report["disagreement"]

    failed, refused = switch(haproxy, state_dir, on_disagreement="fail")
    assert failed
    assert "HAProxy routes live traffic to blue but the map file" in refused["msg"]
    assert "says green" in refused["msg"]

    failed, repaired = switch(haproxy, state_dir, on_disagreement="repair")
    assert not failed, repaired
    assert (repaired["changed"], repaired["repaired"], repaired["live"]) == (True, True, "blue")
    assert on_disk(haproxy, state_dir) == ("live blue\n", "blue")
    assert haproxy.color_at(haproxy.live_port) == "blue"  # traffic never moved
    failed, again = switch(haproxy, state_dir, on_disagreement="fail")
    assert not failed
    assert again["changed"] is False
