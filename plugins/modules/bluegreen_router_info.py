#!/usr/bin/python
"""What HAProxy is doing: live color, and each color's backend health and counters."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: bluegreen_router_info
short_description: Read the live color and the health of each color's backend from HAProxy
description:
  - Reads the live color from HAProxy's live-color map and C(show stat) through the runtime API.
  - With I(require_healthy), fails naming every server of that color that HAProxy does not see UP.
  - Never changes anything.
options:
  require_healthy:
    description: Colors whose backend must have every server UP (at least one server).
    type: list
    elements: str
    default: []
  members:
    description:
      - Per color, the node names the inventory gives it. Fails naming the nodes HAProxy's backend of
        that color lacks and the servers it holds beyond them (a server in maintenance excepted, such
        as one HAProxy would not delete, which takes no traffic until a reload drops it).
      - C(site.yml) is what makes them agree (module C(bluegreen_backend_servers), without a reload).
    type: dict
extends_documentation_fragment:
  - bluegreen_haproxy
  - bluegreen_haproxy.live_map
author: bluegreen
"""

EXAMPLES = r"""
- name: Check HAProxy's backends hold the inventory's nodes, and no others
  bluegreen_router_info:
    socket: /var/lib/bluegreen/haproxy/admin.sock
    map: /var/lib/bluegreen/haproxy/live.map
    members:
      blue: "{{ groups['blue'] }}"
      green: "{{ groups['green'] }}"

- name: Check the live color is healthy
  bluegreen_router_info:
    socket: /var/lib/bluegreen/haproxy/admin.sock
    map: /var/lib/bluegreen/haproxy/live.map
    require_healthy: [blue]
"""

RETURN = r"""
live:
  description: The live color HAProxy routes to.
  returned: always
  type: str
idle:
  description: The other color (where the preview frontend routes).
  returned: always
  type: str
colors:
  description: Per color, its backend's status, servers_up, servers_total, queue, counters and servers.
  returned: always
  type: dict
servers:
  description: Every server of both colors as a flat list (color, name, address, status, check_status).
  returned: always
  type: list
"""

import socket

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.bluegreen_haproxy import HAProxyRuntime, HAProxyRuntimeError
from ansible.module_utils.bluegreen_state import COLORS, other_color
from ansible.module_utils.bluegreen_stats import backend_name, summarize, unhealthy_servers


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "socket": {"type": "path", "required": True},
            "map": {"type": "path", "required": True},
            "require_healthy": {"type": "list", "elements": "str", "default": []},
            "members": {"type": "dict"},
        },
        supports_check_mode=True,
    )
    where = f"lb {socket.gethostname()}"
    runtime = HAProxyRuntime(module.params["socket"])
    try:
        live = runtime.show_map(module.params["map"]).get("live")
        backends = summarize(runtime.show_stat())
    except HAProxyRuntimeError as exc:
        module.fail_json(msg=f"router check on {where}: {exc}")
    if live not in COLORS:
        module.fail_json(msg=f"router check on {where}: no valid live color in HAProxy's map: {live!r}")
    colors = {
        color: backends.get(backend_name(color), {"servers": {}, "servers_up": 0, "servers_total": 0})
        for color in COLORS
    }
    servers = [
        {"color": color, "name": name, **server}
        for color in COLORS
        for name, server in sorted(colors[color]["servers"].items())
    ]
    result = {"changed": False, "live": live, "idle": other_color(live), "colors": colors, "servers": servers}
    for color in module.params["require_healthy"]:
        if color not in COLORS:
            module.fail_json(msg=f"require_healthy: unknown color {color!r}", **result)
        backend = colors[color]
        down = unhealthy_servers(backend)
        if backend["servers_total"] == 0 or down:
            observed = ", ".join(down) or "no servers"
            module.fail_json(
                msg=f"health check on {where}: {color} is not healthy in HAProxy: {observed}",
                **result,
            )
    differences = membership_differences(colors, module.params["members"] or {})
    if isinstance(differences, str):
        module.fail_json(msg=differences, **result)
    if differences:
        module.fail_json(
            msg=f"membership check on {where}: HAProxy's backends differ from the inventory: "
            f"{'; '.join(differences)}; run playbooks/site.yml to add or remove them (no reload)",
            **result,
        )
    module.exit_json(**result)


def membership_differences(colors: dict, members: dict) -> list[str] | str:
    """What differs between each color's backend and the inventory's nodes of it (a str: bad input)."""
    differences = []
    for color, names in sorted(members.items()):
        if color not in COLORS:
            return f"members: unknown color {color!r} (expected {', '.join(COLORS)})"
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            return f"members: {color} must be a list of node names, got {names!r}"
        held = colors[color]["servers"]
        missing = [name for name in names if name not in held]
        # a server in maintenance takes no traffic (one HAProxy would not delete is kept so until a reload)
        active = [name for name, server in held.items() if server["status"] != "MAINT"]
        extra = sorted(name for name in active if name not in names)
        if missing:
            differences.append(f"{color} nodes not in HAProxy: {', '.join(missing)}")
        if extra:
            differences.append(f"{color} servers not in the inventory: {', '.join(extra)}")
    return differences


if __name__ == "__main__":
    main()
