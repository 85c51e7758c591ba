"""bluegreen_state: state.json, history.jsonl and the deploy lock."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from tests.ansible_modules import run_module

HOLDER = {
    "deployment_id": "d1",
    "action": "deploy",
    "user": "alice",
    "host": socket.gethostname(),
    "pid": os.getpid(),
}


def state(tmp_path, action, **params):
    return run_module("bluegreen_state", {"dir": str(tmp_path), "action": action, **params})


def test_init_writes_once_and_read_returns_it(tmp_path):
    failed, result = state(tmp_path, "init", live="blue", versions={"blue": "1.0.0", "green": "1.0.0"})
    assert not failed and result["changed"]
    assert result["state"]["live"] == "blue"
    assert result["state"]["versions"] == {"blue": "1.0.0", "green": "1.0.0"}
    failed, again = state(tmp_path, "init", live="green")
    assert not failed and not again["changed"]
    assert json.loads((tmp_path / "state.json").read_text())["live"] == "blue"
    assert not list(tmp_path.glob(".tmp-*"))  # atomic write left no temp file


def test_update_merges_versions_and_refuses_live(tmp_path):
    state(tmp_path, "init", live="blue", versions={"blue": "1.0.0", "green": "1.0.0"})
    failed, result = state(tmp_path, "update", state={"versions": {"green": "1.1.0"}})
    assert not failed and result["changed"]
    assert result["state"]["versions"] == {"blue": "1.0.0", "green": "1.1.0"}
    failed, result = state(tmp_path, "update", state={"live": "green"})
    assert failed
    assert "bluegreen_switch" in result["msg"]


def test_update_without_state_says_run_site(tmp_path):
    failed, result = state(tmp_path, "update", state={"versions": {"green": "1.1.0"}})
    assert failed
    assert "site.yml" in result["msg"]


def test_second_lock_is_refused_naming_the_holder(tmp_path):
    failed, result = state(tmp_path, "lock", holder={**HOLDER, "ttl_seconds": 3600})
    assert not failed and result["changed"]
    failed, result = state(tmp_path, "lock", holder={**HOLDER, "deployment_id": "d2", "user": "bob"})
    assert failed
    for word in ("d1", "alice", str(os.getpid()), socket.gethostname()):
        assert word in result["msg"]
    # the same deployment may ask again
    failed, result = state(tmp_path, "lock", holder=HOLDER)
    assert not failed and not result["changed"]


def test_dead_holder_makes_a_stale_lock_broken_only_when_asked(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    state(tmp_path, "lock", holder={**HOLDER, "pid": dead.pid})
    failed, result = state(tmp_path, "read")
    assert result["lock"]["stale"] is True
    assert str(dead.pid) in result["lock"]["stale_reason"]
    failed, result = state(tmp_path, "lock", holder={**HOLDER, "deployment_id": "d2"})
    assert failed
    assert "bluegreen_break_lock=true" in result["msg"]
    failed, result = state(tmp_path, "lock", holder={**HOLDER, "deployment_id": "d2"}, break_lock=True)
    assert not failed
    assert result["broken_lock"]["deployment_id"] == "d1"
    assert result["lock"]["deployment_id"] == "d2"
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert history[-1]["action"] == "break-lock"
    assert history[-1]["broken_lock"]["deployment_id"] == "d1"


def test_lock_over_ttl_is_stale(tmp_path):
    state(tmp_path, "lock", holder={**HOLDER, "ttl_seconds": 0})
    failed, result = state(tmp_path, "read")
    assert not failed
    assert result["lock"]["stale"] is True
    assert "TTL" in result["lock"]["stale_reason"]


def test_unlock_only_by_the_holder(tmp_path):
    state(tmp_path, "lock", holder=HOLDER)
    failed, result = state(tmp_path, "unlock", deployment_id="other")
    assert failed
    assert "d1" in result["msg"]
    failed, result = state(tmp_path, "unlock", deployment_id="d1")
    assert not failed and result["changed"]
    assert result["lock"] is None
    assert not (tmp_path / "deploy.lock").exists()


def test_record_appends_history_and_read_returns_last(tmp_path):
    for n in range(5):
        state(tmp_path, "record", entry={"action": "deploy", "n": n})
    with (tmp_path / "history.jsonl").open("a") as fh:
        fh.write('{"torn')  # a crash mid-append must not hide the rest
    failed, result = state(tmp_path, "read", history_lines=3)
    assert not failed
    assert [e["n"] for e in result["history"]] == [3, 4]
    assert all("at" in e for e in result["history"])


def test_check_mode_writes_nothing(tmp_path):
    failed, result = run_module(
        "bluegreen_state", {"dir": str(tmp_path), "action": "init", "live": "blue"}, check_mode=True
    )
    assert not failed and result["changed"]
    assert not (tmp_path / "state.json").exists()
    failed, result = run_module(
        "bluegreen_state", {"dir": str(tmp_path), "action": "lock", "holder": HOLDER}, check_mode=True
    )
    assert not failed and result["changed"]
    assert not (tmp_path / "deploy.lock").exists()
