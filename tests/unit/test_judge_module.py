"""bluegreen_judge: a gate's records pass, or the gate fails naming each failed check; every record is
reported as a progress event."""

from __future__ import annotations

from pathlib import Path

import orjson

from tests.ansible_modules import run_module
from tests.conftest import run_playbook


def rec(name: str, node: str, verdict: str, message: str = "") -> dict:
    return {
        "name": name,
        "node": node,
        "observed": 1,
        "threshold": 0,
        "op": "<=",
        "verdict": verdict,
        "message": message or f"check {name} on {node}",
    }


def test_passing_gate_reports_every_record_as_a_checks_event():
    records = [rec("health_ready", "green-1", "pass"), rec("perf_p50_ms", "green", "skip")]
    failed, result = run_module("bluegreen_judge", {"records": records, "run_id": "r1"})
    assert not failed, result
    assert result["changed"] is False
    assert result["summary"] == {"total": 2, "passed": 1, "failed": 0, "skipped": 1}
    event = result["bluegreen_event"]
    assert (event["type"], event["run_id"], event["stage"]) == ("checks", "r1", "validate")
    assert event["records"] == records


def test_failed_records_fail_the_gate_naming_each_one_and_are_still_reported():
    records = [
        rec("health_ready", "green-1", "pass"),
        rec(
            "perf_p99_ms",
            "green",
            "fail",
            "check perf_p99_ms on green: observed 702.9 ms, threshold <= 500 ms",
        ),
        rec("perf_error_rate", "green", "fail", "check perf_error_rate on green: observed 0.6"),
    ]
    failed, result = run_module("bluegreen_judge", {"records": records, "gate": "performance"})
    assert failed
    assert result["msg"] == (
        "check perf_p99_ms on green: observed 702.9 ms, threshold <= 500 ms; "
        "check perf_error_rate on green: observed 0.6"
    )
    assert [r["name"] for r in result["failed_records"]] == ["perf_p99_ms", "perf_error_rate"]
    assert len(result["bluegreen_event"]["records"]) == 3


def test_a_malformed_record_is_refused_naming_what_it_lacks():
    failed, result = run_module(
        "bluegreen_judge", {"records": [{"name": "x", "node": "n"}], "gate": "canary"}
    )
    assert failed
    assert result["msg"].startswith("gate canary: record 'x' lacks")


def test_in_a_play_it_judges_on_the_controller_without_touching_the_host(tmp_path: Path) -> None:
    """The action plugin: no module run on the host (this host's SSH port is closed), same verdict."""
    records = [
        rec("health_ready", "green-1", "pass"),
        rec("perf_p99_ms", "green", "fail", "check p99"),
    ]
    playbook = tmp_path / "judge.yml"
    playbook.write_text(
        orjson.dumps(
            [
                {
                    "name": "Judge a gate",
                    "hosts": "all",
                    "gather_facts": False,
                    "tasks": [
                        {"name": "Passing gate", "bluegreen_judge": {"records": records[:1], "run_id": "r1"}},
                        {"name": "Failing gate", "bluegreen_judge": {"records": records, "gate": "perf"}},
                    ],
                }
            ]
        ).decode()
    )
    run = run_playbook(
        playbook,
        *("-i", "unreachable-node,", "-e", "ansible_host=127.0.0.1 ansible_port=1"),
        timeout=120,
    )
    assert run.returncode == 2, run.tail()
    events = run.events
    assert [e["verdict"] for e in events if e["type"] == "check"] == ["pass", "pass", "fail"]
    failure = next(e for e in events if e["type"] == "task_failed")
    assert (failure["task"], failure["message"]) == ("Failing gate", "check p99")
    end = events[-1]
    assert end["hosts"]["unreachable-node"]["unreachable"] == 0
