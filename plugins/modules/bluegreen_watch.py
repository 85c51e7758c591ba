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
  - Fails at the first interval over a threshold, naming it and the observed value, so the caller can
    roll back within one interval. Never changes anything.
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
"""

import socket
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.bluegreen_haproxy import HAProxyRuntime, HAProxyRuntimeError
from ansible.module_utils.bluegreen_stats import backend_name, interval_rates, summarize


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
        },
        supports_check_mode=True,
    )
    p = module.params
    where = f"lb {socket.gethostname()}"
    backend = backend_name(p["color"])
    runtime = HAProxyRuntime(p["socket"])

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
                module.fail_json(
                    msg=(
                        f"watch on {where}: {p['color']} error rate {rates['error_rate']:.2%} "
                        f"({rates['errors']} of {rates['requests']} requests) over the threshold "
                        f"{p['max_error_rate']:.2%} after {sum(s['seconds'] for s in samples):.1f}s"
                    ),
                    samples=samples,
                )
            if rates["queue"] > p["max_queue"]:
                module.fail_json(
                    msg=f"watch on {where}: {p['color']} queue {rates['queue']} over {p['max_queue']}",
                    samples=samples,
                )
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
