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
  - The lifecycle of a run of deploy, switch, rollback or retire has its one home here, on the run's
    anchor lb host. C(begin) checks the inputs, computes from/to, takes the lock (breaking a stale one
    only with I(break_lock)) and writes the running deployment; C(stage) records a stage's start time
    in state.json (so durations need no facts); C(fail) stores the run's first failure durably in
    state.json's C(failure); C(end) appends the history line with stage durations, clears the running
    deployment, releases the lock and returns the run's closing message.
  - C(stage), C(fail) and C(end) act only for the run that holds the lock (its id, token, pid and host).
  - Every lifecycle result carries C(bluegreen_event), a progress record for a callback plugin.
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
      - C(begin), C(stage), C(fail) and C(end) are a run's lifecycle (see the description).
    type: str
    choices: [read, init, lock, unlock, update, record, begin, stage, fail, end]
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
    description: History entry for C(record); for C(end), fields added to the run's history line.
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
  run_action:
    description: For C(begin), what the run does.
    type: str
    choices: [deploy, switch, rollback, retire]
  controller:
    description:
      - For C(begin), who runs it (the P(bluegreen_controller#lookup) lookup's pid, user, host, actor).
        pid and host, with the run's id and token, prove later that the run holds the lock.
    type: dict
  version:
    description: For C(begin) of a deploy, the version to deploy.
    type: str
  color:
    description: For C(begin) of a switch, the color to make live (blue or green).
    type: str
  ttl_seconds:
    description: For C(begin), after how long the run's lock counts as stale.
    type: int
    default: 3600
  run:
    description:
      - For C(stage), C(fail) and C(end), the run as C(begin) returned it.
      - C(end) also takes a run that never began (no id, e.g. C({action, version, to})) and then only
        returns its message, from I(failure).
    type: dict
  stage:
    description: For C(stage), the stage the run enters (preflight, provision, validate, switch, ...).
    type: str
  failure:
    description:
      - For C(fail), what failed; keys stage, check, host and observed (a string, cut at 1200 characters).
      - For C(end) of a run that never began, its failure, to name in the message.
    type: dict
  rollback_error:
    description: For C(end), why switching back after a failure past the switch failed.
    type: str
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

- name: Begin a deploy of 1.2.0
  bluegreen_state:
    dir: /var/lib/bluegreen/state
    action: begin
    run_action: deploy
    version: "1.2.0"
    controller: "{{ lookup('bluegreen_controller') }}"
    break_lock: false
  register: begun

- name: Enter stage provision
  bluegreen_state:
    dir: /var/lib/bluegreen/state
    action: stage
    run: "{{ begun.run }}"
    stage: provision

- name: Record the failure (the first one of a run wins)
  bluegreen_state:
    dir: /var/lib/bluegreen/state
    action: fail
    run: "{{ begun.run }}"
    failure: {stage: validate, check: health_ready, host: green-1, observed: "503 after 30s"}

- name: End the run (history, deployment cleared, lock released) and show its message
  bluegreen_state:
    dir: /var/lib/bluegreen/state
    action: end
    run: "{{ begun.run }}"

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
run:
  description:
    - For C(begin), the run - id (unique, from the time, a label and a random part), token, action,
      version, live, idle (the color acted on), from, to, versions_before, started_at, controller, dir, stage.
    - For C(stage), the same with the deployment's stage, marks (stage start times) and failure.
  returned: when action is begin or stage
  type: dict
abandoned:
  description: The history line written for the run whose stale lock C(begin) broke (result abandoned).
  returned: when begin broke the lock of a run that never ended
  type: dict
entered:
  description: For C(stage), whether the stage was entered (false once the run has failed).
  returned: when action is stage
  type: bool
failure:
  description:
    - For C(fail), the run's failure as stored - the first one, when one was stored already.
    - For C(stage), the run's failure or null.
  returned: when action is fail or stage
  type: dict
first:
  description: For C(fail), whether this failure was the run's first (and so stored).
  returned: when action is fail
  type: bool
result:
  description: For C(end), ok, failed or rolled-back (a deploy that failed past its switch).
  returned: when action is end
  type: str
failed_run:
  description: For C(end), whether the run failed (the caller then fails with I(message)).
  returned: when action is end
  type: bool
message:
  description: For C(end), the closing sentence; on failure its stage, check, host, observed value, traffic.
  returned: when action is end
  type: str
bluegreen_event:
  description:
    - For C(begin), C(stage), C(fail) and C(end), the progress record (docs/architecture.md) - type
      (run_start, stage_start, failure, run_end), run_id, action, stage, time, and per type version, from, to;
      check, host, observed; result, message, durations_s. Null when nothing happened (a stage not entered,
      a failure after the first).
  returned: when action is begin, stage, fail or end
  type: dict
"""

import socket

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.bluegreen_state import (
    COLORS,
    RUN_ACTIONS,
    Lifecycle,
    StateDir,
    StateError,
    event,
    holds,
    run_message,
)


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
    if module.check_mode:
        store.check_acquire(holder, break_stale=module.params["break_lock"])  # refused as a real run would be
        return {"changed": True}
    _, broken = store.acquire(holder, break_stale=module.params["break_lock"])
    return {"changed": True, **({"broken_lock": broken} if broken else {})}


def _begin(module: AnsibleModule, store: StateDir, state: dict | None) -> dict:
    p = module.params
    run, extra = Lifecycle(store).begin(
        p["run_action"],
        controller=p["controller"],
        version=p["version"],
        color=p["color"],
        ttl_seconds=p["ttl_seconds"],
        break_stale=p["break_lock"],
        check=module.check_mode,
    )
    started = event(
        "run_start", run, run["stage"], version=run["version"], **{"from": run["from"], "to": run["to"]}
    )
    return {"changed": True, "run": run, **extra, "bluegreen_event": started}


def _stage(module: AnsibleModule, store: StateDir, state: dict | None) -> dict:
    run, stage = module.params["run"], module.params["stage"]
    if module.check_mode:
        return {
            "changed": False,
            "run": {**run, "stage": stage},
            "entered": True,
            "failure": None,
            "bluegreen_event": None,
        }
    deployment, entered = Lifecycle(store).stage(run, stage)
    return {
        "changed": entered,
        "run": {**run, **deployment, "id": run["id"]},
        "entered": entered,
        "failure": deployment.get("failure"),
        "bluegreen_event": event("stage_start", run, stage) if entered else None,
    }


def _fail(module: AnsibleModule, store: StateDir, state: dict | None) -> dict:
    run, failure = module.params["run"], module.params["failure"]
    if module.check_mode:
        stored, first = {**failure, "run_id": run.get("id")}, True
    else:
        stored, first = Lifecycle(store).fail(run, failure)
    return {
        "changed": first,
        "failure": stored,
        "first": first,
        "bluegreen_event": (
            event("failure", run, stored["stage"], **{k: stored[k] for k in ("check", "host", "observed")})
            if first
            else None
        ),
    }


def _end(module: AnsibleModule, store: StateDir, state: dict | None) -> dict:
    p = module.params
    run = p["run"]
    if not run.get("id") or module.check_mode:
        # a run that never began (begin refused), or check mode: nothing to record or release
        failure = p["failure"]
        message = run_message(run, failure, rollback_error=p["rollback_error"])
        result = "ok" if failure is None else "failed"
        return {
            "changed": False,
            "result": result,
            "failed_run": failure is not None,
            "message": message,
            "bluegreen_event": event("run_end", run, run.get("stage"), result=result, message=message),
        }
    ended = Lifecycle(store).end(run, rollback_error=p["rollback_error"], entry=p["entry"])
    return {
        "changed": True,
        "result": ended["result"],
        "failed_run": ended["failed"],
        "message": ended["message"],
        "entry": ended["entry"],
        "bluegreen_event": event(
            "run_end",
            run,
            "finish" if run.get("action") == "deploy" else run.get("action"),
            result=ended["result"],
            message=ended["message"],
            durations_s=ended["entry"].get("durations_s"),
        ),
    }


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
    "begin": _begin,
    "stage": _stage,
    "fail": _fail,
    "end": _end,
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
                "choices": [
                    "read",
                    "init",
                    "lock",
                    "unlock",
                    "update",
                    "record",
                    "begin",
                    "stage",
                    "fail",
                    "end",
                ],
            },
            "live": {"type": "str", "choices": list(COLORS)},
            "versions": {"type": "dict"},
            "state": {"type": "dict"},
            "entry": {"type": "dict"},
            "holder": {"type": "dict"},
            "deployment_id": {"type": "str"},
            "break_lock": {"type": "bool", "default": False},
            "history_lines": {"type": "int", "default": 10},
            "run_action": {"type": "str", "choices": list(RUN_ACTIONS)},
            "controller": {"type": "dict"},
            "version": {"type": "str"},
            "color": {"type": "str"},
            "ttl_seconds": {"type": "int", "default": 3600},
            "run": {"type": "dict"},
            "stage": {"type": "str"},
            "failure": {"type": "dict"},
            "rollback_error": {"type": "str"},
        },
        required_if=[
            ("action", "init", ["live"]),
            ("action", "update", ["state"]),
            ("action", "record", ["entry"]),
            ("action", "lock", ["holder"]),
            ("action", "unlock", ["deployment_id"]),
            ("action", "begin", ["run_action", "controller"]),
            ("action", "stage", ["run", "stage"]),
            ("action", "fail", ["run", "failure"]),
            ("action", "end", ["run"]),
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
