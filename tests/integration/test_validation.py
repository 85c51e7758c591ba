"""Stage 3 on the local lab: each kind of bad release fails the deploy in validate, naming the check,
the node, the observed value and the threshold; traffic never moves and live clients lose nothing.
And playbooks/validate.yml: read-only (changed=0), non-zero exit when a check fails."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.conftest import LAB, PlaybookRun
from tests.integration.lab import (
    STATE_DIR,
    Loadgen,
    build_release,
    haproxy_live,
    history,
    run_playbook,
    start_playbook,
    state,
)

VERSION = "1.2.0"
FAST = ["-e", "bluegreen_watch_seconds=4", "-e", "bluegreen_canary_timeout=4"]


@pytest.fixture(scope="module")
def release(lab):
    build_release(VERSION)


def idle_hosts() -> list[str]:
    idle = "green" if state()["live"] == "blue" else "blue"
    return [f"{idle}-1", f"{idle}-2"]


def report(run_id: str) -> dict:
    return orjson.loads((STATE_DIR / "reports" / f"{run_id}.json").read_bytes())


def fault(**keys: object) -> list[str]:
    return ["-e", orjson.dumps({"logplatform_fault": keys}).decode()]


def assert_failed_in_validate(run: PlaybookRun, check: str, node: str | None, *observed: str) -> dict:
    """The run failed in stage 3 naming the check, its node and figures; nothing moved; the report says so."""
    assert run.returncode != 0, run.tail(3000)
    last = history()[-1]
    assert last["result"] == "failed", last
    failure = last["failure"]
    assert (failure["stage"], failure["check"]) == ("validate", check), failure
    if node:
        assert failure["host"] == node, failure
    assert "failed in stage validate" in run.message
    assert f'check "{check}"' in run.message
    assert "observed" in failure["observed"] and "threshold" in failure["observed"], failure
    for text in observed:
        assert text in failure["observed"], failure
    assert "Traffic never moved" in run.message
    assert not (STATE_DIR / "deploy.lock").exists()
    checks = report(last["deployment_id"])
    failed = [c for c in checks["checks"] if c["verdict"] == "fail"]
    assert checks["result"] == "fail" and failed, checks
    assert failed[0]["name"] == check
    return checks


class live_traffic:
    """Live load through the frontend during a failed deploy: afterwards 0 failed requests, 0 lost."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def __enter__(self) -> None:
        self.live_before = state()["live"]
        self.load = Loadgen(self.out, rate=100)

    def __exit__(self, *exc: object) -> None:
        self.load.stop()
        if exc[0] is not None:
            return
        assert state()["live"] == haproxy_live() == self.live_before
        verdict = self.load.verify()
        assert verdict["acked_entries"] > 0
        assert verdict["failed_requests_total"] == 0, verdict["failed_requests"]
        assert verdict["lost"] == 0, verdict["lost_sample"]
        assert set(verdict["by_color"]) == {self.live_before}


def deploy(*extra: str) -> PlaybookRun:
    return run_playbook("deploy.yml", "-e", f"bluegreen_version={VERSION}", *FAST, *extra)


def test_slow_release_fails_on_p99(release, tmp_path):
    with live_traffic(tmp_path / "load"):
        run = deploy(*fault(extra_latency_ms=700))
    checks = assert_failed_in_validate(run, "perf_p99_ms", None, "threshold <= 500")
    p99 = next(c for c in checks["checks"] if c["name"] == "perf_p99_ms")
    assert p99["observed"] >= 700 and p99["threshold"] == 500


def test_erroring_release_fails_on_its_error_rate(release, tmp_path):
    # the fault counts requests, so no shadow traffic: the canary must get the first answers
    with live_traffic(tmp_path / "load"):
        run = deploy(*fault(error_rate=1.0, error_after_requests=2), "-e", "bluegreen_shadow_percent=0")
    checks = assert_failed_in_validate(run, "perf_error_rate", None, "threshold <= 0.01")
    errors = next(c for c in checks["checks"] if c["name"] == "perf_error_rate")
    assert errors["observed"] > 0.5


def test_a_node_with_the_wrong_version_fails_naming_it(release, tmp_path):
    node = idle_hosts()[1]
    inventory = tmp_path / "wrong_version.yml"
    # one node of the idle color reports a version it does not run (TEST-ONLY fault, that node only)
    inventory.write_text(
        orjson.dumps({"all": {"hosts": {node: {"logplatform_fault": {"report_version": "9.9.9"}}}}}).decode()
    )
    with live_traffic(tmp_path / "load"):
        run = deploy("-i", "inventories/local", "-i", str(inventory))
    checks = assert_failed_in_validate(
        run, "health_version", node, "observed 9.9.9", f"threshold == {VERSION}"
    )
    versions = {c["node"]: c["verdict"] for c in checks["checks"] if c["name"] == "health_version"}
    assert versions == {idle_hosts()[0]: "pass", node: "fail"}


def test_config_drift_on_one_node_fails_naming_node_and_key(release, tmp_path):
    node = idle_hosts()[1]
    config = LAB / "nodes" / node / "etc" / "logplatform.toml"
    with live_traffic(tmp_path / "load"):
        deploying = start_playbook("deploy.yml", "-e", f"bluegreen_version={VERSION}", *FAST)
        try:
            deploying.wait_for_event(lambda e: (e["type"], e.get("stage")) == ("stage_start", "validate"))
            # provisioning is done and the node runs its rendered file: someone edits it by hand
            text = config.read_text()
            assert "max_batch_entries = 10000" in text
            config.write_text(text.replace("max_batch_entries = 10000", "max_batch_entries = 500"))
            run = deploying.wait(timeout=300)
        finally:
            deploying.kill()
    assert_failed_in_validate(run, "config_rendered", node, "running config_digest")
    failure = history()[-1]["failure"]["observed"]
    assert f"max_batch_entries = 500 on {node}, 10000 on {idle_hosts()[0]}" in failure


def test_canary_that_never_reaches_the_sink_fails(release, tmp_path):
    with live_traffic(tmp_path / "load"):
        run = deploy(*fault(lose_writes=True))
    assert_failed_in_validate(run, "canary_in_sink", None, "NOT in the sink", "within 4s")


def test_validate_playbook_changes_nothing_and_fails_on_a_hand_edited_file(lab, tmp_path):
    live = state()["live"]
    run = run_playbook("validate.yml", "-e", f"bluegreen_color={live}")
    assert run.returncode == 0, run.tail(3000)
    stats = run.stats
    assert stats and all(host["changed"] == 0 and host["failures"] == 0 for host in stats.values()), stats
    checks = run.of_type("check")  # the validation passed: every check, and the report says so
    assert checks and all(c["verdict"] != "fail" for c in checks), checks
    assert report(checks[0]["run_id"])["result"] == "pass"

    node = f"{live}-2"
    config = LAB / "nodes" / node / "etc" / "logplatform.toml"
    original = config.read_bytes()
    try:
        config.write_bytes(original.replace(b"max_batch_entries = 10000", b"max_batch_entries = 500"))
        run = run_playbook("validate.yml", "-e", f"bluegreen_color={live}")
    finally:
        config.write_bytes(original)
    assert run.returncode != 0
    said = "\n".join(run.task_failures)
    assert f'failed in stage validate: check "config_rendered" on {node}' in said
    assert "the file changed after the node started" in said
    assert f"max_batch_entries = 500 on {node}, 10000 on {live}-1" in said
    assert all(host["changed"] == 0 for host in run.stats.values()), run.stats
    assert state()["live"] == haproxy_live() == live


def test_validate_playbook_refuses_a_bad_color(lab):
    run = run_playbook("validate.yml", "-e", "bluegreen_color=purple")
    assert run.returncode != 0
    # refused by validate/plan's argument spec (the empty choice: the idle color)
    said = "\n".join(run.task_failures)
    assert "value of bluegreen_color must be one of: , blue, green, got: purple" in said
