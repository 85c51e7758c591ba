"""Faults over SSH (issue 15): each leaves live traffic on a healthy color and loses nothing. One lb and
two nodes a color of the SSH lab (bluegreen/sshlab.py); the load goes to the lb's address."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.conftest import run_playbook, start_playbook
from tests.integration.lab import Loadgen
from tests.integration.sshlab import SshLab

SSH_LAB = (1, 2)  # lbs, nodes a color (tests/integration/conftest.py ssh_lab)
SINKS = ".lab/sshlab/hosts/*/upper/opt/logplatform/sink/*.ndjson"
STATE_DIR = "/var/lib/bluegreen/state"  # the lb's (inventories/lab/group_vars/lb.yml)


def live_color(lab: SshLab) -> str:
    done = lab.ssh("lb-1", "sudo cat /etc/haproxy/live.map")
    assert done.returncode == 0, done.stderr
    return dict(line.split() for line in done.stdout.splitlines() if line.strip())["live"]


def state(lab: SshLab) -> dict:
    done = lab.ssh("lb-1", f"sudo cat {STATE_DIR}/state.json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def pids(lab: SshLab, host: str, name: str) -> list[str]:
    """PIDs of host's processes whose command is `name` (read inside the host's PID namespace)."""
    return [p["pid"] for p in lab.processes(host) if p["comm"] == name]


@contextlib.contextmanager
def sshd_stopped(lab: SshLab, hosts: list[str]) -> Iterator[None]:
    """Every sshd of each host killed (the listener, and the sessions ssh's control masters hold): the
    hosts are unreachable over SSH until the block ends, when their sshd starts again."""
    try:
        for host in hosts:
            assert pids(lab, host, "sshd"), f"no sshd on {host}"
            # by name, not by the PIDs just listed: a session's sshd may end by itself in between (kill
            # then fails on its PID: seen once)
            lab.command("exec", host, "--", "pkill", "-x", "sshd")
            deadline = time.monotonic() + 10
            while pids(lab, host, "sshd"):
                assert time.monotonic() < deadline, f"sshd still runs on {host}"
                time.sleep(0.1)
        yield
    finally:
        for host in hosts:
            lab.command("exec", host, "--", "/usr/sbin/sshd", "-f", "/etc/ssh/sshd_config")


def lock_held(lab: SshLab) -> bool:
    return lab.ssh("lb-1", f"sudo test -e {STATE_DIR}/deploy.lock").returncode == 0


def assert_nothing_lost(load: Loadgen) -> None:
    report = load.verify()
    assert report["acked_entries"] > 500
    assert report["failed_requests_total"] == 0, report["failed_requests"]
    assert report["lost"] == 0, report["lost_sample"]
    assert report["duplicates"] == 0


@pytest.mark.parametrize("hosts", [1, 2], ids=["one-idle-host", "every-idle-host"])
def test_a_green_host_whose_sshd_is_stopped_fails_the_deploy_before_the_switch_naming_it(
    ssh_site: SshLab, tmp_path, hosts: int
):
    """One idle host unreachable: Ansible drops it and goes on with the other. Every idle host
    unreachable: Ansible would end the whole playbook, lb plays included (run/reach_node.yml keeps
    them). Either way the run fails naming the host, and releases its lock."""
    lab = ssh_site
    live = live_color(lab)
    idle = "green" if live == "blue" else "blue"
    targets = [f"{idle}-{i}" for i in range(1, hosts + 1)]
    load = lb_load(lab, tmp_path)
    try:
        with sshd_stopped(lab, targets):
            run = run_playbook("playbooks/deploy.yml", *deploy_args(lab, "1.1.0"))
        assert run.returncode != 0
        failure = run.failure
        assert failure is not None, run.tail(3000)
        assert (failure["stage"], failure["host"]) == ("validate", targets[0]), failure
        assert "not reachable over SSH" in failure["observed"]
        assert all(target in failure["observed"] for target in targets), failure
        assert "Traffic never moved" in run.message, run.message
        assert "switch" not in [e["stage"] for e in run.of_type("stage_start")]
        assert live_color(lab) == live
        assert state(lab)["live"] == live
        assert not lock_held(lab), "lock still held"
    finally:
        load.stop()
    assert_nothing_lost(load)


def test_every_live_host_unreachable_fails_the_configuration_gate_and_releases_the_lock(
    ssh_site: SshLab, tmp_path
):
    """The live color's hosts are the baseline the idle color's configuration is compared with: with none
    reachable over SSH, config_matches_live fails saying why, traffic never moves, the lock is released
    (without run/reach_node.yml, Ansible ended the playbook in the baseline play, lock held)."""
    lab = ssh_site
    live, _, _, version = next_deploy(lab)
    live_hosts = [f"{live}-{i}" for i in (1, 2)]
    load = lb_load(lab, tmp_path)
    try:
        with sshd_stopped(lab, live_hosts):
            run = run_playbook("playbooks/deploy.yml", *deploy_args(lab, version))
        assert run.returncode != 0
        failure = run.failure
        assert failure is not None, run.tail(3000)
        assert (failure["stage"], failure["check"]) == ("validate", "config_matches_live"), failure
        assert "not reachable over SSH" in run.message, run.message
        assert "Traffic never moved" in run.message, run.message
        assert live_color(lab) == live
        assert not lock_held(lab), "lock still held"
    finally:
        load.stop()
    assert_nothing_lost(load)


def lb_load(lab: SshLab, tmp_path) -> Loadgen:
    """Load at 60 batches/s to the lab's one lb."""
    url = f"http://{lab.address('lb-1')}:8080/v1/logs"
    return Loadgen(tmp_path / "load", rate=60, urls=[url], sinks=SINKS)


def deploy_args(lab: SshLab, version: str) -> tuple[str, ...]:
    return ("-i", str(lab.inventory), "-e", f"bluegreen_version={version}")


def next_deploy(lab: SshLab) -> tuple[str, str, str, str]:
    """(live color, idle color, the idle color's first host, a release the idle color does not run):
    what a fault test's deploy moves, whatever the tests before it left live."""
    live = live_color(lab)
    idle = "green" if live == "blue" else "blue"
    version = "1.1.0" if state(lab)["versions"][idle] != "1.1.0" else "1.0.0"
    return live, idle, f"{idle}-1", version


def test_a_green_node_killed_after_validation_is_refused_by_the_switch_gate(ssh_site: SshLab, tmp_path):
    lab = ssh_site
    live, idle, target, version = next_deploy(lab)
    load = lb_load(lab, tmp_path)
    deploy = start_playbook("playbooks/deploy.yml", *deploy_args(lab, version), new_session=True)
    try:
        deploy.wait_for_event(lambda e: e.get("type") == "stage_start" and e.get("stage") == "switch")
        # validation passed on every node; hold the controller still while the node dies (its supervisord
        # first, so nothing restarts it), so that the gate surely runs after
        os.killpg(deploy.pid, signal.SIGSTOP)
        try:
            table = lab.processes(target)
            doomed = [p["pid"] for p in table if "supervisord" in p["args"]]
            doomed += [p["pid"] for p in table if "logplatform" in p["args"]]
            assert len(doomed) >= 2, table
            assert lab.command("exec", target, "--", "kill", "-KILL", *doomed).returncode == 0
        finally:
            os.killpg(deploy.pid, signal.SIGCONT)
        run = deploy.wait()
        assert run.returncode != 0
        failure = run.failure
        assert failure is not None and failure["stage"] == "switch", run.tail(3000)
        observed = failure["observed"]
        assert f"switch to {idle} on lb lb-1 refused, {live} stays live" in observed, failure
        # HAProxy has it DOWN, or going down (UP 1/2, its last check failed: L4CON), or its /version is silent
        assert (
            f"{idle} is not up in HAProxy: {target} (" in observed
            or f"node {target} of {idle} did not answer /version" in observed
        ), observed
        assert live_color(lab) == live
        assert state(lab)["live"] == live
    finally:
        deploy.kill()
        load.stop()
    assert_nothing_lost(load)


def cut_ssh_connections(address: str, seconds: float) -> int:
    """Reset every TCP connection of this machine to address:22 (ss -K), again and again for `seconds`:
    the controller's SSH connections are cut as by a network failure, and new ones with them."""
    cuts = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        listed = subprocess.run(
            ["ss", "-HtnK", "dst", address, "dport", "=", "22"], capture_output=True, text=True, check=True
        )
        cuts += len(listed.stdout.splitlines())
        time.sleep(0.02)
    return cuts


def test_ssh_connections_cut_mid_provision_fail_the_run_and_a_rerun_completes(ssh_site: SshLab, tmp_path):
    lab = ssh_site
    live, idle, target, version = next_deploy(lab)
    load = lb_load(lab, tmp_path)
    deploy = start_playbook("playbooks/deploy.yml", *deploy_args(lab, version), new_session=True)
    try:
        deploy.wait_for_event(lambda e: e.get("type") == "stage_start" and e.get("stage") == "provision")
        assert cut_ssh_connections(lab.address(target), seconds=4) > 0
        run = deploy.wait()
        assert run.returncode != 0, "the run went on as if nothing happened"
        failure = run.failure
        assert failure is not None and failure["host"] == target, run.tail(3000)
        assert failure["stage"] in ("provision", "validate"), failure
        assert "Traffic never moved" in run.message, run.message
        assert live_color(lab) == live

        rerun = run_playbook("playbooks/deploy.yml", *deploy_args(lab, version))
        assert rerun.returncode == 0, rerun.tail(4000)
        assert live_color(lab) == idle
        assert state(lab)["versions"][idle] == version
    finally:
        deploy.kill()
        load.stop()
    assert_nothing_lost(load)
