"""bluegreen_state: state.json, history.jsonl and the deploy lock."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

from ansible.module_utils.bluegreen_state import StateDir

from tests.ansible_modules import run_module
from tests.conftest import REPO

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


# --- correctness of the lock under races (issue 14, item 6) -------------------------------------


def test_same_deployment_id_from_another_process_is_refused_naming_the_first(tmp_path):
    """An equal deployment id is not proof of holding the lock: another pid (or token) is another run."""
    failed, result = state(tmp_path, "lock", holder={**HOLDER, "token": "t1", "ttl_seconds": 3600})
    assert not failed and result["changed"]
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        second = {**HOLDER, "token": "t2", "pid": other.pid, "user": "bob"}
        failed, result = state(tmp_path, "lock", holder=second)
    finally:
        other.kill()
        other.wait()
    assert failed
    for word in ("d1", "alice", str(os.getpid()), socket.gethostname()):
        assert word in result["msg"]
    assert json.loads((tmp_path / "deploy.lock").read_text())["pid"] == os.getpid()
    # and the same pid with another token is another run too
    failed, result = state(tmp_path, "lock", holder={**HOLDER, "token": "t3"})
    assert failed and "d1" in result["msg"]


def test_breaking_a_live_lock_is_refused_even_when_asked(tmp_path):
    state(tmp_path, "lock", holder={**HOLDER, "ttl_seconds": 3600})  # this test's process: alive
    failed, result = state(tmp_path, "lock", holder={**HOLDER, "deployment_id": "d2"}, break_lock=True)
    assert failed
    assert "not stale" in result["msg"] and "d1" in result["msg"]
    assert json.loads((tmp_path / "deploy.lock").read_text())["deployment_id"] == "d1"
    assert not (tmp_path / "history.jsonl").exists()  # nothing was broken, so nothing recorded


BREAKER = """
import json, os, sys, time
from pathlib import Path
from tests.ansible_modules import run_module
directory, gate, number, pid = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
holder = {"deployment_id": f"breaker-{number}", "token": f"token-{number}", "action": "deploy",
          "user": f"operator-{number}", "host": os.uname().nodename, "pid": pid, "ttl_seconds": 3600}
while not gate.exists():
    time.sleep(0.001)
failed, result = run_module("bluegreen_state", {"dir": directory, "action": "lock", "holder": holder,
                                                "break_lock": True})
print(json.dumps({"failed": failed, "msg": result.get("msg"), "broken": bool(result.get("broken_lock"))}))
"""


def test_operators_breaking_one_stale_lock_at_once_exactly_one_wins(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    state(tmp_path, "lock", holder={**HOLDER, "pid": dead.pid})
    gate = tmp_path / "gate"
    # every breaker names this (living) test process as its holder, so a won lock is not stale
    breakers = [
        subprocess.Popen(
            [sys.executable, "-c", BREAKER, str(tmp_path), str(gate), str(n), str(os.getpid())],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(6)
    ]
    time.sleep(3)  # all of them imported Ansible and wait at the gate
    gate.touch()
    results = [json.loads(b.communicate(timeout=120)[0].strip().splitlines()[-1]) for b in breakers]
    winners = [r for r in results if not r["failed"]]
    assert len(winners) == 1, results
    assert all("held by deployment breaker-" in r["msg"] for r in results if r["failed"]), results
    lock = json.loads((tmp_path / "deploy.lock").read_text())
    assert lock["deployment_id"].startswith("breaker-")
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [h["broken_lock"]["deployment_id"] for h in history if h["action"] == "break-lock"] == ["d1"]


TAKER = """
import sys
from tests.conftest import REPO  # noqa: F401  (our module_utils on ansible.module_utils' path)
from ansible.module_utils.bluegreen_state import StateDir
directory, rounds, pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
store = StateDir(directory)
for n in range(rounds):
    store.acquire({"deployment_id": f"run-{n}", "token": f"t{n}", "action": "deploy", "user": "u",
                   "host": "h", "pid": pid, "ttl_seconds": 3600, "padding": "x" * 4000})
    store.release(f"run-{n}")
"""


def test_a_reader_polling_during_takes_never_sees_a_partial_lock(tmp_path):
    """The lock appears whole or not at all: a reader never calls a half-written lock stale."""
    store = StateDir(str(tmp_path))
    taker = subprocess.Popen([sys.executable, "-c", TAKER, str(tmp_path), "400", str(os.getpid())], cwd=REPO)
    seen, partial = 0, []
    try:
        while taker.poll() is None:
            lock = store.lock_info()
            if lock is not None:
                seen += 1
                if "deployment_id" not in lock or lock.get("stale"):
                    partial.append(lock)
    finally:
        taker.wait(timeout=120)
    assert taker.returncode == 0
    assert seen > 0  # the reader did see locks while they were held
    assert partial == [], partial[:3]
