"""Driving the SSH lab from tests (bluegreen/sshlab.py): bring it up in the worker's namespaces, run
commands on its hosts over SSH, bring it down. Its playbooks run with `-i <its inventory>`."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from bluegreen import sshlab
from tests.conftest import LAB, REPO, VENV_BIN

ROOT = LAB / "sshlab"
INVENTORY = ROOT / "inventory" / "hosts.yml"


@dataclass
class SshLab:
    lbs: int
    nodes: int
    inventory: Path = INVENTORY
    root: Path = ROOT

    def command(self, action: str, *args: str) -> subprocess.CompletedProcess:
        """`bluegreen lab <action> --root <root> <args>` (exec's command is the rest of the line)."""
        return subprocess.run(
            [str(VENV_BIN / "bluegreen"), "lab", action, "--root", str(self.root), *args],
            cwd=REPO, capture_output=True, text=True, check=False,
        )  # fmt: skip

    def up(self) -> None:
        shape = ("--lbs", str(self.lbs), "--nodes", str(self.nodes), "--inventory", str(self.inventory))
        done = self.command("up", *shape)
        assert done.returncode == 0, done.stderr

    def down(self) -> None:
        done = self.command("down")
        assert done.returncode == 0, done.stderr

    def hosts(self) -> list[sshlab.Host]:
        return sshlab.Lab(self.root).recorded()[0]

    def address(self, name: str) -> str:
        return sshlab.Lab(self.root).find(name).address

    def ssh(self, name: str, command: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """`command` on host `name` over SSH as the lab's user (prefix `sudo` for root), as Ansible does."""
        lab = sshlab.Lab(self.root)
        return subprocess.run(
            [
                "ssh", "-i", str(lab.key), "-o", f"UserKnownHostsFile={lab.known_hosts}",
                "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
                f"{sshlab.USER}@{self.address(name)}", command,
            ],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def processes(self, name: str) -> list[dict[str, str]]:
        """Every process of host `name`, as its own `ps` sees them (inside its PID namespace): pid, ppid,
        user (as the host's /etc/passwd names it; `user:32`, else ps shows `logplatform` as `logplat+`),
        comm and the whole command line (`-ww`: ps cuts it at COLUMNS, which pytest-xdist sets to 80)."""
        done = self.command("exec", name, "--", "ps", "-ww", "-eo", "pid=,ppid=,user:32=,comm=,args=")
        assert done.returncode == 0, done.stderr
        keys = ("pid", "ppid", "user", "comm", "args")
        rows = [line.split(None, 4) for line in done.stdout.splitlines() if line.strip()]
        return [dict(zip(keys, row + [""] * (len(keys) - len(row)), strict=True)) for row in rows]

    def upper(self, name: str) -> Path:
        """The machine's view of what host `name` wrote (its overlay's upper layer)."""
        return self.root / "hosts" / name / "upper"


def skip_unless_possible() -> None:
    reason = sshlab.unavailable()
    if reason:
        pytest.skip(f"SSH lab not possible on this machine: {reason}")
