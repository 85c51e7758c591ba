"""Two load balancers over SSH (issue 15, point 4), on the SSH lab (bluegreen/sshlab.py): status.yml shows
each lb's live color and fails when they disagree."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from tests.conftest import run_playbook
from tests.integration.sshlab import SshLab

SSH_LAB = (2, 1)  # lbs, nodes a color (tests/integration/conftest.py ssh_lab)
LBS = ("lb-1", "lb-2")


def playbook(lab: SshLab, name: str, *args: str):
    return run_playbook(f"playbooks/{name}", "-i", str(lab.inventory), *args)


def served(lab: SshLab) -> dict[str, str]:
    """The color each lb's live frontend sends a new request to now (the node's /version says its color)."""
    colors = {}
    for lb in LBS:
        with urllib.request.urlopen(f"http://{lab.address(lb)}:8080/version", timeout=10) as answer:
            colors[lb] = json.loads(answer.read())["color"]
    return colors


def status_event(run) -> dict:
    (event,) = run.of_type("status")  # one for the play, whatever the number of lbs
    return event


def test_status_shows_each_lbs_live_color_and_fails_when_they_disagree(ssh_site: SshLab, tmp_path: Path):
    lab = ssh_site
    run = playbook(lab, "status.yml")
    assert run.returncode == 0, run.tail(3000)
    event = status_event(run)
    assert event["lines"][0] == "lbs    2 load balancers, all serve blue: lb-1 blue, lb-2 blue"
    assert event["status"]["lbs_agree"] is True
    assert event["status"]["live_by_lb"] == {"lb-1": "blue", "lb-2": "blue"}

    # an operator switches one lb alone: traffic is split, two colors serve at once
    split = playbook(lab, "switch.yml", "-e", "bluegreen_color=green", "--limit", "lb-2")
    assert split.returncode == 0, split.tail(3000)
    assert served(lab) == {"lb-1": "blue", "lb-2": "green"}

    status_file = tmp_path / "status.json"
    run = playbook(lab, "status.yml", "-e", f"bluegreen_status_file={status_file}")
    assert run.returncode != 0, run.tail(3000)  # for cron and CI: after showing everything
    differs = "live color in HAProxy differs: lb-1 blue, lb-2 green"
    event = status_event(run)
    assert event["lines"][:2] == [
        "lbs    2 load balancers: lb-1 blue, lb-2 green",
        f"!! LBS DISAGREE: {differs}",
    ]
    assert "!! LBS DISAGREE: live color in state.json differs: lb-1 blue, lb-2 green" in event["lines"]
    written = json.loads(status_file.read_text())
    for shown in (written, event["status"]):
        assert (shown["lbs_agree"], shown["live"]) == (False, None)
        assert differs in shown["lbs_disagreement"]
        assert shown["live_by_lb"] == {"lb-1": "blue", "lb-2": "green"}
        assert shown["lbs"]["lb-2"]["state_live"] == "green"
    assert any(f"the load balancers disagree: {differs}" in message for message in run.task_failures)

    # repaired the way the README says: every lb switched to one color
    fixed = playbook(lab, "switch.yml", "-e", "bluegreen_color=blue")
    assert fixed.returncode == 0, fixed.tail(3000)
    assert served(lab) == {"lb-1": "blue", "lb-2": "blue"}
    run = playbook(lab, "status.yml")
    assert run.returncode == 0, run.tail(3000)
    assert status_event(run)["status"]["lbs_agree"] is True
