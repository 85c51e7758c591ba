#!/usr/bin/python
"""Deployment state, history and deploy lock on an lb host."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: bluegreen_state
short_description: Read and change bluegreen's deployment state, history and deploy lock
description:
  - Owns C(state.json) (live color, versions per color, running deployment, warm-until),
    C(history.jsonl) (one line per finished deployment, switch, rollback or lock break) and
    C(deploy.lock) in I(dir) on an lb host. Every write is atomic (temp file, fsync, rename).
  - The live color itself is changed only by M(bluegreen_switch), which writes it here and to HAProxy
    in one step.
options:
  dir:
    description: The state directory (C(bluegreen_state_dir)).
    type: path
    required: true
  action:
    description:
      - C(read) returns state, lock and recent history; C(init) writes a first state.json unless one
        exists; C(lock) takes the deploy lock; C(unlock) releases it; C(update) merges I(state) into
        state.json; C(record) appends I(entry) to the history.
    type: str
    choices: [read, init, lock, unlock, update, record]
    default: read
  live:
    description: Live color for C(init).
    type: str
    choices: [blue, green]
  versions:
    description: Version per color for C(init).
    type: dict
  state:
    description: Top-level keys to merge for C(update) (C(versions) is merged per color; C(live) is refused).
    type: dict
  entry:
    description: History entry for C(record).
    type: dict
  holder:
    description:
      - For C(lock), who takes it (deployment_id, token, action, user, host, pid, ttl_seconds).
      - The run holds the lock only when deployment_id, token, pid and host all match the lock's; an
        equal deployment_id of another process is refused like any other run.
    type: dict
  deployment_id:
    description: For C(unlock), the deployment that holds the lock.
    type: str
  break_lock:
    description:
      - For C(lock), break an existing stale lock first (recorded in history). Only when asked.
      - A lock that is not stale (its holder runs and it is within its TTL) is never broken.
    type: bool
    default: false
  history_lines:
    description: How many recent history entries C(read) returns.
    type: int
    default: 10
author: bluegreen
"""

EXAMPLES = r"""
- name: Take the deploy lock
  bluegreen_state:
    dir: /var/lib/bluegreen/state
    action: lock
    holder:
      deployment_id: "20261124T101500-1.2.0"
      action: deploy
      user: alice
      host: ops-1
      pid: 4242
      ttl_seconds: 3600

- name: Record the new version of green
  bluegreen_state:
    dir: /var/lib/bluegreen/state
    action: update
    state:
      versions: {green: "1.2.0"}
"""

RETURN = r"""
state:
  description: state.json after the action (null when none exists yet).
  returned: always
  type: dict
lock:
  description: The deploy lock now (with stale and stale_reason), or null when free.
  returned: always
  type: dict
history:
  description: Recent history entries, oldest first (action read).
  returned: when action is read
  type: list
broken_lock:
  description: The lock that break_lock removed.
  returned: when a lock was broken
  type: dict
"""

import socket

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.bluegreen_state import COLORS, StateDir, StateError, describe_holder, holds


def _read(module: AnsibleModule, store: StateDir, state: dict | None) -> dict:
    return {"changed": False, "history": store.history(module.params["history_lines"])}


def _init(module: AnsibleModule, store: StateDir, state: dict | None) -> dict:
    if state is not None:
        return {"changed": False}
    if not module.check_mode:
        store.write(StateDir.initial(module.params["live"], module.params["versions"] or {}))
    return {"changed": True}


def _update(module: AnsibleModule, store: StateDir, state: dict | None) -> dict:
    if state is None:
        raise StateError(f"no state.json in {store.path} yet: run playbooks/site.yml first")
    changes = dict(module.params["state"])
    if "live" in changes:
        raise StateError("the live color changes only through bluegreen_switch")
    versions = changes.pop("versions", None) or {}
    unknown = set(versions) - set(COLORS)
    if unknown:
        raise StateError(f"unknown color in versions: {sorted(unknown)}")
    new = {**state, **changes, "versions": {**state.get("versions", {}), **versions}}
    changed = new != state
    if changed and not module.check_mode:
        store.write(new)
    return {"changed": changed, "diff": {"before": state, "after": new}}


def _record(module: AnsibleModule, store: StateDir, state: dict | None) -> dict:
    if module.check_mode:
        return {"changed": True}
    return {"changed": True, "entry": store.record(module.params["entry"])}


def _lock(module: AnsibleModule, store: StateDir, state: dict | None) -> dict:
    holder = module.params["holder"]
    if not holder.get("deployment_id"):
        raise StateError("action lock needs holder.deployment_id")
    current = store.lock_info()
    if current and holds(current, holder):
        return {"changed": False}  # re-entrant for the run that holds it, not for an equal id
    if current and not module.params["break_lock"]:
        raise StateError(describe_holder(current))  # refused in check mode too: a real run would be
    if current and not current.get("stale"):
        raise StateError(f"refusing to break a lock that is not stale: {describe_holder(current)}")
    if module.check_mode:
        return {"changed": True}
    _, broken = store.acquire(holder, break_stale=module.params["break_lock"])
    return {"changed": True, **({"broken_lock": broken} if broken else {})}


def _unlock(module: AnsibleModule, store: StateDir, state: dict | None) -> dict:
    if store.lock_info() is None:
        return {"changed": False}
    if not module.check_mode:
        store.release(module.params["deployment_id"])
    return {"changed": True}


ACTIONS = {
    "read": _read,
    "init": _init,
    "update": _update,
    "record": _record,
    "lock": _lock,
    "unlock": _unlock,
}


def run(module: AnsibleModule, store: StateDir) -> dict:
    state = store.read()
    result = ACTIONS[module.params["action"]](module, store, state)
    result["state"] = state if module.check_mode else store.read()
    result["lock"] = store.lock_info()
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "dir": {"type": "path", "required": True},
            "action": {
                "type": "str",
                "default": "read",
                "choices": ["read", "init", "lock", "unlock", "update", "record"],
            },
            "live": {"type": "str", "choices": list(COLORS)},
            "versions": {"type": "dict"},
            "state": {"type": "dict"},
            "entry": {"type": "dict"},
            "holder": {"type": "dict"},
            "deployment_id": {"type": "str"},
            "break_lock": {"type": "bool", "default": False},
            "history_lines": {"type": "int", "default": 10},
        },
        required_if=[
            ("action", "init", ["live"]),
            ("action", "update", ["state"]),
            ("action", "record", ["entry"]),
            ("action", "lock", ["holder"]),
            ("action", "unlock", ["deployment_id"]),
        ],
        supports_check_mode=True,
    )
    store = StateDir(module.params["dir"])
    try:
        result = run(module, store)
    except (StateError, OSError) as exc:
        module.fail_json(msg=f"bluegreen state in {store.path} on {socket.gethostname()}: {exc}")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
