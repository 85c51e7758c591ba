"""bluegreen over SSH (issue 15): the SSH lab's hosts (bluegreen/sshlab.py), two lbs and two nodes a
color, every playbook run against its inventory, load sent from this machine to both lbs' addresses,
each node's sink read where the machine keeps the host's files (its overlay's upper layer)."""

from __future__ import annotations

import time

from tests.conftest import run_playbook
from tests.integration.lab import Loadgen
from tests.integration.sshlab import SshLab

SSH_LAB = (2, 2)  # lbs, nodes a color (tests/integration/conftest.py ssh_lab)
SINKS = ".lab/sshlab/hosts/*/upper/opt/logplatform/sink/*.ndjson"


def live_colors(lab: SshLab) -> dict[str, str]:
    """Each lb's live color, from its map file, read over SSH."""
    colors = {}
    for lb in ("lb-1", "lb-2"):
        done = lab.ssh(lb, "sudo cat /etc/haproxy/live.map")
        assert done.returncode == 0, done.stderr
        colors[lb] = dict(line.split() for line in done.stdout.splitlines() if line.strip())["live"]
    return colors


def test_services_run_under_their_own_users_on_the_lab_hosts(ssh_site: SshLab):
    """The production layout (inventories/lab/group_vars): on every node host the node runs as
    logplatform; on every lb the HAProxy master is root (it binds, reloads) and its worker has
    dropped to haproxy; neither is the connecting user (deploy)."""
    lab = ssh_site
    for host in lab.hosts():
        procs = lab.processes(host.name)
        if host.name.startswith("lb-"):
            haproxy = [p for p in procs if p["args"].startswith("/usr/sbin/haproxy")]
            masters = [p for p in haproxy if p["ppid"] not in {h["pid"] for h in haproxy}]
            workers = [p for p in haproxy if p not in masters]
            assert [p["user"] for p in masters] == ["root"], procs
            assert workers and {p["user"] for p in workers} == {"haproxy"}, procs
        else:
            nodes = [p for p in procs if "/venv/bin/logplatform " in p["args"]]
            assert [p["user"] for p in nodes] == ["logplatform"], procs


def test_deploy_then_rollback_over_ssh_behind_two_lbs_under_load_loses_nothing(ssh_site: SshLab, tmp_path):
    lab = ssh_site
    assert live_colors(lab) == {"lb-1": "blue", "lb-2": "blue"}
    loads = [
        Loadgen(tmp_path / lb, rate=60, urls=[f"http://{lab.address(lb)}:8080/v1/logs"], sinks=SINKS)
        for lb in ("lb-1", "lb-2")
    ]
    try:
        time.sleep(2)
        run = run_playbook("playbooks/deploy.yml", "-i", str(lab.inventory), "-e", "bluegreen_version=1.1.0")
        assert run.returncode == 0, run.tail(4000)
        assert live_colors(lab) == {"lb-1": "green", "lb-2": "green"}
        time.sleep(2)
        run = run_playbook("playbooks/rollback.yml", "-i", str(lab.inventory))
        assert run.returncode == 0, run.tail(4000)
        assert live_colors(lab) == {"lb-1": "blue", "lb-2": "blue"}
        time.sleep(2)
    finally:
        for load in loads:
            load.stop()
    for lb, load in zip(("lb-1", "lb-2"), loads, strict=True):
        report = load.verify()
        # the figures, for a report (pytest -rP)
        print(f"{lb}: {report['acked_entries']} entries acked, {report['failed_requests_total']} requests "
              f"failed, {report['lost']} lost, by color {report['by_color']}")  # fmt: skip
        assert report["acked_entries"] > 1000
        assert report["failed_requests_total"] == 0, report["failed_requests"]
        assert report["lost"] == 0, report["lost_sample"]
        assert report["duplicates"] == 0
        assert set(report["by_color"]) == {"blue", "green"}, report["by_color"]
        assert set(report["by_node"]) == {"blue-1", "blue-2", "green-1", "green-2"}, report["by_node"]


def test_every_other_playbook_runs_over_ssh_under_load_spread_over_both_lbs(ssh_site: SshLab, tmp_path):
    """switch, validate (idle and live), status, retire and teardown over SSH, the load spread over both
    lbs by one load generator; nothing failed or lost while the colors moved."""
    lab = ssh_site
    inventory = ("-i", str(lab.inventory))
    live = live_colors(lab)["lb-1"]
    idle = "green" if live == "blue" else "blue"
    urls = [f"http://{lab.address(lb)}:8080/v1/logs" for lb in ("lb-1", "lb-2")]
    load = Loadgen(tmp_path / "load", rate=80, urls=urls, sinks=SINKS)
    try:
        time.sleep(1)
        for color in (idle, live):  # to the warm idle color and back: both lbs each time
            run = run_playbook("playbooks/switch.yml", *inventory, "-e", f"bluegreen_color={color}")
            assert run.returncode == 0, run.tail(4000)
            assert live_colors(lab) == {"lb-1": color, "lb-2": color}
        for color in (idle, live):
            run = run_playbook("playbooks/validate.yml", *inventory, "-e", f"bluegreen_color={color}")
            assert run.returncode == 0, run.tail(4000)
            assert sum(run.stats[h]["changed"] for h in run.stats) == 0, run.stats
        run = run_playbook("playbooks/status.yml", *inventory)
        assert run.returncode == 0, run.tail(4000)
        run = run_playbook("playbooks/retire.yml", *inventory, "-e", "bluegreen_retire_now=true")
        assert run.returncode == 0, run.tail(4000)
        stopped = lab.ssh(f"{idle}-1", f"curl -s -m 2 http://{lab.address(f'{idle}-1')}:9100/health")
        assert stopped.returncode != 0, "the retired color still answers"
        time.sleep(1)
    finally:
        load.stop()
    report = load.verify()
    assert report["failed_requests_total"] == 0, report["failed_requests"]
    assert report["lost"] == 0, report["lost_sample"]
    assert report["duplicates"] == 0
    assert set(report["requests_by_url"]) == set(urls), report["requests_by_url"]
    assert min(report["requests_by_url"].values()) > 100, report["requests_by_url"]

    run = run_playbook("playbooks/teardown.yml", *inventory)
    assert run.returncode == 0, run.tail(4000)
    for host in lab.hosts():
        left = [p["args"] for p in lab.processes(host.name)]
        assert not [args for args in left if "supervisord" in args or "haproxy" in args], left
