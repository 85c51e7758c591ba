"""Two load balancers over SSH (issue 15, point 4), on the SSH lab (bluegreen/sshlab.py): status.yml shows
each lb's live color and fails when they disagree; switch.yml and rollback.yml move both lbs; an lb that is
unreachable at the switch leaves every lb on one healthy color (all or nothing) with nothing failed or lost,
under load that one `bluegreen loadgen` spreads over both lbs' addresses."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from bluegreen import sshlab
from tests.conftest import run_playbook, start_playbook
from tests.integration.lab import Loadgen
from tests.integration.sshlab import SshLab

SSH_LAB = (2, 1)  # lbs, nodes a color (tests/integration/conftest.py ssh_lab)
LBS = ("lb-1", "lb-2")
SINKS = ".lab/sshlab/hosts/*/upper/opt/logplatform/sink/*.ndjson"


def playbook(lab: SshLab, name: str, *args: str):
    return run_playbook(f"playbooks/{name}", "-i", str(lab.inventory), *args)


def live_urls(lab: SshLab) -> list[str]:
    return [f"http://{lab.address(lb)}:8080/v1/logs" for lb in LBS]


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


def assert_nothing_failed_or_lost(load: Loadgen, lab: SshLab) -> dict:
    report = load.verify()
    assert report["failed_requests_total"] == 0, report["failed_requests"]
    assert report["lost"] == 0, report["lost_sample"]
    assert report["duplicates"] == 0
    by_url = report["requests_by_url"]
    assert set(by_url) == set(live_urls(lab)), by_url  # both lbs carried the load, half each
    assert abs(by_url[live_urls(lab)[0]] - by_url[live_urls(lab)[1]]) <= 1, by_url
    assert report["acked_entries"] > 500
    return report


def test_switch_and_rollback_move_both_lbs_under_load(ssh_site: SshLab, tmp_path: Path):
    lab = ssh_site
    assert served(lab) == {"lb-1": "blue", "lb-2": "blue"}
    load = Loadgen(tmp_path / "load", rate=40, urls=live_urls(lab), sinks=SINKS)
    try:
        time.sleep(2)
        run = playbook(lab, "switch.yml", "-e", "bluegreen_color=green")
        assert run.returncode == 0, run.tail(3000)
        assert served(lab) == {"lb-1": "green", "lb-2": "green"}
        time.sleep(1)
        run = playbook(lab, "rollback.yml")
        assert run.returncode == 0, run.tail(3000)
        assert served(lab) == {"lb-1": "blue", "lb-2": "blue"}
        time.sleep(1)
    finally:
        load.stop()
    report = assert_nothing_failed_or_lost(load, lab)
    assert set(report["by_color"]) == {"blue", "green"}, report["by_color"]


def runtime_api(lab: SshLab, lb: str, command: str) -> str:
    """One command to lb `lb`'s HAProxy runtime API (run inside the host: no SSH needed)."""
    send = (
        "import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect('/etc/haproxy/admin.sock'); "
        "s.sendall(sys.argv[1].encode() + b'\\n'); print(s.makefile().read())"
    )
    done = lab.command("exec", lb, "--", "/usr/bin/python3", "-c", send, command)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_when_one_lb_refuses_the_switch_the_other_switches_back(ssh_site: SshLab, tmp_path: Path):
    """lb-2 sees green's node in maintenance, so its gate refuses green: lb-1, which switched, switches
    back; the run fails naming lb-2; traffic over both lbs stays on blue with nothing failed or lost."""
    lab = ssh_site
    assert served(lab) == {"lb-1": "blue", "lb-2": "blue"}
    runtime_api(lab, "lb-2", "disable server bg_green/green-1")
    load = Loadgen(tmp_path / "load", rate=40, urls=live_urls(lab), sinks=SINKS)
    try:
        time.sleep(2)
        run = playbook(lab, "switch.yml", "-e", "bluegreen_color=green")
        assert run.returncode != 0, run.tail(3000)
        assert "lb-2" in run.message and "lb-1 serves blue, lb-2 serves blue" in run.message, run.message
        assert served(lab) == {"lb-1": "blue", "lb-2": "blue"}
        time.sleep(1)
    finally:
        load.stop()
        runtime_api(lab, "lb-2", "enable server bg_green/green-1")
    assert_nothing_failed_or_lost(load, lab)
    deadline = time.monotonic() + 30  # green-1 back UP on lb-2 (its health check), for what follows
    while server_status(lab, "lb-2", "bg_green", "green-1") != "UP":
        assert time.monotonic() < deadline, "green-1 is not UP again on lb-2"
        time.sleep(0.5)


def server_status(lab: SshLab, lb: str, backend: str, server: str) -> str | None:
    rows = csv.DictReader(io.StringIO(runtime_api(lab, lb, "show stat").removeprefix("# ")))
    return next((row["status"] for row in rows if (row["pxname"], row["svname"]) == (backend, server)), None)


def sshd_killer(lab: SshLab, name: str) -> Callable[[], list[int]]:
    """What cuts host `name` off SSH at once while it keeps running (HAProxy still serves): a call that
    SIGKILLs every sshd of the host, its listener and the sessions it forked (Ansible's ControlPersist
    master holds one), found from the machine in the host's PID namespace, by pid: no process to start,
    so it lands within milliseconds of the moment the test picks."""
    namespace = Path(f"/proc/{sshlab.Lab(lab.root).find(name).init_pid}/ns/pid").readlink()

    def kill() -> list[int]:
        killed = []
        for proc in Path("/proc").iterdir():
            try:
                if not proc.name.isdigit() or (proc / "ns" / "pid").readlink() != namespace:
                    continue
                if (proc / "comm").read_text().strip() == "sshd":
                    os.kill(int(proc.name), signal.SIGKILL)
                    killed.append(int(proc.name))
            except (OSError, ValueError):  # gone meanwhile
                continue
        return killed

    return kill


def restore_ssh(lab: SshLab, name: str) -> None:
    """sshd again on host `name`, as its PID 1 started it (bluegreen/sshlab_init.py)."""
    done = lab.command("exec", name, "--", "/usr/sbin/sshd", "-f", "/etc/ssh/sshd_config")
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 30
    while lab.ssh(name, "true", timeout=15).returncode != 0:
        assert time.monotonic() < deadline, f"{name} does not answer over SSH again"
        time.sleep(0.2)


def test_an_lb_unreachable_at_the_switch_leaves_every_lb_on_the_live_color(ssh_site: SshLab, tmp_path: Path):
    """lb-2's SSH is cut as the deploy's switch stage begins: the switch must not move lb-1 alone. The run
    fails naming lb-2, both lbs still send traffic to blue; a switch.yml started while lb-2 is still
    unreachable moves no lb either; and the load over both lbs loses nothing."""
    lab = ssh_site
    assert served(lab) == {"lb-1": "blue", "lb-2": "blue"}
    cut_lb2 = sshd_killer(lab, "lb-2")
    load = Loadgen(tmp_path / "load", rate=40, urls=live_urls(lab), sinks=SINKS)
    try:
        time.sleep(2)
        deploy = start_playbook(
            "playbooks/deploy.yml", "-i", str(lab.inventory), "-e", "bluegreen_version=1.1.0"
        )
        # validated (its plays touch lb-2 too, for shadow traffic): now the switch stage begins on the
        # anchor, and lb-2 is next reached by the switch itself, several tasks later
        deploy.wait_for_event(lambda e: e.get("type") == "stage_start" and e.get("stage") == "switch")
        assert cut_lb2(), "lb-2 has no sshd to stop"
        run = deploy.wait()
        assert run.returncode != 0, run.tail(3000)
        assert "lb lb-2 was unreachable at the switch" in run.message, (run.message, run.tail(3000))
        # all or nothing: lb-1 moved back, and the finish's rollback left it there
        assert served(lab) == {"lb-1": "blue", "lb-2": "blue"}, (run.message, run.tail(6000))

        # lb-2 still unreachable: an operator's switch drops it at its first task, and moves no lb
        run = playbook(lab, "switch.yml", "-e", "bluegreen_color=green")
        assert run.returncode != 0, run.tail(3000)
        assert "lb-2 dropped out of the run before the switch" in run.message, (run.message, run.tail(3000))
        assert served(lab) == {"lb-1": "blue", "lb-2": "blue"}
        time.sleep(1)
    finally:
        load.stop()
        restore_ssh(lab, "lb-2")
    assert_nothing_failed_or_lost(load, lab)
    run = playbook(lab, "status.yml")  # reachable again: the lbs agree, blue live
    assert run.returncode == 0, run.tail(3000)
    assert status_event(run)["status"]["live_by_lb"] == {"lb-1": "blue", "lb-2": "blue"}
