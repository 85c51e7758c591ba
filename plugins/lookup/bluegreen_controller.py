"""Who is running this playbook: the ansible-playbook process, its user and host (for the deploy lock)."""

from __future__ import annotations

DOCUMENTATION = r"""
name: bluegreen_controller
short_description: Identity of the running ansible-playbook (pid, user, host) for the deploy lock
description:
  - Returns one dict with C(pid) of the ansible-playbook process (not of a forked worker), C(user) and
    C(host) of the controller. The deploy lock records it, so a lock whose process is gone is stale.
author: bluegreen
"""

EXAMPLES = r"""
- name: Show who holds the controller
  ansible.builtin.debug:
    msg: "{{ lookup('bluegreen_controller') }}"
"""

RETURN = r"""
_raw:
  description: One dict with pid, user and host.
  type: list
  elements: dict
"""

import getpass
import os
import socket

from ansible.plugins.lookup import LookupBase


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def playbook_pid() -> int:
    """Ansible forks workers from the main process: climb while the parent runs the same command."""
    pid = os.getpid()
    own = _cmdline(pid)
    parent = os.getppid()
    while parent > 1 and own and _cmdline(parent) == own:
        pid = parent
        try:
            with open(f"/proc/{pid}/stat") as fh:
                parent = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pid


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        return [{"pid": playbook_pid(), "user": getpass.getuser(), "host": socket.gethostname()}]
