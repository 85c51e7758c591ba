#!/usr/bin/python
"""Everything an operator asks first, in one read-only call on an lb host."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: bluegreen_status
short_description: Live color, versions, node health, lock, running deployment and recent history
description:
  - Reads state.json, deploy.lock and history.jsonl from I(state_dir), the live color and every
    server's health from HAProxy's runtime API, and each node's C(/version) at the address HAProxy
    routes to. Returns it structured (I(status)) and as lines for humans (I(lines)).
  - Shows the last run's durable failure (stage, check, host, observed) and a running deployment whose
    controller is gone (its lock stale) as abandoned.
  - Never changes anything. One lb's view; C(bluegreen_status_lbs) puts every lb's together and says
    whether they agree.
options:
  state_dir:
    description: bluegreen state directory.
    type: path
    required: true
  history_lines:
    description: How many recent history entries to include.
    type: int
    default: 5
  timeout:
    description: Seconds to wait for each node's /version.
    type: float
    default: 3.0
extends_documentation_fragment:
  - bluegreen_haproxy
  - bluegreen_haproxy.live_map
author: bluegreen
"""

EXAMPLES = r"""
- name: Read the status
  bluegreen_status:
    socket: /var/lib/bluegreen/haproxy/admin.sock
    map: /var/lib/bluegreen/haproxy/live.map
    state_dir: /var/lib/bluegreen/state
  register: status
"""

RETURN = r"""
status:
  description:
    - live, idle, state_live, agree, map_file_live (the live color in the map file a reload loads), versions,
      warm_until, deployment, failure, lock, abandoned, nodes,
      history.
    - failure is the last run's first failure as C(bluegreen_state action=fail) stored it
      (run_id, stage, check, host, observed), kept until the next run begins.
    - abandoned is the running deployment when nobody runs it any more (its lock is stale or gone) -
      run_id, action, stage, reason; else null.
  returned: always
  type: dict
lines:
  description: The same, one line per fact, for humans.
  returned: always
  type: list
"""

import json
import socket

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.bluegreen_haproxy import HAProxyRuntime, HAProxyRuntimeError
from ansible.module_utils.bluegreen_state import (
    COLORS,
    StateDir,
    StateError,
    abandoned_run,
    other_color,
)
from ansible.module_utils.bluegreen_stats import summarize
from ansible.module_utils.bluegreen_status_view import render
from ansible.module_utils.bluegreen_traffic import map_file_color
from ansible.module_utils.urls import open_url


def node_version(address: str, timeout: float) -> str | None:
    try:
        with open_url(f"http://{address}/version", timeout=timeout) as resp:
            return json.loads(resp.read()).get("version")
    except Exception:  # any failure means "does not answer", which is what status reports
        return None


def collect(module: AnsibleModule) -> dict:
    p = module.params
    store = StateDir(p["state_dir"])
    state = store.read() or {}
    lock = store.lock_info()
    runtime = HAProxyRuntime(p["socket"])
    live = runtime.show_map(p["map"]).get("live")
    backends = summarize(runtime.show_stat())
    nodes = []
    for color in COLORS:
        for name, server in sorted(backends.get(f"bg_{color}", {}).get("servers", {}).items()):
            nodes.append(
                {
                    "name": name,
                    "color": color,
                    "address": server["address"],
                    "haproxy": server["status"],
                    "check": server["check_status"],
                    "version": node_version(server["address"], p["timeout"]),
                }
            )
    return {
        "lb": socket.gethostname(),
        "live": live,
        "idle": other_color(live) if live in COLORS else None,
        "state_live": state.get("live"),
        "agree": state.get("live") == live,
        # what a reload or restart of HAProxy would load: it must say the live color too
        "map_file_live": map_file_color(p["map"]),
        "versions": state.get("versions", {}),
        "warm_until": state.get("warm_until"),
        "deployment": state.get("deployment"),
        "failure": state.get("failure"),
        "lock": lock,
        "abandoned": abandoned_run(state, lock),
        "nodes": nodes,
        "history": store.history(p["history_lines"]) if p["history_lines"] else [],
    }


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "socket": {"type": "path", "required": True},
            "map": {"type": "path", "required": True},
            "state_dir": {"type": "path", "required": True},
            "history_lines": {"type": "int", "default": 5},
            "timeout": {"type": "float", "default": 3.0},
        },
        supports_check_mode=True,
    )
    try:
        status = collect(module)
    except (HAProxyRuntimeError, StateError) as exc:
        module.fail_json(msg=f"status on lb {socket.gethostname()}: {exc}")
    # status.yml shows every lb's in one (bluegreen_status_lbs), which is also its progress event
    module.exit_json(changed=False, status=status, lines=render(status))


if __name__ == "__main__":
    main()
