"""bluegreen_state's run lifecycle (begin, stage, fail, end) on real state files."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from tests.ansible_modules import run_module

CONTROLLER = {"pid": os.getpid(), "user": "alice", "host": socket.gethostname(), "actor": None}


def call(directory, action, check_mode=False, **params):
    return run_module(
        "bluegreen_state", {"dir": str(directory), "action": action, **params}, check_mode=check_mode
    )


@pytest.fixture
def lab(tmp_path):
    """A state dir as site.yml leaves it: blue live on 1.0.0, green idle on 1.0.0."""
    failed, _ = call(tmp_path, "init", live="blue", versions={"blue": "1.0.0", "green": "1.0.0"})
    assert not failed
    return tmp_path


def begin(directory, run_action="deploy", **params):
    params.setdefault("controller", CONTROLLER)
    if run_action == "deploy":
        params.setdefault("version", "1.1.0")
    failed, result = call(directory, "begin", run_action=run_action, **params)
    assert not failed, result
    return result


def state_file(directory) -> dict:
    return json.loads((directory / "state.json").read_text())


def history(directory) -> list[dict]:
    return [json.loads(line) for line in (directory / "history.jsonl").read_text().splitlines()]


def test_begin_takes_the_lock_writes_the_deployment_and_returns_the_run(lab):
    result = begin(lab)
    run = result["run"]
    assert (run["action"], run["version"], run["from"], run["to"], run["idle"]) == (
        "deploy",
        "1.1.0",
        "blue",
        "green",
        "green",
    )
    assert run["versions_before"] == {"blue": "1.0.0", "green": "1.0.0"}
    assert run["id"].split("-")[1] == "1.1.0" and run["token"]
    lock = json.loads((lab / "deploy.lock").read_text())
    assert (lock["deployment_id"], lock["token"], lock["pid"], lock["host"]) == (
        run["id"],
        run["token"],
        os.getpid(),
        socket.gethostname(),
    )
    deployment = state_file(lab)["deployment"]
    assert (deployment["id"], deployment["stage"], deployment["from"], deployment["to"]) == (
        run["id"],
        "preflight",
        "blue",
        "green",
    )
    assert "preflight" in deployment["marks"]
    event = result["bluegreen_event"]
    assert (event["type"], event["run_id"], event["action"], event["stage"]) == (
        "run_start",
        run["id"],
        "deploy",
        "preflight",
    )
    assert (event["version"], event["from"], event["to"]) == ("1.1.0", "blue", "green")
    assert event["time"]


def test_two_runs_begun_in_one_second_with_the_same_version_get_different_ids(tmp_path):
    ids = set()
    for n in range(5):
        directory = tmp_path / str(n)
        call(directory, "init", live="blue", versions={"blue": "1.0.0", "green": "1.0.0"})
        ids.add(begin(directory)["run"]["id"])
    assert len(ids) == 5


def test_a_second_begin_is_refused_naming_the_first(lab):
    first = begin(lab)["run"]
    failed, result = call(
        lab, "begin", run_action="deploy", version="1.1.0", controller={**CONTROLLER, "user": "bob"}
    )
    assert failed
    assert f"held by deployment {first['id']}" in result["msg"] and "alice" in result["msg"]
    assert state_file(lab)["deployment"]["id"] == first["id"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"run_action": "deploy", "controller": CONTROLLER}, "bluegreen_version is required: expected x.y.z"),
        (
            {"run_action": "deploy", "version": "1.2.0\n", "controller": CONTROLLER},
            "bluegreen_version '1.2.0\\n' is not a release version",
        ),
        (
            {"run_action": "switch", "color": "purple", "controller": CONTROLLER},
            'must be blue or green, got "purple"',
        ),
        ({"run_action": "rollback", "controller": {**CONTROLLER, "pid": "12"}}, "controller.pid"),
        ({"run_action": "retire", "controller": {**CONTROLLER, "host": ""}}, "controller.host"),
    ],
)
def test_begin_refuses_bad_input_naming_it_and_changes_nothing(lab, params, message):
    before = (lab / "state.json").read_text()
    failed, result = call(lab, "begin", **params)
    assert failed
    assert message in result["msg"]
    assert not (lab / "deploy.lock").exists()
    assert (lab / "state.json").read_text() == before


def test_begin_without_a_state_says_run_site(tmp_path):
    failed, result = call(tmp_path, "begin", run_action="deploy", version="1.1.0", controller=CONTROLLER)
    assert failed and "playbooks/site.yml" in result["msg"]
    assert not (tmp_path / "deploy.lock").exists()


@pytest.mark.parametrize(
    ("run_action", "color", "expected"),
    [
        ("switch", "green", ("blue", "green")),
        ("rollback", None, ("blue", "green")),
        ("retire", None, ("green", None)),
    ],
)
def test_begin_computes_from_and_to(lab, run_action, color, expected):
    run = begin(lab, run_action, color=color)["run"]
    assert (run["from"], run["to"]) == expected
    assert run["version"] == "1.0.0"


def test_stage_fail_end_of_a_failed_deploy(lab):
    run = begin(lab)["run"]
    failed, entered = call(lab, "stage", run=run, stage="provision")
    assert not failed and entered["entered"] and entered["bluegreen_event"]["type"] == "stage_start"
    assert state_file(lab)["deployment"]["stage"] == "provision"
    call(lab, "stage", run=run, stage="validate")
    failure = {"stage": "validate", "check": "health_ready", "host": "green-1", "observed": "503 after 30s"}
    failed, first = call(lab, "fail", run=run, failure=failure)
    assert not failed and first["first"] and first["changed"]
    assert (
        first["bluegreen_event"]["type"] == "failure" and first["bluegreen_event"]["check"] == "health_ready"
    )
    # the first failure wins: a later one (e.g. every host of a play in its rescue) changes nothing
    failed, second = call(lab, "fail", run=run, failure={**failure, "check": "later", "host": "green-2"})
    assert not failed and not second["first"] and second["failure"]["check"] == "health_ready"
    assert second["bluegreen_event"] is None
    stored = state_file(lab)["failure"]
    assert {k: stored[k] for k in ("run_id", "stage", "check", "host", "observed")} == {
        "run_id": run["id"],
        **failure,
    }
    # a failed run enters no further stage, and says why
    failed, skipped = call(lab, "stage", run=run, stage="switch")
    assert not failed and not skipped["entered"] and skipped["failure"]["check"] == "health_ready"
    assert skipped["bluegreen_event"] is None
    failed, ended = call(lab, "end", run=run)
    assert not failed and ended["failed_run"] and ended["result"] == "failed"
    assert ended["message"] == (
        'deploy of 1.1.0 failed in stage validate: check "health_ready" on green-1: 503 after 30s. '
        "Traffic never moved: blue stays live."
    )
    assert ended["bluegreen_event"]["type"] == "run_end"
    line = history(lab)[-1]
    assert (line["deployment_id"], line["result"], line["failure"]["check"]) == (
        run["id"],
        "failed",
        "health_ready",
    )
    assert set(line["durations_s"]) == {"preflight", "provision", "validate", "total"}
    assert not (lab / "deploy.lock").exists()
    after = state_file(lab)
    assert after["deployment"] is None
    assert after["failure"]["check"] == "health_ready"  # still there for status.yml and the dashboard


def test_a_deploy_failing_past_the_switch_is_rolled_back_and_says_so(lab):
    run = begin(lab)["run"]
    for stage in ("provision", "validate", "switch", "watch"):
        call(lab, "stage", run=run, stage=stage)
    call(
        lab,
        "fail",
        run=run,
        failure={"stage": "watch", "check": "error_rate", "host": "lb-1", "observed": "0.5"},
    )
    failed, ended = call(lab, "end", run=run)
    assert not failed and ended["result"] == "rolled-back"
    assert ended["message"].endswith("Rolled back: blue is live again.")
    # a new run starts without the old failure
    run = begin(lab)["run"]
    assert state_file(lab)["failure"] is None
    call(lab, "stage", run=run, stage="switch")
    call(
        lab,
        "fail",
        run=run,
        failure={"stage": "watch", "check": "error_rate", "host": "lb-1", "observed": "0.5"},
    )
    failed, ended = call(lab, "end", run=run, rollback_error="socket gone")
    assert ended["message"].endswith("ROLLBACK FAILED: socket gone; traffic may still be on green.")
    assert history(lab)[-1]["rollback_error"] == "socket gone"


def test_a_successful_switch_ends_ok(lab):
    run = begin(lab, "switch", color="green")["run"]
    failed, ended = call(lab, "end", run=run, entry={"runtime_ms": 3})
    assert not failed and not ended["failed_run"] and ended["result"] == "ok"
    assert "blue -> green" in ended["message"]
    assert history(lab)[-1]["runtime_ms"] == 3 and history(lab)[-1]["action"] == "switch"


def test_another_run_cannot_stage_fail_or_end_this_one(lab):
    run = begin(lab)["run"]
    impostor = {**run, "token": "0" * 16}  # same id, pid and host: still another run
    for action, params in (
        ("stage", {"stage": "provision"}),
        ("fail", {"failure": {"stage": "x", "check": "y", "host": "z", "observed": "w"}}),
        ("end", {}),
    ):
        failed, result = call(lab, action, run=impostor, **params)
        assert failed, action
        assert (
            f"does not hold the deploy lock: the deploy lock is held by deployment {run['id']}"
            in result["msg"]
        )
    assert json.loads((lab / "deploy.lock").read_text())["token"] == run["token"]
    assert state_file(lab)["failure"] is None


def test_end_of_a_run_that_never_began_only_says_what_failed(lab):
    failure = {
        "stage": "preflight",
        "check": "Check the release",
        "host": "lb-1",
        "observed": "unknown release",
    }
    failed, ended = call(lab, "end", run={"action": "deploy", "version": "9.9.9"}, failure=failure)
    assert not failed and not ended["changed"] and ended["failed_run"]
    assert ended["message"] == (
        'deploy of 9.9.9 failed in stage preflight: check "Check the release" on lb-1: unknown release. '
        "Nothing was changed."
    )
    failed, ended = call(lab, "end", run={"action": "switch", "to": "green"}, failure=failure)
    assert ended["message"].endswith("the live color stays live.")
    assert not (lab / "history.jsonl").exists()


def test_a_killed_run_is_recorded_as_abandoned_when_its_stale_lock_is_broken(lab):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    killed = begin(lab, controller={**CONTROLLER, "pid": dead.pid})["run"]
    call(lab, "stage", run=killed, stage="validate")
    failed, result = call(lab, "read")
    assert result["lock"]["stale"] and result["state"]["deployment"]["stage"] == "validate"
    # not broken unless asked, and never a live lock
    failed, result = call(lab, "begin", run_action="deploy", version="1.1.0", controller=CONTROLLER)
    assert failed and "bluegreen_break_lock=true" in result["msg"]
    result = begin(lab, break_lock=True)
    assert result["broken_lock"]["deployment_id"] == killed["id"]
    abandoned = result["abandoned"]
    assert (abandoned["deployment_id"], abandoned["result"], abandoned["failure"]["stage"]) == (
        killed["id"],
        "abandoned",
        "validate",
    )
    assert str(dead.pid) in abandoned["failure"]["observed"]
    assert [h["action"] for h in history(lab)] == ["break-lock", "deploy"]
    assert state_file(lab)["deployment"]["id"] == result["run"]["id"]


def test_check_mode_begin_refuses_as_a_real_one_and_writes_nothing(lab):
    before = (lab / "state.json").read_text()
    failed, result = call(
        lab, "begin", check_mode=True, run_action="deploy", version="1.1.0", controller=CONTROLLER
    )
    assert not failed and result["run"]["to"] == "green"
    assert not (lab / "deploy.lock").exists() and (lab / "state.json").read_text() == before
    begin(lab)
    failed, result = call(
        lab, "begin", check_mode=True, run_action="deploy", version="1.1.0", controller=CONTROLLER
    )
    assert failed and "held by deployment" in result["msg"]
