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


# --- several lbs: bluegreen_status_lbs puts their statuses together and says whether they agree --------


@pytest.fixture
def second_lb(tmp_path, nodes):
    """A second HAProxy in front of the same nodes, with a state dir of its own (as lb-2 has)."""
    (tmp_path / "lb-2").mkdir()
    with haproxy_fixture.running(
        tmp_path / "lb-2", nodes={color: [n.address for n in group] for color, group in nodes.items()}
    ) as lb:
        state = tmp_path / "lb-2" / "state"
        init = {"live": "blue", "versions": {"blue": "1.0.0", "green": "1.1.0"}}
        failed, result = run_module("bluegreen_state", {"dir": str(state), "action": "init", **init})
        assert not failed, result
        yield lb, state


def together(statuses: dict, lbs: list[str] | None = None) -> dict:
    failed, result = run_module(
        "bluegreen_status_lbs", {"statuses": statuses, "lbs": lbs or list(statuses), "anchor": "lb-1"}
    )
    assert not failed, result
    assert result["changed"] is False
    assert result["bluegreen_event"] == {
        "type": "status",
        "status": result["status"],
        "lines": result["lines"],
    }
    return result


def test_one_lb_shows_as_before(haproxy, state_dir):
    one = status(haproxy, state_dir, history_lines=1)[1]
    result = together({"lb-1": one["status"]})
    assert result["agree"] is True
    assert result["lines"] == one["lines"]
    assert result["status"]["live"] == "blue" and result["status"]["live_by_lb"] == {"lb-1": "blue"}
    assert result["status"]["lock"] is None  # the anchor's own fields stay at the top


def test_two_lbs_that_agree_show_each_lbs_live_color(haproxy, state_dir, second_lb):
    lb2, lb2_state = second_lb
    run_module("bluegreen_state", {"dir": str(state_dir), "action": "lock", "holder": HOLDER})
    statuses = {
        "lb-1": status(haproxy, state_dir, history_lines=1)[1]["status"],
        "lb-2": status(lb2, lb2_state, history_lines=1)[1]["status"],
    }
    result = together(statuses)
    s, lines = result["status"], result["lines"]
    assert (result["agree"], s["lbs_agree"], s["lbs_disagreement"]) == (True, True, [])
    assert (s["live"], s["anchor"], s["live_by_lb"]) == ("blue", "lb-1", {"lb-1": "blue", "lb-2": "blue"})
    assert s["lbs"] == statuses
    assert s["lock"]["deployment_id"] == "d7"  # the anchor's lock, at the top as for one lb
    assert lines[0] == "lbs    2 load balancers, all serve blue: lb-1 blue, lb-2 blue"
    assert lines[1] == "-- lb-1 (anchor: lock, running deployment, history)"
    second = lines.index("-- lb-2")
    assert lines[2] == lines[second + 1] == "live   blue (1.0.0)"
    assert any(line.startswith("lock   d7") for line in lines[:second])
    # the other lb shows what is its own (live, idle, its view of the nodes), not the run's record
    assert [line.split()[0] for line in lines[second + 1 :]] == ["live", "idle", "node", "node", "node"]


def test_two_lbs_on_different_colors_are_flagged_in_text_json_and_event(haproxy, state_dir, second_lb):
    lb2, lb2_state = second_lb
    # lb-2 alone switched to green (HAProxy's map at runtime and state.json), lb-1 still serves blue
    assert lb2.command(f"set map {lb2.live_map} live green").strip() == ""
    state = json.loads((lb2_state / "state.json").read_text())
    (lb2_state / "state.json").write_text(json.dumps({**state, "live": "green"}))
    assert "live green" in lb2.command(f"show map {lb2.live_map}")  # traffic really is split
    assert "live blue" in haproxy.command(f"show map {haproxy.live_map}")
    statuses = {
        "lb-1": status(haproxy, state_dir, history_lines=0)[1]["status"],
        "lb-2": status(lb2, lb2_state, history_lines=0)[1]["status"],
    }
    result = together(statuses)
    s, lines = result["status"], result["lines"]
    assert result["agree"] is False and s["lbs_agree"] is False
    assert s["lbs_disagreement"] == [
        "live color in HAProxy differs: lb-1 blue, lb-2 green",
        "live color in state.json differs: lb-1 blue, lb-2 green",
    ]
    assert (s["live"], s["idle"]) == (None, None)  # no one live color
    assert s["live_by_lb"] == {"lb-1": "blue", "lb-2": "green"}
    assert lines[:3] == [
        "lbs    2 load balancers: lb-1 blue, lb-2 green",
        "!! LBS DISAGREE: live color in HAProxy differs: lb-1 blue, lb-2 green",
        "!! LBS DISAGREE: live color in state.json differs: lb-1 blue, lb-2 green",
    ]
    assert result["bluegreen_event"]["status"]["lbs_agree"] is False


def test_versions_that_differ_and_an_lb_without_status_are_disagreements(haproxy, state_dir, second_lb):
    lb2, lb2_state = second_lb
    state = json.loads((lb2_state / "state.json").read_text())
    (lb2_state / "state.json").write_text(
        json.dumps({**state, "versions": {"blue": "1.0.0", "green": "1.2.0"}})
    )
    statuses = {
        "lb-1": status(haproxy, state_dir, history_lines=0)[1]["status"],
        "lb-2": status(lb2, lb2_state, history_lines=0)[1]["status"],
    }
    result = together(statuses, ["lb-1", "lb-2", "lb-3"])
    assert result["status"]["lbs_disagreement"] == [
        "no status from lb-3 (unreachable, or its status could not be read)",
        "versions in state.json differs: lb-1 blue 1.0.0/green 1.1.0, lb-2 blue 1.0.0/green 1.2.0",
    ]
    assert result["status"]["live_by_lb"] == {"lb-1": "blue", "lb-2": "blue", "lb-3": None}
    assert result["lines"][0] == "lbs    3 load balancers: lb-1 blue, lb-2 blue, lb-3 none"
    assert result["lines"][-2:] == ["-- lb-3", "no status"]


def test_a_status_of_an_lb_not_in_the_play_is_refused(haproxy, state_dir):
    one = status(haproxy, state_dir)[1]["status"]
    failed, result = run_module(
        "bluegreen_status_lbs", {"statuses": {"lb-9": one}, "lbs": ["lb-1"], "anchor": "lb-1"}
    )
    assert failed
    assert "lb-9" in result["msg"]
