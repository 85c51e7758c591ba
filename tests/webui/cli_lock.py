"""A CLI ansible-playbook that holds the real deploy lock (bluegreen_state's lock, written by the module,
the bluegreen_controller lookup naming this process as a CLI run's lock does) until the test opens a
gate, then releases it. It begins no run, so it leaves no running deployment and no history line: the
tests that use it assert that nothing was started. Cheaper than a whole deploy, and the real lock, not
a file a test wrote.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from pathlib import Path

from tests.conftest import start_playbook

PLAYBOOK = """
- name: Hold the deploy lock as a CLI run holds it, until the test opens the gate
  hosts: lb
  gather_facts: false
  tasks:
    - name: Hold the lock until the gate opens
      vars:
        suffix: "{{ '%06x' | format(16777216 | random) }}"
        holder:
          deployment_id: "{{ now(utc=true, fmt='%Y%m%dT%H%M%SZ') }}-cli-hold-{{ suffix }}"
          action: deploy
          version: "1.1.0"
      block:
        - name: Take the deploy lock as this ansible-playbook (the bluegreen_controller lookup names it)
          bluegreen_state:
            dir: "{{ bluegreen_state_dir }}"
            action: lock
            holder: "{{ holder | combine(lookup('bluegreen_controller')) }}"
          register: taken
          run_once: true

        - name: Wait for the gate
          ansible.builtin.wait_for:
            path: "{{ gate }}"
            timeout: 300
      always:
        - name: Release the deploy lock
          bluegreen_state:
            dir: "{{ bluegreen_state_dir }}"
            action: unlock
            deployment_id: "{{ taken.lock.deployment_id }}"
          run_once: true
          when: taken.lock is defined
"""


class CliLock:
    """ansible-playbook holding the deploy lock of `state_dir` (inventory `inventory`) until release()."""

    def __init__(self, tmp: Path, inventory: Path, state_dir: Path, extra: tuple[str, ...] = ()) -> None:
        self.gate = tmp / "cli-lock-gate"
        self.state_dir = state_dir
        playbook = tmp / "hold_lock.yml"
        playbook.write_text(PLAYBOOK)
        self.playbook = start_playbook(
            playbook,
            *("-i", str(inventory)),
            *("-e", json.dumps({"gate": str(self.gate), "bluegreen_state_dir": str(state_dir)})),
            *extra,
        )  # from the repo: the project's ansible.cfg (roles, modules, the lookup)
        self.proc = self.playbook.proc
        self.lock = self._wait_for_lock()

    def _wait_for_lock(self) -> dict:
        path = self.state_dir / "deploy.lock"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the CLI lock holder ended early: {self.playbook.output()[-3000:]}")
            try:
                lock = json.loads(path.read_text())
            except (OSError, ValueError):
                lock = {}
            if lock.get("pid") == self.proc.pid:
                return lock
            time.sleep(0.1)
        raise AssertionError(f"no CLI lock after 120 s: {self.playbook.output()[-3000:]}")

    def release(self) -> None:
        """Open the gate; the playbook releases the lock and ends (killed if it does not)."""
        self.gate.touch()
        run = self.playbook.wait(timeout=120)
        assert run.returncode == 0, run.tail()
        assert not (self.state_dir / "deploy.lock").exists()

    def stop(self) -> None:
        """In a finally: release if still running, never leave the process behind."""
        if self.proc.poll() is None:
            self.gate.touch()
            with contextlib.suppress(subprocess.TimeoutExpired):  # then wait() killed it
                self.playbook.wait(timeout=60)
