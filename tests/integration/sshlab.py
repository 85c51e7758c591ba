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

    def upper(self, name: str) -> Path:
        """The machine's view of what host `name` wrote (its overlay's upper layer)."""
        return self.root / "hosts" / name / "upper"


def skip_unless_possible() -> None:
    reason = sshlab.unavailable()
    if reason:
        pytest.skip(f"SSH lab not possible on this machine: {reason}")
