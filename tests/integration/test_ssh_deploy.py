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
    for load in loads:
        report = load.verify()
        assert report["acked_entries"] > 1000
        assert report["failed_requests_total"] == 0, report["failed_requests"]
        assert report["lost"] == 0, report["lost_sample"]
        assert report["duplicates"] == 0
        assert set(report["by_color"]) == {"blue", "green"}, report["by_color"]
        assert set(report["by_node"]) == {"blue-1", "blue-2", "green-1", "green-2"}, report["by_node"]
