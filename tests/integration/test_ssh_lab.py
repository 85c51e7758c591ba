"""The SSH lab itself (bluegreen/sshlab.py): hosts reached over SSH, each with its own processes, files
and network, and nothing left behind by `down`."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from bluegreen import sshlab
from tests.conftest import REPO
from tests.integration.conftest import enter_private_lab
from tests.integration.sshlab import SshLab, skip_unless_possible


@pytest.fixture
def bare_lab(tmp_path_factory: pytest.TempPathFactory) -> SshLab:
    skip_unless_possible()
    enter_private_lab(tmp_path_factory)
    lab = SshLab(lbs=1, nodes=1)
    lab.down()
    yield lab
    lab.down()


def links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout


def test_hosts_are_separate_machines_over_ssh_and_down_leaves_nothing(bare_lab: SshLab) -> None:
    bare_lab.up()
    hosts = bare_lab.hosts()
    assert [h.name for h in hosts] == ["lb-1", "blue-1", "green-1"]
    assert (
        bare_lab.command(
            "up", "--lbs", "1", "--nodes", "1", "--inventory", str(bare_lab.inventory)
        ).returncode
        == 0
    )
    assert [h.holder_pid for h in bare_lab.hosts()] == [h.holder_pid for h in hosts], (
        "a second up changed the lab"
    )

    # over SSH as the lab's user, root through sudo; each host names itself
    who = bare_lab.ssh("blue-1", "hostname; id -un; sudo -n id -un")
    assert who.returncode == 0, who.stderr
    assert who.stdout.split() == ["blue-1", sshlab.USER, "root"]

    # its own /etc: a file written on blue-1 is on no other host and not on the machine
    assert bare_lab.ssh("blue-1", "echo blue-1 | sudo tee /etc/bluegreen-probe").returncode == 0
    assert bare_lab.ssh("green-1", "test -e /etc/bluegreen-probe").returncode == 1
    assert not Path("/etc/bluegreen-probe").exists()
    assert (bare_lab.upper("blue-1") / "etc" / "bluegreen-probe").read_text() == "blue-1\n"

    # its own processes (PID namespace): one sshd listener, PID 1 is the host's init
    ps = bare_lab.ssh("lb-1", "ps -eo pid=,args=")
    listeners = [line for line in ps.stdout.splitlines() if "[listener]" in line]
    assert len(listeners) == 1, ps.stdout
    assert ps.stdout.split("\n", 1)[0].split()[0] == "1"

    # the controller's checkout is hidden; a name lookup fails at once instead of hanging
    assert bare_lab.ssh("green-1", f"test -e {REPO}/Makefile").returncode == 1
    started = time.monotonic()
    assert bare_lab.ssh("green-1", "getent hosts example.com").returncode != 0
    assert time.monotonic() - started < 5

    # a host's network: it reaches the others by name, the machine at 10.87.0.1
    assert bare_lab.ssh("lb-1", "getent hosts green-1").stdout.split()[0] == bare_lab.address("green-1")

    bare_lab.down()
    assert "bglab0" not in links()
    assert "bgl-" not in links()
    for host in hosts:
        assert not sshlab.running(host.holder_pid), f"{host.name}'s holder survived down"
        assert not sshlab.running(host.init_pid), f"{host.name}'s init survived down"
    assert not (bare_lab.root / "hosts").exists()
    again = bare_lab.command("down")
    assert again.returncode == 0 and "no lab" in again.stdout


def test_bad_shapes_are_refused_naming_the_option(bare_lab: SshLab) -> None:
    done = bare_lab.command("up", "--lbs", "0", "--nodes", "0", "--inventory", str(bare_lab.inventory))
    assert done.returncode == 2
    assert "--lbs" in done.stderr and "not both 0" in done.stderr
    unknown = bare_lab.command("exec", "nohost", "--", "true")
    assert unknown.returncode == 1 and "no host 'nohost'" in unknown.stderr
