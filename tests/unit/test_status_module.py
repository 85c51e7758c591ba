"""bluegreen_status: state files, HAProxy's view and each node's /version, in one read."""

from __future__ import annotations

import json
import os
import socket

import pytest

from tests.ansible_modules import dead_run, run_module
from tests.unit import haproxy_fixture
from tests.unit.node_fixture import running_nodes

HOLDER = {
    "deployment_id": "d7",
    "action": "deploy",
    "user": "alice",
    "host": socket.gethostname(),
    "pid": os.getpid(),
    "ttl_seconds": 3600,
}


@pytest.fixture
def nodes():
    with running_nodes(blue=["1.0.0", "1.0.0"], green=["1.1.0"]) as running:
        yield running


@pytest.fixture
def haproxy(tmp_path, nodes):
    with haproxy_fixture.running(
        tmp_path, nodes={color: [n.address for n in group] for color, group in nodes.items()}
    ) as lb:
        yield lb


@pytest.fixture
def state_dir(tmp_path):
    path = tmp_path / "state"
    for action, params in (
        ("init", {"live": "blue", "versions": {"blue": "1.0.0", "green": "1.1.0"}}),
        ("record", {"entry": {"action": "deploy", "from": "green", "to": "blue", "version": "1.0.0"}}),
        ("record", {"entry": {"action": "rollback", "from": "blue", "to": "green", "result": "ok"}}),
        ("record", {"entry": {"action": "deploy", "from": "green", "to": "blue", "version": "1.0.0"}}),
    ):
        failed, result = run_module("bluegreen_state", {"dir": str(path), "action": action, **params})
        assert not failed, result
    return path


def status(haproxy, state_dir, **extra):
    return run_module(
        "bluegreen_status",
        {"socket": haproxy.socket, "map": haproxy.live_map, "state_dir": str(state_dir), **extra},
    )


def test_status_reports_nodes_versions_lock_and_history(haproxy, nodes, state_dir):
    run_module("bluegreen_state", {"dir": str(state_dir), "action": "lock", "holder": HOLDER})
    deployment = {"id": "d7", "version": "1.2.0", "stage": "warm"}
    run_module(
        "bluegreen_state", {"dir": str(state_dir), "action": "update", "state": {"deployment": deployment}}
    )
    failed, result = status(haproxy, state_dir, history_lines=2)
    assert not failed, result
    assert result["changed"] is False
    s = result["status"]
    assert (s["live"], s["idle"], s["state_live"], s["agree"]) == ("blue", "green", "blue", True)
    assert s["lb"] == socket.gethostname()
    assert s["versions"] == {"blue": "1.0.0", "green": "1.1.0"}
    seen = [(n["name"], n["color"], n["address"], n["haproxy"], n["check"], n["version"]) for n in s["nodes"]]
    assert seen == [
        ("blue-1", "blue", nodes["blue"][0].address, "UP", "L7OK", "1.0.0"),
        ("blue-2", "blue", nodes["blue"][1].address, "UP", "L7OK", "1.0.0"),
        ("green-1", "green", nodes["green"][0].address, "UP", "L7OK", "1.1.0"),
    ]
    assert s["deployment"] == deployment
    assert s["lock"]["deployment_id"] == "d7"
    assert s["lock"]["stale"] is False
    assert [h["action"] for h in s["history"]] == ["rollback", "deploy"]  # the last two
    lines = result["lines"]
    assert lines[0] == "live   blue (1.0.0)"
    assert lines[1] == "idle   green (1.1.0), warm until n/a"
    green_line = next(line for line in lines if line.startswith("node   green-1"))
    assert "UP" in green_line and "version 1.1.0" in green_line
    assert f"lock   d7 (deploy) by alice@{socket.gethostname()} pid {os.getpid()} since" in "\n".join(lines)
    assert "deploy d7 at stage warm" in lines
    past = [line for line in lines if line.startswith("past ")]
    assert len(past) == 2
    assert "rollback blue->green" in past[0] and past[0].endswith("ok")


def test_disagreement_and_silent_nodes_are_shown(haproxy, nodes, state_dir):
    state = json.loads((state_dir / "state.json").read_text())
    (state_dir / "state.json").write_text(json.dumps({**state, "live": "green"}))
    nodes["green"][0].stop()
    failed, result = status(haproxy, state_dir, timeout=1.0, history_lines=0)
    assert not failed, result
    s = result["status"]
    assert (s["live"], s["state_live"], s["agree"]) == ("blue", "green", False)
    assert result["lines"][0] == "live   blue (1.0.0)   !! state.json says green"
    green = next(n for n in s["nodes"] if n["name"] == "green-1")
    assert green["version"] is None
    assert any(line.startswith("node   green-1") and "not answering" in line for line in result["lines"])
    assert s["history"] == []
    assert "lock   free" in result["lines"]
    assert "deploy none running" in result["lines"]


def test_a_map_file_that_would_move_traffic_on_reload_is_shown(haproxy, state_dir):
    """A controller that died between writing the map file and the runtime change."""
    failed, result = status(haproxy, state_dir, history_lines=0)
    assert not failed, result
    assert result["status"]["map_file_live"] == "blue"
    assert result["lines"][0] == "live   blue (1.0.0)"
    (haproxy.dir / "live.map").write_text("live green\n")
    failed, result = status(haproxy, state_dir, history_lines=0)
    assert not failed, result
    assert (result["status"]["live"], result["status"]["map_file_live"]) == ("blue", "green")
    assert "!! the map file says green: a reload would move traffic" in result["lines"][0]


def test_without_state_files_haproxy_is_still_reported(haproxy, tmp_path):
    failed, result = status(haproxy, tmp_path / "nothing-here")
    assert not failed, result
    s = result["status"]
    assert (s["live"], s["state_live"], s["agree"]) == ("blue", None, False)
    assert s["lock"] is None
    assert len(s["nodes"]) == 3


def test_corrupt_state_fails_naming_the_file(haproxy, state_dir):
    (state_dir / "state.json").write_text("{not json")
    failed, result = status(haproxy, state_dir)
    assert failed
    assert "state.json is not valid JSON" in result["msg"]
    assert "status on lb " in result["msg"]


def test_a_dead_run_shows_its_stage_its_stale_lock_and_its_recorded_failure(haproxy, state_dir):
    """What an operator sees after a controller died mid-run: the running deployment at its stage,
    marked abandoned because its lock is stale (holder gone), and the failure `fail` stored."""
    failure = {"stage": "validate", "check": "perf_p99", "host": "green via preview", "observed": "812 ms"}
    run, dead_pid = dead_run(state_dir, failure)
    failed, result = status(haproxy, state_dir)
    assert not failed, result
    s = result["status"]
    assert s["deployment"]["id"] == run["id"] and s["deployment"]["stage"] == "validate"
    assert s["lock"]["stale"] is True and str(dead_pid) in s["lock"]["stale_reason"]
    assert s["abandoned"] == {
        "run_id": run["id"],
        "action": "deploy",
        "stage": "validate",
        "reason": s["lock"]["stale_reason"],
    }
    assert {k: s["failure"][k] for k in failure} == failure
    lines = "\n".join(result["lines"])
    assert f"deploy {run['id']} at stage validate  ABANDONED: holder process {dead_pid}" in lines
    assert f'failed {run["id"]} in stage validate: check "perf_p99" on green via preview: 812 ms' in lines
    assert "STALE" in lines


def test_a_running_run_is_not_abandoned(haproxy, state_dir):
    controller = {"pid": os.getpid(), "user": "alice", "host": socket.gethostname()}
    run_module(
        "bluegreen_state",
        {
            "dir": str(state_dir),
            "action": "begin",
            "run_action": "switch",
            "color": "green",
            "controller": controller,
        },
    )
    failed, result = status(haproxy, state_dir)
    assert not failed and result["status"]["abandoned"] is None and result["status"]["failure"] is None
    assert "ABANDONED" not in "\n".join(result["lines"])
