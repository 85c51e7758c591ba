#!/usr/bin/python
"""Save HAProxy's server state to its server-state-file through the runtime API."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: bluegreen_server_state
short_description: Save HAProxy's server state so a reload or restart keeps it
description:
  - Reads C(show servers state) from HAProxy's runtime API and writes it atomically to the file named
    by C(server-state-file), which HAProxy loads at start (C(load-server-state-from-file global)).
  - Run it right before a reload or restart, so servers keep their up/down state, weights and
    drain/maintenance flags instead of starting over.
options:
  path:
    description: The server-state-file to write.
    type: path
    required: true
extends_documentation_fragment:
  - bluegreen_haproxy
author: bluegreen
"""

EXAMPLES = r"""
- name: Save HAProxy server state before reload
  bluegreen_server_state:
    socket: /var/lib/bluegreen/haproxy/admin.sock
    path: /var/lib/bluegreen/haproxy/server-state
"""

RETURN = r"""
servers:
  description: Number of server lines saved.
  returned: success
  type: int
  sample: 4
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.bluegreen_files import atomic_write, read_text
from ansible.module_utils.bluegreen_haproxy import HAProxyRuntime, HAProxyRuntimeError


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "socket": {"type": "path", "required": True},
            "path": {"type": "path", "required": True},
        },
        supports_check_mode=True,
    )
    try:
        state = HAProxyRuntime(module.params["socket"]).show_servers_state()
    except HAProxyRuntimeError as exc:
        module.fail_json(msg=f"cannot read server state: {exc}")
    servers = sum(1 for line in state.splitlines() if line and not line.startswith("#") and " " in line)
    old = read_text(module.params["path"])
    changed = old != state
    if changed and not module.check_mode:
        atomic_write(module.params["path"], state)
    module.exit_json(changed=changed, servers=servers, diff={"before": old or "", "after": state})


if __name__ == "__main__":
    main()
