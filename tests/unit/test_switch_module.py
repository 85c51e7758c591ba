"""bluegreen_switch against a real HAProxy: disk first, then one runtime change, verified."""

from __future__ import annotations

import json

import pytest

from tests.ansible_modules import run_module
from tests.unit import haproxy_fixture


@pytest.fixture
def haproxy(tmp_path):
    with haproxy_fixture.running(tmp_path) as lb:
        yield lb


@pytest.fixture
def state_dir(tmp_path):
    path = tmp_path / "state"
    path.mkdir()
    (path / "state.json").write_text(
        json.dumps({"live": "blue", "versions": {"blue": "1.0.0", "green": "1.1.0"}})
    )
    return path


def args(haproxy, state_dir, **extra):
    return {"socket": haproxy.socket, "map": haproxy.live_map, "state_dir": str(state_dir), **extra}


def test_query_reports_live_color_without_change(haproxy, state_dir):
    failed, result = run_module("bluegreen_switch", args(haproxy, state_dir))
    assert not failed
    assert result["changed"] is False
    assert result["live"] == "blue"
    assert result["on_disk"] == "blue"


def test_switch_moves_traffic_and_records_it_on_disk(haproxy, state_dir):
    failed, result = run_module("bluegreen_switch", args(haproxy, state_dir, color="green"))
    assert not failed, result
    assert result["changed"] is True
    assert (result["previous"], result["live"]) == ("blue", "green")
    assert result["runtime_ms"] < 1000
    assert haproxy.color_at(haproxy.live_port) == "green"
    assert haproxy.color_at(haproxy.preview_port) == "blue"
    assert (haproxy.dir / "live.map").read_text() == "live green\n"
    state = json.loads((state_dir / "state.json").read_text())
    assert (state["live"], state["previous"]) == ("green", "blue")
    assert state["versions"] == {"blue": "1.0.0", "green": "1.1.0"}
    assert state["warm_until"].endswith("Z")
    # the same switch again changes nothing
    failed, again = run_module("bluegreen_switch", args(haproxy, state_dir, color="green"))
    assert not failed
    assert again["changed"] is False


def test_check_mode_shows_diff_and_changes_nothing(haproxy, state_dir):
    before = (state_dir / "state.json").read_text()
    failed, result = run_module("bluegreen_switch", args(haproxy, state_dir, color="green"), check_mode=True)
    assert not failed
    assert result["changed"] is True
    assert result["diff"] == {
        "before": "live blue\n",
        "after": "live green\n",
        "before_header": haproxy.live_map,
    }
    assert haproxy.color_at(haproxy.live_port) == "blue"
    assert (haproxy.dir / "live.map").read_text() == "live blue\n"
    assert (state_dir / "state.json").read_text() == before


def test_restart_after_switch_keeps_live_color(haproxy, state_dir):
    run_module("bluegreen_switch", args(haproxy, state_dir, color="green"))
    haproxy_fixture.restart(haproxy)
    assert haproxy.color_at(haproxy.live_port) == "green"
    assert haproxy.color_at(haproxy.preview_port) == "blue"


def test_unreachable_haproxy_fails_with_host_and_reason(tmp_path, state_dir):
    failed, result = run_module(
        "bluegreen_switch",
        {"socket": str(tmp_path / "missing.sock"), "map": str(tmp_path / "live.map"), "color": "green"},
    )
    assert failed
    assert "cannot read the live color" in result["msg"]
    assert "missing.sock" in result["msg"]
    assert "lb " in result["msg"]
