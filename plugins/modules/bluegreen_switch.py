#!/usr/bin/python
"""The atomic blue/green switch: one HAProxy runtime-API map change, written to disk first."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: bluegreen_switch
short_description: Read or atomically change which color HAProxy routes live traffic to
description:
  - The live color is the entry C(live) of HAProxy's map file I(map), read by the C(use_backend) rule
    of the live frontend (and, through a second static map, by the preview frontend).
  - To switch, the module first writes the new color to the map file and to C(state.json) in
    I(state_dir) (atomic writes), so a reload or restart of HAProxy keeps it; then it sets the map
    entry through the runtime API, which HAProxy applies to the very next request, on new and on
    kept-alive connections alike; then it reads the entry back from HAProxy to verify.
  - Never reloads or restarts HAProxy. If HAProxy refuses the change, the files are put back.
options:
  color:
    description: Color to make live. Without it, the module only reports the live color.
    type: str
    choices: [blue, green]
  state_dir:
    description: bluegreen state directory whose state.json records the live color (and previous, warm_until).
    type: path
  warm_seconds:
    description: After a switch, how long the previous color stays warm for rollback (state.json warm_until).
    type: int
    default: 3600
extends_documentation_fragment:
  - bluegreen_haproxy
  - bluegreen_haproxy.live_map
author: bluegreen
"""

EXAMPLES = r"""
- name: Make green live
  bluegreen_switch:
    socket: /var/lib/bluegreen/haproxy/admin.sock
    map: /var/lib/bluegreen/haproxy/live.map
    state_dir: /var/lib/bluegreen/state
    color: green

- name: Read the live color
  bluegreen_switch:
    socket: /var/lib/bluegreen/haproxy/admin.sock
    map: /var/lib/bluegreen/haproxy/live.map
  register: live
"""

RETURN = r"""
live:
  description: The live color after the module ran (as HAProxy reports it).
  returned: always
  type: str
  sample: green
previous:
  description: The live color before.
  returned: always
  type: str
  sample: blue
on_disk:
  description: The live color in the map file before the module ran.
  returned: always
  type: str
runtime_ms:
  description: Milliseconds from sending the map change to HAProxy confirming it.
  returned: when switched
  type: float
switched_at:
  description: UTC time of the switch.
  returned: when switched
  type: str
"""

import datetime as dt
import socket
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.bluegreen_files import atomic_write, read_text
from ansible.module_utils.bluegreen_haproxy import HAProxyRuntime, HAProxyRuntimeError
from ansible.module_utils.bluegreen_state import COLORS, StateDir, StateError, now, other_color

MAP_KEY = "live"


def map_file_color(path: str) -> str | None:
    for line in (read_text(path) or "").splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0] == MAP_KEY:
            return fields[1]
    return None


def write_map_file(path: str, color: str) -> None:
    atomic_write(path, f"{MAP_KEY} {color}\n")


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "socket": {"type": "path", "required": True},
            "map": {"type": "path", "required": True},
            "color": {"type": "str", "choices": list(COLORS)},
            "state_dir": {"type": "path"},
            "warm_seconds": {"type": "int", "default": 3600},
        },
        supports_check_mode=True,
    )
    p = module.params
    where = f"lb {socket.gethostname()}"
    runtime = HAProxyRuntime(p["socket"])
    try:
        live = runtime.show_map(p["map"]).get(MAP_KEY)
    except HAProxyRuntimeError as exc:
        module.fail_json(msg=f"switch check on {where}: cannot read the live color: {exc}")
    on_disk = map_file_color(p["map"])
    if live not in COLORS:
        module.fail_json(
            msg=f"switch check on {where}: HAProxy's map {p['map']} has no valid live entry: {live!r}"
        )
    target = p["color"]
    result = {"live": live, "previous": live, "on_disk": on_disk}
    if target is None or (target == live and on_disk == live):
        module.exit_json(changed=False, **result)

    diff = {"before": f"{MAP_KEY} {live}\n", "after": f"{MAP_KEY} {target}\n", "before_header": p["map"]}
    if module.check_mode:
        module.exit_json(changed=True, diff=diff, **{**result, "live": target})

    store = StateDir(p["state_dir"]) if p["state_dir"] else None
    try:
        old_state = store.read() if store else None
    except StateError as exc:
        module.fail_json(msg=f"switch on {where}: {exc}")
    # 1. durable first: a reload or restart of HAProxy from here on comes back with the new color
    write_map_file(p["map"], target)
    if store and old_state is not None:
        warm_until = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=p["warm_seconds"])).strftime(
            "%Y-%m-%dT%H:%M:%S.%fZ"
        )
        store.write({**old_state, "live": target, "previous": other_color(target), "warm_until": warm_until})
    # 2. the switch itself: one map entry, applied by HAProxy to the next request
    started = time.perf_counter()
    try:
        runtime.set_map(p["map"], MAP_KEY, target)
        confirmed = runtime.show_map(p["map"]).get(MAP_KEY)
    except HAProxyRuntimeError as exc:
        confirmed, error = None, str(exc)
    else:
        error = None if confirmed == target else f"HAProxy reports {confirmed!r} after setting {target!r}"
    elapsed_ms = (time.perf_counter() - started) * 1000
    if error:
        # put the files back so disk, state and HAProxy keep agreeing on the old color
        write_map_file(p["map"], live)
        if store and old_state is not None:
            store.write(old_state)
        module.fail_json(msg=f"switch to {target} on {where} failed, {live} stays live: {error}", **result)
    module.exit_json(
        changed=True,
        diff=diff,
        live=target,
        previous=live,
        on_disk=on_disk,
        runtime_ms=round(elapsed_ms, 3),
        switched_at=now(),
    )


if __name__ == "__main__":
    main()
