#!/usr/bin/python
"""Watch one color's backend in HAProxy for a while; fail as soon as its error rate is too high."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: bluegreen_watch
short_description: Watch a color's error rate, connection errors and queue in HAProxy after a switch
description:
  - Samples C(show stat) every I(interval) seconds for I(seconds). In every interval with at least
    I(min_requests) requests, the error rate (5xx answers, which include HAProxy's own 502/503 for failed
    connections and broken responses, over all answers) must stay at or under I(max_error_rate), and
    the queue at or under I(max_queue).
  - Fails at the first interval over a threshold, naming it and the observed value.
  - With I(rollback_to) it also puts live traffic back on that color at once, on this lb, before it
    fails (map file and C(state.json) first, then one runtime-API change), so clients see errors for
    at most about one interval, not for the time the playbook takes to react. Without it, it never
    changes anything.
options:
  color:
    description: The color to watch (its backend is C(bg_<color>)).
    type: str
    required: true
    choices: [blue, green]
  seconds:
    description: How long to watch.
    type: float
    required: true
  interval:
    description: Seconds between samples.
    type: float
    default: 1.0
  max_error_rate:
    description:
      - Highest error rate (0..1) allowed in an interval. Errors are 5xx answers, including the 502/503
        HAProxy itself sends when a connection or a response fails; the rate is over all answers.
    type: float
    default: 0.01
  min_requests:
    description: Intervals with fewer requests are not judged (too few to be a rate).
    type: int
    default: 5
  max_queue:
    description: Highest number of queued requests allowed.
    type: int
    default: 100
  rollback_to:
    description: On a failed interval, make this color live again on this lb before failing (needs I(map)).
    type: str
    choices: [blue, green]
  map:
    description: HAProxy's live-color map file (for I(rollback_to)).
    type: path
  state_dir:
    description: bluegreen state directory whose C(state.json) records the live color (for I(rollback_to)).
    type: path
  warm_seconds:
    description: After a rollback, how long the color rolled back from counts as warm (C(warm_until)).
    type: int
    default: 3600
extends_documentation_fragment:
  - bluegreen_haproxy
author: bluegreen
"""

EXAMPLES = r"""
- name: Watch green for 30 seconds
  bluegreen_watch:
    socket: /var/lib/bluegreen/haproxy/admin.sock
    color: green
    seconds: 30
    max_error_rate: 0.01

- name: Watch green; at the first bad interval put blue back at once, then fail
  bluegreen_watch:
    socket: /var/lib/bluegreen/haproxy/admin.sock
    map: /var/lib/bluegreen/haproxy/live.map
    state_dir: /var/lib/bluegreen/state
    color: green
    seconds: 30
    rollback_to: blue
"""

RETURN = r"""
samples:
  description: One entry per interval (seconds, requests, errors, error_rate, req_per_s, queue).
  returned: always
  type: list
requests:
  description: Requests seen on the color during the watch.
  returned: always
  type: int
errors:
  description: Errors seen on the color during the watch.
  returned: always
  type: int
rolled_back:
  description: The rollback done at once (to, runtime_ms, at, error when it could not be done).
  returned: when a threshold was crossed and I(rollback_to) was given
  type: dict
  sample: {to: blue, runtime_ms: 0.8, at: "2026-12-03T13:20:01.123456Z", error: null}
"""

import socket
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.bluegreen_haproxy import HAProxyRuntime, HAProxyRuntimeError
from ansible.module_utils.bluegreen_state import StateError, now
from ansible.module_utils.bluegreen_stats import backend_name, interval_rates, summarize
from ansible.module_utils.bluegreen_traffic import Switch


def roll_back(switch: Switch, color: str) -> dict:
    """Make `color` live on this lb now: files first, then the one runtime change."""
    started = time.perf_counter()
    try:
        state = switch.store.read() if switch.store else None
        switch.files(color, state, warm=True)
    except (StateError, OSError) as exc:
        return {"to": color, "error": f"cannot write the map file or state.json: {exc}", "at": now()}
    error = switch.runtime_set(color)
    ms = round((time.perf_counter() - started) * 1000, 3)
    return {"to": color, "runtime_ms": ms, "at": now(), "error": error}


def rollback_note(rolled_back: dict | None) -> str:
    if rolled_back is None:
        return ""
    if rolled_back["error"]:
        return f"; ROLLBACK ON THIS LB FAILED: {rolled_back['error']}"
    return f"; traffic put back on {rolled_back['to']} on this lb at once ({rolled_back['runtime_ms']} ms)"


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "socket": {"type": "path", "required": True},
            "color": {"type": "str", "required": True, "choices": ["blue", "green"]},
            "seconds": {"type": "float", "required": True},
            "interval": {"type": "float", "default": 1.0},
            "max_error_rate": {"type": "float", "default": 0.01},
            "min_requests": {"type": "int", "default": 5},
            "max_queue": {"type": "int", "default": 100},
            "rollback_to": {"type": "str", "choices": ["blue", "green"]},
            "map": {"type": "path"},
            "state_dir": {"type": "path"},
            "warm_seconds": {"type": "int", "default": 3600},
        },
        required_by={"rollback_to": ["map"]},
        supports_check_mode=True,
    )
    p = module.params
    where = f"lb {socket.gethostname()}"
    backend = backend_name(p["color"])
    runtime = HAProxyRuntime(p["socket"])
    rollback = p["rollback_to"] and not module.check_mode

    def fail(message: str) -> None:
        """Fail the watch; first, with rollback_to, put traffic back on this lb."""
        rolled_back = None
        if rollback:
            switch = Switch(runtime, p["map"], p["state_dir"], p["warm_seconds"])
            rolled_back = roll_back(switch, p["rollback_to"])
        module.fail_json(msg=message + rollback_note(rolled_back), samples=samples, rolled_back=rolled_back)

    def sample() -> dict:
        backends = summarize(runtime.show_stat())
        if backend not in backends:
            raise HAProxyRuntimeError(f"HAProxy has no backend {backend}")
        return backends[backend]

    samples: list[dict] = []
    try:
        previous, previous_at = sample(), time.monotonic()
        deadline = previous_at + p["seconds"]
        while time.monotonic() < deadline:
            time.sleep(min(p["interval"], max(0.0, deadline - time.monotonic())))
            current, now = sample(), time.monotonic()
            rates = interval_rates(previous, current, now - previous_at)
            samples.append(rates)
            previous, previous_at = current, now
            judged = rates["requests"] >= p["min_requests"]
            if judged and rates["error_rate"] > p["max_error_rate"]:
                fail(
                    f"watch on {where}: {p['color']} error rate {rates['error_rate']:.2%} "
                    f"({rates['errors']} of {rates['requests']} requests) over the threshold "
                    f"{p['max_error_rate']:.2%} after {sum(s['seconds'] for s in samples):.1f}s"
                )
            if rates["queue"] > p["max_queue"]:
                fail(f"watch on {where}: {p['color']} queue {rates['queue']} over {p['max_queue']}")
    except HAProxyRuntimeError as exc:
        module.fail_json(msg=f"watch on {where}: {exc}", samples=samples)
    module.exit_json(
        changed=False,
        samples=samples,
        requests=sum(s["requests"] for s in samples),
        errors=sum(s["errors"] for s in samples),
    )


if __name__ == "__main__":
    main()
