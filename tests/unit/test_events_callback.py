"""The progress callback (plugins/callback/bluegreen_events.py): its event logic, and a real playbook run."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import REPO, VENV_BIN, run_playbook

PYTHON = ("-e", f"ansible_python_interpreter={sys.executable}")

CALLBACK = REPO / "plugins/callback/bluegreen_events.py"
_spec = importlib.util.spec_from_file_location("bluegreen_events", CALLBACK)
events_callback = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(events_callback)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(name: str, node: str, verdict: str) -> dict:
    return {"name": name, "node": node, "observed": 1, "threshold": 0, "op": "==", "verdict": verdict}


def test_stages_close_with_their_result_and_duration_and_each_event_counts_once() -> None:
    clock, out = Clock(), []
    log = events_callback.EventLog(out.append, clock=clock)
    log.playbook_start("deploy.yml")
    start = {"type": "run_start", "run_id": "r1", "action": "deploy", "stage": "preflight", "time": 5}
    for _lb in ("lb-1", "lb-2"):  # every lb host returns the same event
        log.module_events({"bluegreen_event": start})
    log.module_events({"bluegreen_event": {"type": "stage_start", "run_id": "r1", "stage": "preflight"}})
    clock.now += 2.5
    log.module_events({"bluegreen_event": [{"type": "stage_start", "run_id": "r1", "stage": "validate"}]})
    checks = {"type": "checks", "run_id": "r1", "stage": "validate"}
    checks["records"] = [record("health_ready", "green-1", "pass"), record("perf_p99_ms", "green", "fail")]
    log.module_events({"bluegreen_event": checks})
    log.module_events({"bluegreen_event": checks})
    failure = {"type": "failure", "run_id": "r1", "stage": "validate", "check": "perf_p99_ms"}
    log.module_events({"bluegreen_event": failure})
    log.module_events({"bluegreen_event": {**failure, "check": "a later one"}})  # first failure wins
    log.task_failed("lb-1", "Judge the checks", "ansible.builtin.assert", "perf_p99_ms failed")
    clock.now += 4
    log.module_events({"bluegreen_event": {"type": "run_end", "run_id": "r1", "result": "failed"}})
    log.module_events({"changed": False})  # a result without events adds nothing
    log.playbook_end({"lb-1": {"ok": 3, "changed": 1, "failures": 1, "unreachable": 0}})

    kinds = [(e["type"], e.get("stage"), e.get("result")) for e in out]
    assert kinds == [
        ("playbook_start", None, None),
        ("run_start", "preflight", None),
        ("stage_start", "preflight", None),
        ("stage_end", "preflight", "ok"),
        ("stage_start", "validate", None),
        ("check", "validate", None),
        ("check", "validate", None),
        ("failure", "validate", None),
        ("task_failed", "validate", None),
        ("stage_end", "validate", "failed"),
        ("run_end", None, "failed"),
        ("playbook_end", None, "failed"),
    ]
    assert [e["seq"] for e in out] == list(range(1, len(out) + 1))
    assert out[3]["duration_s"] == 2.5
    assert out[9]["duration_s"] == 4.0
    assert out[1]["time"] == 1000.0  # the module's own "time" gives way to the callback's clock
    assert [(e["name"], e["node"], e["verdict"]) for e in out[5:7]] == [
        ("health_ready", "green-1", "pass"),
        ("perf_p99_ms", "green", "fail"),
    ]
    assert out[7]["check"] == "perf_p99_ms"


def test_a_real_playbook_writes_the_events_file(tmp_path: Path) -> None:
    """ansible-playbook with the project's ansible.cfg: events from results, a failure, the stats."""
    playbook = tmp_path / "progress.yml"
    playbook.write_text(
        textwrap.dedent(
            """\
            - name: Emit progress
              hosts: localhost
              gather_facts: false
              vars:
                bluegreen_event: {type: stage_start, run_id: t1, stage: validate}
              tasks:
                - name: A result that carries an event
                  ansible.builtin.debug:
                    var: bluegreen_event
                - name: A task that fails for real
                  ansible.builtin.command: /bin/false
                  changed_when: false
            """
        )
    )
    run = run_playbook(playbook, "-i", "localhost,", "-c", "local", *PYTHON, timeout=120)
    assert run.returncode == 2, run.tail()
    events = run.events
    assert [e["type"] for e in events] == [
        "playbook_start",
        "stage_start",
        "task_failed",
        "stage_end",
        "playbook_end",
    ]
    assert events[0]["playbook"] == "progress.yml"
    failed = events[2]
    assert failed["action"] == "ansible.builtin.command"
    assert (failed["host"], failed["stage"]) == ("localhost", "validate")
    assert "non-zero return code" in failed["message"]
    assert events[3]["result"] == "failed"  # the playbook failed while the stage was open: it stopped there
    assert events[4]["result"] == "failed"
    assert events[4]["hosts"]["localhost"]["failures"] == 1


def test_diffs_the_stderr_of_a_failed_command_and_each_lbs_status_are_events(tmp_path: Path) -> None:
    """What people read in Ansible's output is in the events too: --diff's text (check mode included),
    the stderr of a command that failed beside its message, and the status each lb host reports."""
    target = tmp_path / "live.map"
    target.write_text("live blue\n")
    playbook = tmp_path / "shown.yml"
    playbook.write_text(
        textwrap.dedent(
            f"""\
            - name: Show what people read
              hosts: localhost
              gather_facts: false
              tasks:
                - name: Report the status, as two lbs would
                  ansible.builtin.debug:
                    var: bluegreen_event
                  loop: [lb-1, lb-2]
                  vars:
                    bluegreen_event:
                      type: status
                      status: {{live: blue}}
                      lines: ["lock   STALE {{{{ item }}}}"]
                - name: Would point live elsewhere
                  ansible.builtin.copy:
                    content: "live green\\n"
                    dest: {target}
                    mode: "0644"
                - name: A command that says why it failed on stderr
                  ansible.builtin.shell: echo "line 7 timeout client notatime" >&2; exit 3
                  changed_when: false
                  check_mode: false
            """
        )
    )
    run = run_playbook(playbook, "-i", "localhost,", "-c", "local", *PYTHON, "--check", "--diff", timeout=120)
    assert run.returncode == 2, run.tail()
    assert target.read_text() == "live blue\n"  # check mode: nothing written
    assert [line for e in run.of_type("status") for line in e["lines"]] == [
        "lock   STALE lb-1",
        "lock   STALE lb-2",
    ]
    (diff,) = run.of_type("diff")
    assert (diff["host"], diff["task"]) == ("localhost", "Would point live elsewhere")
    assert "-live blue" in diff["diff"] and "+live green" in diff["diff"]
    (failed,) = run.of_type("task_failed")
    assert "non-zero return code" in failed["message"]
    assert failed["stderr"] == "line 7 timeout client notatime"


def test_without_a_path_the_callback_writes_nothing(tmp_path: Path) -> None:
    playbook = tmp_path / "quiet.yml"
    playbook.write_text("- hosts: localhost\n  gather_facts: false\n  tasks:\n    - ansible.builtin.ping:\n")
    env = {k: v for k, v in os.environ.items() if k != "BLUEGREEN_EVENTS_FILE"}
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", *PYTHON, str(playbook)],
        cwd=tmp_path,
        env={**env, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["quiet.yml"]
