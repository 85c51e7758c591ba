#!/usr/bin/python
"""Shadow traffic: turn HAProxy's mirror of live batches to the idle color on or off, read its counters."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: bluegreen_shadow
short_description: Mirror a sample of live batches to the idle color (shadow traffic) and judge the answers
description:
  - HAProxy's live frontend samples I(percent) % of C(POST /v1/logs) batches while the entry C(percent)
    of the shadow map I(map) is above 0; the Lua mirror C(bluegreen_shadow.lua) (roles/haproxy) sends
    each sampled batch, marked with the header C(X-Bluegreen-Shadow) set to 1, straight to a server of
    the idle color's backend that its health checks say is up (round robin), whose node writes it to
    its shadow sink, and compares the answer (status, entries accepted) with the live one. The live
    request never waits for the mirror.
  - The switch is the runtime API only (C(set map)); the map file always says 0, so a reload or restart
    of HAProxy always turns shadowing off.
  - I(state=started) resets the counters (unless I(reset=false)) and sets the percentage;
    I(state=stopped) sets it to 0, waits up to I(drain_timeout) seconds for batches already queued,
    and returns the final counters; I(state=read) only reads. Stopping when shadowing was never
    started (or is not set up on this lb) changes nothing and succeeds.
  - Returns check records (C(shadow_mirrored), C(shadow_mismatches), C(shadow_errors)) in the shape of
    every validation check. By default they are returned for the caller to judge; with
    I(fail_on_failed=true) the module fails naming every failed check.
  - Check mode reports what would change and reads the counters; it changes nothing.
options:
  state:
    description: C(started), C(stopped), or C(read).
    type: str
    choices: [started, stopped, read]
    default: read
  map:
    description: Path of the shadow map file, as named in haproxy.cfg (C(haproxy_shadow_map)).
    type: path
    required: true
  percent:
    description: Percentage of live batches to mirror, 1-100. Required with I(state=started).
    type: int
  reset:
    description: With I(state=started), zero the counters first.
    type: bool
    default: true
  drain_timeout:
    description: With I(state=stopped), seconds to wait for batches still queued or in flight.
    type: float
    default: 10
  node:
    description: Name of the lb host in records and messages. Default, this host's name.
    type: str
  fail_on_failed:
    description: Fail when a check record fails (otherwise return them for the caller to judge).
    type: bool
    default: false
extends_documentation_fragment:
  - bluegreen_haproxy
author: bluegreen
"""

EXAMPLES = r"""
- name: Mirror 10 % of live batches to the idle color
  bluegreen_shadow:
    socket: "{{ haproxy_runtime_socket }}"
    map: "{{ haproxy_shadow_map }}"
    state: started
    percent: 10

- name: Stop mirroring and judge what the idle color answered
  bluegreen_shadow:
    socket: "{{ haproxy_runtime_socket }}"
    map: "{{ haproxy_shadow_map }}"
    state: stopped
  register: bluegreen_shadow_result
"""

RETURN = r"""
percent:
  description: The shadow percentage HAProxy applies after the module ran (0 is off).
  returned: always
  type: int
previous_percent:
  description: The percentage before the module ran.
  returned: always
  type: int
available:
  description: Whether this lb has the shadow mirror (the Lua command and the map). When false, nothing
    was done and every record is skipped.
  returned: always
  type: bool
shadow:
  description: The mirror's counters since the last reset, from C(bluegreen shadow) on the runtime API.
    C(live_requests) requests reached the live frontend (with I(state=stopped), until the stop; the
    drain that follows samples nothing, so it is not counted), C(sampled) were sampled, C(enqueued) queued,
    C(dropped_full) dropped (queue full), C(skipped_incomplete) not mirrored (body larger than HAProxy's
    buffer, or chunked), C(mirrored) answered by a node of the idle color, C(matched)/C(mismatched) with
    the same or another status or accepted count than the live answer, C(errors) with no node's answer
    (connection, timeout, HAProxy's own 5xx); C(mismatch_samples) and C(error_samples) keep the last
    few; C(queued), C(inflight) right now. Empty when not I(available).
  returned: always
  type: dict
  sample: {live_requests: 3000, sampled: 301, enqueued: 301, mirrored: 301, matched: 301, mismatched: 0,
           errors: 0, dropped_full: 0, skipped_incomplete: 0, queued: 0, inflight: 0}
drained:
  description: With I(state=stopped), whether every queued batch was mirrored before the counters were read.
  returned: when state is stopped
  type: bool
records:
  description: Check records C(shadow_mirrored) (>= 1 when there was enough live traffic to expect one),
    C(shadow_mismatches) (== 0), C(shadow_errors) (== 0); each with C(name), C(node), C(observed),
    C(threshold), C(op), C(verdict) (pass, fail, skip), C(message), C(detail).
  returned: always
  type: list
  elements: dict
"""

import json
import math
import socket
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.bluegreen_checks import failed, failure_message, record
from ansible.module_utils.bluegreen_haproxy import HAProxyRuntime, HAProxyRuntimeError

KEY = "percent"
CLI = ("bluegreen", "shadow")
# shadow_mirrored is judged only with enough live traffic that seeing no sample at all would be
# this unlikely by chance: (1 - percent/100) ** live_requests < CHANCE.
CHANCE = 0.001


class ShadowUnavailable(Exception):
    """This lb has no shadow mirror (HAProxy without the Lua file or the map)."""


def read_percent(runtime: HAProxyRuntime, map_path: str) -> int | None:
    """The map's `percent` entry as HAProxy holds it; None when absent."""
    try:
        entries = runtime.show_map(map_path)
    except HAProxyRuntimeError as exc:
        raise ShadowUnavailable(str(exc)) from exc
    value = entries.get(KEY)
    try:
        return None if value is None else int(value)
    except ValueError as exc:
        raise HAProxyRuntimeError(f"shadow map {map_path} has percent {value!r}, not an integer") from exc


def set_percent(runtime: HAProxyRuntime, map_path: str, percent: int, present: bool) -> None:
    if present:
        runtime.set_map(map_path, KEY, str(percent))
        return
    answer = runtime.execute("add", "map", map_path, KEY, str(percent))
    if answer:
        raise HAProxyRuntimeError(f"HAProxy refused 'add map {map_path} {KEY} {percent}': {answer}")


def counters(runtime: HAProxyRuntime, reset: bool = False) -> dict:
    answer = runtime.execute(*CLI, *(("reset",) if reset else ()))
    if answer.startswith("Unknown command"):
        raise ShadowUnavailable("HAProxy does not know 'bluegreen shadow' (bluegreen_shadow.lua not loaded)")
    try:
        data = json.loads(answer)
    except ValueError as exc:
        raise HAProxyRuntimeError(f"'bluegreen shadow' answered {answer[:200]!r}, not JSON") from exc
    if not isinstance(data, dict) or "error" in data:
        raise HAProxyRuntimeError(f"'bluegreen shadow' answered {answer[:200]!r}")
    return data


def needed_requests(percent: int) -> int | None:
    """Live requests after which at least one sample is practically certain (None: percent 0)."""
    if percent <= 0:
        return None
    if percent >= 100:
        return 1
    return math.ceil(math.log(CHANCE) / math.log(1 - percent / 100))


def build_records(node: str, shadow: dict, percent: int, available: bool = True) -> list[dict]:
    """The shadow checks, judged on the counters of one shadowing window at `percent` %."""
    names = (("shadow_mirrored", 1, ">="), ("shadow_mismatches", 0, "=="), ("shadow_errors", 0, "=="))
    observed = {
        "shadow_mirrored": shadow.get("mirrored", 0),
        "shadow_mismatches": shadow.get("mismatched", 0),
        "shadow_errors": shadow.get("errors", 0),
    }
    live = shadow.get("live_requests")
    detail = {
        key: shadow.get(key)
        for key in (
            "live_requests",
            "sampled",
            "enqueued",
            "mirrored",
            "matched",
            "mismatched",
            "errors",
            "dropped_full",
            "skipped_incomplete",
        )
    }
    detail["percent"] = percent
    skip_reason = None
    if not available:
        skip_reason = "the shadow mirror is not set up on this lb (haproxy_shadow_enabled is false)"
    elif percent <= 0 and not shadow.get("sampled"):
        skip_reason = "shadow traffic was not started"
    elif not live:
        skip_reason = "no live traffic while shadowing: nothing to mirror"
    records = []
    for name, threshold, op in names:
        if skip_reason:
            message = f"check {name} on {node}: skipped: {skip_reason}"
            records.append(record(name, node, observed[name], threshold, None, op=op, message=message))
            continue
        if name == "shadow_mirrored":
            needed = needed_requests(percent)
            if needed is not None and live < needed and observed[name] == 0:
                message = (
                    f"check {name} on {node}: skipped: only {live} live requests at {percent} %, "
                    f"too few to expect a mirrored batch (needs {needed})"
                )
                records.append(record(name, node, 0, threshold, None, op=op, detail=detail, message=message))
                continue
            ok = observed[name] >= threshold
            message = (
                f"check {name} on {node}: observed {observed[name]} batches mirrored and answered by the "
                f"idle color (of {shadow.get('sampled', 0)} sampled from {live} live requests at "
                f"{percent} %), threshold >= {threshold}"
            )
        else:
            ok = observed[name] == threshold
            samples = shadow.get("mismatch_samples" if name == "shadow_mismatches" else "error_samples")
            message = f"check {name} on {node}: observed {observed[name]}, threshold == {threshold}"
            if not ok and samples:
                message += f"; last: {json.dumps(samples[-1], sort_keys=True)}"
        records.append(
            record(name, node, observed[name], threshold, ok, op=op, detail=detail, message=message)
        )
    return records


def start(
    runtime: HAProxyRuntime, map_path: str, target: int, before: int | None, reset: bool
) -> dict | None:
    """Counters reset (first, so that no batch sampled at the new percentage is missed), then the percent."""
    shadow = counters(runtime, reset=True) if reset else None
    if target != (before or 0) or before is None:
        set_percent(runtime, map_path, target, present=before is not None)
    return shadow


# A live batch sampled before the stop is counted and queued when its live answer comes back, which
# may be a moment after the queue looked empty: the counters are read once nothing was queued, in
# flight or newly sampled for this long (a live answer takes milliseconds here; p99 ~20 ms).
SETTLE_S = 0.3


def stop_and_drain(
    runtime: HAProxyRuntime, map_path: str, previous: int, timeout: float
) -> tuple[dict, bool]:
    """Percent 0, then the counters once nothing is queued, in flight or newly sampled for SETTLE_S
    (or the timeout passed).

    `live_requests` is read right after the stop: it is the sampling window's denominator, and live
    traffic keeps coming while the queue drains (seconds when the idle color is slow), none of it sampled.
    """
    if previous != 0:
        set_percent(runtime, map_path, 0, present=True)
    deadline = time.monotonic() + timeout
    shadow = counters(runtime)
    live_at_stop = shadow.get("live_requests")
    settled_since, sampled = time.monotonic(), shadow.get("sampled")

    def busy(now: dict) -> bool:
        return bool(now.get("queued", 0) or now.get("inflight", 0))

    while time.monotonic() < deadline:
        if busy(shadow) or shadow.get("sampled") != sampled:
            settled_since, sampled = time.monotonic(), shadow.get("sampled")
        elif time.monotonic() - settled_since >= SETTLE_S:
            break
        time.sleep(0.05)
        shadow = counters(runtime)
    if live_at_stop is not None:
        shadow["live_requests"] = live_at_stop
    return shadow, not busy(shadow)


def unavailable(module: AnsibleModule, node: str, state: str, why: Exception) -> None:
    """No mirror on this lb: starting fails, stopping and reading succeed with skipped records."""
    if state == "started":
        module.fail_json(msg=f"bluegreen_shadow on lb {node}: cannot start shadow traffic: {why}")
    result = {"changed": False, "available": False, "percent": 0, "previous_percent": 0, "shadow": {}}
    if state == "stopped":
        result["drained"] = True
    module.exit_json(records=build_records(node, {}, 0, available=False), **result)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "socket": {"type": "path", "required": True},
            "map": {"type": "path", "required": True},
            "state": {"type": "str", "choices": ["started", "stopped", "read"], "default": "read"},
            "percent": {"type": "int"},
            "reset": {"type": "bool", "default": True},
            "drain_timeout": {"type": "float", "default": 10.0},
            "node": {"type": "str"},
            "fail_on_failed": {"type": "bool", "default": False},
        },
        required_if=[("state", "started", ["percent"])],
        supports_check_mode=True,
    )
    p = module.params
    node = p["node"] or socket.gethostname()
    where = f"lb {node}"
    state = p["state"]
    if state == "started" and not 1 <= p["percent"] <= 100:
        module.fail_json(msg=f"bluegreen_shadow on {where}: percent must be 1-100, got {p['percent']}")
    runtime = HAProxyRuntime(p["socket"])

    try:
        before = read_percent(runtime, p["map"])
        shadow = counters(runtime)
    except ShadowUnavailable as exc:
        unavailable(module, node, state, exc)
    except HAProxyRuntimeError as exc:
        module.fail_json(msg=f"bluegreen_shadow on {where}: {exc}")
    previous = before or 0
    result = {"available": True, "previous_percent": previous}
    if state == "read":
        records = build_records(node, shadow, previous)
        module.exit_json(changed=False, percent=previous, shadow=shadow, records=records, **result)

    target = p["percent"] if state == "started" else 0
    judged_at = target if state == "started" else previous
    changed = target != previous or (state == "started" and p["reset"])
    diff = {"before": f"{KEY} {previous}\n", "after": f"{KEY} {target}\n", "before_header": p["map"]}
    if module.check_mode:
        if state == "stopped":
            result["drained"] = not shadow.get("queued", 0)
        records = build_records(node, shadow, judged_at)
        module.exit_json(changed=changed, diff=diff, percent=target, shadow=shadow, records=records, **result)

    try:
        if state == "started":
            shadow = start(runtime, p["map"], target, before, p["reset"]) or shadow
        else:
            shadow, result["drained"] = stop_and_drain(runtime, p["map"], previous, p["drain_timeout"])
        after = read_percent(runtime, p["map"]) or 0
    except (HAProxyRuntimeError, ShadowUnavailable) as exc:
        module.fail_json(msg=f"bluegreen_shadow on {where}: {exc}")
    if after != target:
        module.fail_json(
            msg=f"bluegreen_shadow on {where}: HAProxy has percent {after} after setting {target}"
        )

    records = build_records(node, shadow, judged_at)
    result.update(changed=changed, diff=diff, percent=after, shadow=shadow, records=records)
    if p["fail_on_failed"] and failed(records):
        module.fail_json(msg=failure_message(records, f"bluegreen_shadow on {where}"), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
