#!/usr/bin/python
"""The traffic switch: gate, one HAProxy runtime-API map change (written to disk first), probe."""

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
  - With I(expect_version) the switch is gated first on what HAProxy and the nodes say now; every
    server of the target color's backend must be UP in HAProxy, and answer C(/version) with that
    version (warm on the release C(state.json) records). A refused gate changes nothing.
  - With I(probe_url) a new request (one log entry) is sent through the live frontend after the
    change; it must be answered 200 by the target color (C(X-Bluegreen-Color)). If not, the module
    switches this lb back and fails saying so, so that the message is true about where traffic is.
  - Without I(color) the module reports the live color and compares HAProxy's entry with the map
    file (what a reload would load); with I(on_disagreement=fail) a difference fails, with
    C(repair) the map file and C(state.json) are rewritten to what HAProxy serves (traffic does not move).
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
  expect_version:
    description:
      - Gate before the switch; every server of the target color is UP in HAProxy and reports this
        version on C(/version). Not checked when the target is live already.
    type: str
  probe_url:
    description: Live frontend URL (C(http://host:port)) to prove the switch with one new request.
    type: str
  probe_id:
    description: Entry id of the probe (the service is C(bluegreen-probe)); default a unique one.
    type: str
  timeout:
    description: Seconds each HTTP request of the gate and the probe may take.
    type: float
    default: 5.0
  on_disagreement:
    description:
      - Without I(color), what to do when the map file and HAProxy's live entry differ (a controller
        that died between the two writes of a switch).
    type: str
    choices: [report, fail, repair]
    default: report
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

- name: Make green live if it is warm on 1.1.0, then prove new requests land there
  bluegreen_switch:
    socket: /var/lib/bluegreen/haproxy/admin.sock
    map: /var/lib/bluegreen/haproxy/live.map
    state_dir: /var/lib/bluegreen/state
    color: green
    expect_version: 1.1.0
    probe_url: http://10.0.0.10:8080

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
gate:
  description: What the gate saw, each target server's status and version.
  returned: when I(expect_version) was checked
  type: dict
  sample: {green-1: {status: UP, version: 1.1.0, address: "127.0.0.1:9201"}}
probe:
  description: The probe's answer, status, color and node that served it, milliseconds.
  returned: when I(probe_url) was given and the module switched or the target was live
  type: dict
  sample: {status: 200, color: green, node: green-1, ms: 3.2}
repaired:
  description: Without I(color) and with I(on_disagreement=repair), whether the files were rewritten.
  returned: always
  type: bool
"""

import socket
import time
import uuid

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.bluegreen_haproxy import HAProxyRuntime, HAProxyRuntimeError
from ansible.module_utils.bluegreen_state import COLORS, StateError, now
from ansible.module_utils.bluegreen_traffic import (
    MAP_KEY,
    Switch,
    SwitchRefused,
    describe_probe,
    gate,
    map_file_color,
    probe,
)


def switch_back(
    switch: Switch, *, target: str, live: str, old_state: dict | None, answer: dict, where: str, result: dict
) -> str:
    """The probe says the new color does not serve: back to the old one on this lb; the true message."""
    error = switch.runtime_set(live)
    if error is None:
        switch.files(live, old_state, warm=False)
        result["live"] = live
        now_live = f"switched back: {live} is live again on this lb"
    else:
        now_live = f"SWITCHING BACK FAILED ({error}): {target} is live on this lb"
    return (
        f"switch to {target} on {where}: a new request after the switch {describe_probe(answer)}, "
        f"expected 200 by {target}; {now_live}"
    )


def query(module: AnsibleModule, switch: Switch, where: str, result: dict) -> None:
    """No color: report, and compare the map file (what a reload loads) with HAProxy's entry."""
    live, on_disk = result["live"], result["on_disk"]
    if on_disk == live:
        module.exit_json(changed=False, repaired=False, **result)
    problem = (
        f"on {where} HAProxy routes live traffic to {live} but the map file {switch.map} says {on_disk}: "
        f"a reload or restart would move traffic to {on_disk}"
    )
    mode = module.params["on_disagreement"]
    if mode == "fail":
        module.fail_json(
            msg=f"{problem}; repair with -e bluegreen_repair_map=true (keeps {live} live)", **result
        )
    if mode == "report":
        module.exit_json(changed=False, repaired=False, disagreement=problem, **result)
    if module.check_mode:
        module.exit_json(changed=True, repaired=False, disagreement=problem, **result)
    try:
        state = switch.store.read() if switch.store else None
    except StateError as exc:
        module.fail_json(msg=f"repair on {where}: {exc}", **result)
    switch.files(live, {**state, "live": live} if state else None, warm=False)
    module.exit_json(changed=True, repaired=True, disagreement=problem, **{**result, "on_disk": live})


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "socket": {"type": "path", "required": True},
            "map": {"type": "path", "required": True},
            "color": {"type": "str", "choices": list(COLORS)},
            "state_dir": {"type": "path"},
            "warm_seconds": {"type": "int", "default": 3600},
            "expect_version": {"type": "str"},
            "probe_url": {"type": "str"},
            "probe_id": {"type": "str"},
            "timeout": {"type": "float", "default": 5.0},
            "on_disagreement": {"type": "str", "choices": ["report", "fail", "repair"], "default": "report"},
        },
        supports_check_mode=True,
    )
    p = module.params
    where = f"lb {socket.gethostname()}"
    probe_id = p["probe_id"] or f"probe-{uuid.uuid4().hex}"
    runtime = HAProxyRuntime(p["socket"])
    switch = Switch(runtime, p["map"], p["state_dir"], p["warm_seconds"])
    try:
        live = switch.live()
    except HAProxyRuntimeError as exc:
        module.fail_json(msg=f"switch check on {where}: cannot read the live color: {exc}")
    on_disk = map_file_color(p["map"])
    if live not in COLORS:
        module.fail_json(
            msg=f"switch check on {where}: HAProxy's map {p['map']} has no valid live entry: {live!r}"
        )
    target = p["color"]
    result = {"live": live, "previous": live, "on_disk": on_disk}
    if target is None:
        query(module, switch, where, result)
    if target == live and on_disk == live:
        if p["probe_url"] and not module.check_mode:
            result["probe"] = probe(p["probe_url"], probe_id, p["timeout"])
        module.exit_json(changed=False, **result)

    if p["expect_version"] and target != live:
        try:
            result["gate"] = gate(runtime, target, p["expect_version"], p["timeout"])
        except (SwitchRefused, HAProxyRuntimeError) as exc:
            module.fail_json(msg=f"switch to {target} on {where} refused, {live} stays live: {exc}", **result)

    diff = {"before": f"{MAP_KEY} {live}\n", "after": f"{MAP_KEY} {target}\n", "before_header": p["map"]}
    if module.check_mode:
        module.exit_json(changed=True, diff=diff, **{**result, "live": target})

    try:
        old_state = switch.store.read() if switch.store else None
    except StateError as exc:
        module.fail_json(msg=f"switch on {where}: {exc}")
    switch.files(target, old_state, warm=True)
    started = time.perf_counter()
    error = switch.runtime_set(target)
    elapsed_ms = (time.perf_counter() - started) * 1000
    if error:
        # put the files back so disk, state and HAProxy keep agreeing on the old color
        switch.files(live, old_state, warm=False)
        module.fail_json(msg=f"switch to {target} on {where} failed, {live} stays live: {error}", **result)
    result.update(changed=True, diff=diff, live=target, runtime_ms=round(elapsed_ms, 3), switched_at=now())
    if p["probe_url"]:
        answer = result["probe"] = probe(p["probe_url"], probe_id, p["timeout"])
        if answer["status"] != 200 or answer["color"] != target:
            module.fail_json(
                msg=switch_back(
                    switch,
                    target=target,
                    live=live,
                    old_state=old_state,
                    answer=answer,
                    where=where,
                    result=result,
                ),
                **result,
            )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
