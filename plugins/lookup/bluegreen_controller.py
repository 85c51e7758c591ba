"""Who is running this playbook: the ansible-playbook process, its user and host (for the deploy lock),
and the person who asked for the run when that is not the OS user (bluegreen_actor, e.g. the dashboard's
logged-in user)."""

from __future__ import annotations

DOCUMENTATION = r"""
name: bluegreen_controller
short_description: Identity of the running ansible-playbook (pid, user, host) for the deploy lock
description:
  - Returns one dict with C(pid) of the ansible-playbook process (not of a forked worker), C(user) and
    C(host) of the controller. The deploy lock records it, so a lock whose process is gone is stale.
  - When the variable C(bluegreen_actor) is set (the dashboard passes its logged-in user), the dict also
    has C(actor), the person who asked for the run; the lock and history record it beside the OS user.
    It must be a plain user name (letters, digits, C(_ . @ -), at most 64 characters), else the lookup
    fails naming the value.
author: bluegreen
"""

EXAMPLES = r"""
- name: Show who holds the controller
  ansible.builtin.debug:
    msg: "{{ lookup('bluegreen_controller') }}"
"""

RETURN = r"""
_raw:
  description: One dict with pid, user and host (and actor when bluegreen_actor is set).
  type: list
  elements: dict
"""

import getpass
import os
import re
import socket

from ansible.errors import AnsibleError
from ansible.plugins.lookup import LookupBase

ACTOR_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}")


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


def actor(value) -> str | None:
    """bluegreen_actor checked: None when unset or empty, else a plain user name (AnsibleError if not)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not ACTOR_PATTERN.fullmatch(value):
        raise AnsibleError(
            f"bluegreen_actor {str(value)[:80]!r} is not a user name: expected letters, digits, "
            "'_', '.', '@' or '-', at most 64 characters"
        )
    return value


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        identity = {"pid": playbook_pid(), "user": getpass.getuser(), "host": socket.gethostname()}
        raw = (variables or {}).get("bluegreen_actor")
        if raw is not None and self._templar is not None:
            raw = self._templar.template(raw)
        who = actor(raw)
        if who is not None:
            identity["actor"] = who
        return [identity]
