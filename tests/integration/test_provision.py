"""Stage 2 converges on what the nodes RUN, not on what the run changed."""

from __future__ import annotations

import urllib.request

import orjson
import pytest

from tests.conftest import LAB
from tests.integration.lab import NODES, build_release, haproxy_live, history, run_playbook, state

FAST = ["-e", "bluegreen_watch_seconds=4"]
# An unknown key of the TEST-ONLY [fault] table: the new release's --check-config refuses the rendered
# file, so provision fails at its configuration step, after the release is installed and `current` moved.
BROKEN_CONFIG = ["-e", '{"logplatform_fault": {"no_such_fault": true}}']


@pytest.fixture(scope="module")
def releases(lab):
    for version in ("1.0.0", "1.1.0"):
        build_release(version)


def running_version(node: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{NODES[node]}/version", timeout=5) as response:
        return orjson.loads(response.read())["version"]


def current_release(node: str) -> str:
    return (LAB / "nodes" / node / "current").readlink().name


def test_provision_failing_after_current_moved_is_finished_by_a_plain_rerun(releases):
    live = state()["live"]
    idle = "green" if live == "blue" else "blue"
    old = state()["versions"][idle]
    new = "1.1.0" if old != "1.1.0" else "1.0.0"
    nodes = [node for node in NODES if node.startswith(idle)]

    broken = run_playbook("deploy.yml", "-e", f"bluegreen_version={new}", *FAST, *BROKEN_CONFIG)
    assert broken.returncode != 0
    assert "failed in stage provision" in broken.message
    assert history()[-1]["failure"]["stage"] == "provision"
    # the failed run moved `current` and lost the restart it had asked for: the nodes still run `old`
    assert {node: current_release(node) for node in nodes} == dict.fromkeys(nodes, new)
    assert {node: running_version(node) for node in nodes} == dict.fromkeys(nodes, old)
    release_dir = LAB / "nodes" / nodes[0] / "releases" / new
    installed = release_dir.stat().st_ino

    logs = {node: LAB / "nodes" / node / "log" / "logplatform.log" for node in nodes}
    log_size = {node: logs[node].stat().st_size for node in nodes}

    # a plain re-run: nothing changes on disk any more, yet the nodes must end up running `new`
    rerun = run_playbook("deploy.yml", "-e", f"bluegreen_version={new}", *FAST)
    assert rerun.returncode == 0, rerun.tail(4000)
    assert state()["live"] == haproxy_live() == idle
    assert state()["versions"][idle] == new
    assert {node: running_version(node) for node in nodes} == dict.fromkeys(nodes, new)
    assert history()[-1]["result"] == "ok"
    # the release the failed run installed was used as it was, not unpacked again
    assert release_dir.stat().st_ino == installed
    # the idle nodes were restarted without the drain grace (no load balancer routes to them)
    for node in nodes:
        restart_log = logs[node].read_bytes()[log_size[node] :].decode()
        assert "received SIGQUIT" in restart_log, restart_log
        assert "still serving for 0.00s" in restart_log, restart_log


def test_a_release_that_cannot_start_fails_provision_at_once_naming_supervisords_verdict(releases):
    """TEST-ONLY fault crash_on_start: the node exits at every start; provision fails at its first exit
    (or when supervisord gave up, FATAL, whichever it sees first), not after the readiness timeout: on a
    busy machine the node may outlive startsecs, and supervisord would restart it forever without FATAL.
    A re-run starts it again."""
    live = state()["live"]
    idle = "green" if live == "blue" else "blue"
    new = "1.1.0" if state()["versions"][idle] != "1.1.0" else "1.0.0"
    crashing = ["-e", '{"logplatform_fault": {"crash_on_start": true}, "logplatform_ready_timeout": 600}']

    failed = run_playbook("deploy.yml", "-e", f"bluegreen_version={new}", *FAST, *crashing, timeout=300)
    assert failed.returncode != 0
    assert "failed in stage provision" in failed.message
    verdicts = ("supervisord gave up on logplatform (FATAL", "logplatform exited while starting (")
    assert any(verdict in failed.message for verdict in verdicts), failed.tail()
    assert state()["live"] == haproxy_live() == live  # traffic never moved

    rerun = run_playbook("deploy.yml", "-e", f"bluegreen_version={new}", *FAST)
    assert rerun.returncode == 0, rerun.tail(4000)
    assert state()["live"] == haproxy_live() == idle
