#!/usr/bin/python
"""Readiness and version of one logplatform node, as check records."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: bluegreen_health
short_description: Check that a logplatform node is ready and runs the expected version
description:
  - Asks the node's C(/health/ready) until it answers 200, every I(interval) seconds for at most
    I(timeout) seconds, then reads C(/version) and compares its C(version) with I(version).
  - Produces one check record per check (C(health_ready), C(health_version)) with the node, the observed
    value, the threshold and the verdict, and fails naming every failed check, the node, the observed
    value and the threshold. The version is read even when the node never became ready, so a failure
    reports both.
  - Only reads; runs the same in check mode.
options:
  url:
    description: Base URL of the node, for example C(http://127.0.0.1:9101) (C(logplatform_local_url)).
    type: str
    required: true
  version:
    description: Version the node must report. Without it the version is recorded but not judged.
    type: str
  node:
    description: Name of the node in records and messages. Default, the C(node) the service reports in
      C(/version), else I(url).
    type: str
  timeout:
    description: Seconds the node may take to answer C(/health/ready) with 200.
    type: float
    default: 30
  interval:
    description: Seconds between readiness attempts.
    type: float
    default: 1.0
  request_timeout:
    description: Seconds one HTTP request may take.
    type: float
    default: 5
author: bluegreen
"""

EXAMPLES = r"""
- name: Check the idle node is ready and runs the target version
  bluegreen_health:
    url: "{{ logplatform_local_url }}"
    version: "{{ bluegreen_version }}"
    node: "{{ inventory_hostname }}"
    timeout: "{{ bluegreen_ready_timeout }}"
  register: bluegreen_health_result
"""

RETURN = r"""
records:
  description: One check record per check (C(health_ready), C(health_version)); each has C(name), C(node),
    C(observed), C(threshold), C(op), C(verdict) (pass, fail or skip), C(message) and, for readiness,
    C(detail) (attempts, waited_s, the last answer).
  returned: always
  type: list
  elements: dict
  sample:
    - {name: health_ready, node: green-1, observed: 200, threshold: 200, op: "==", verdict: pass,
       message: "check health_ready on green-1: observed 200, threshold == 200",
       detail: {attempts: 1, waited_s: 0.002, answer: '{"status":"ready"}', timeout_s: 30.0}}
    - {name: health_version, node: green-1, observed: 1.1.0, threshold: 1.1.0, op: "==", verdict: pass,
       message: "check health_version on green-1: observed 1.1.0, threshold == 1.1.0"}
ready:
  description: Whether the node answered C(/health/ready) with 200 in time.
  returned: always
  type: bool
reported:
  description: The node's C(/version) answer (version, color, node, config digests, started_at), or null
    when it could not be read.
  returned: always
  type: dict
node:
  description: The node name used in the records.
  returned: always
  type: str
"""

import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.bluegreen_checks import (
    CheckError,
    failed,
    failure_message,
    get_json,
    http_get,
    join_url,
    record,
    short,
)


def wait_ready(url: str, timeout: float, interval: float, request_timeout: float) -> dict:
    """Poll /health/ready until 200 or the timeout: status (int, or None if never answered) and detail."""
    started = time.monotonic()
    deadline = started + timeout
    attempts, status, answer = 0, None, ""
    while True:
        attempts += 1
        try:
            status, body = http_get(join_url(url, "/health/ready"), request_timeout)
            answer = short(body)
        except CheckError as exc:
            status, answer = None, str(exc)
        if status == 200 or time.monotonic() >= deadline:
            break
        time.sleep(max(0.0, min(interval, deadline - time.monotonic())))
    waited = round(time.monotonic() - started, 3)
    return {"status": status, "attempts": attempts, "waited_s": waited, "answer": answer}


def ready_record(node: str, polled: dict, timeout: float) -> dict:
    ok = polled["status"] == 200
    observed = polled["status"] if polled["status"] is not None else "no answer"
    detail = {**polled, "timeout_s": timeout}
    detail.pop("status")
    message = None
    if not ok:
        message = (
            f"check health_ready on {node}: observed {observed} ({polled['answer']}) after "
            f"{polled['waited_s']:.1f}s and {polled['attempts']} attempts, threshold 200 within {timeout:g}s"
        )
    return record("health_ready", node, observed, 200, ok, op="==", detail=detail, message=message)


def version_record(node: str, reported: dict | None, error: str | None, expected: str | None) -> dict:
    if reported is None:
        return record(
            "health_version",
            node,
            None,
            expected,
            False if expected else None,
            op="==",
            message=f"check health_version on {node}: observed no version ({error}), threshold == {expected}",
        )
    observed = reported.get("version")
    return record(
        "health_version",
        node,
        observed,
        expected,
        None if expected is None else observed == expected,
        op="==",
    )


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "url": {"type": "str", "required": True},
            "version": {"type": "str"},
            "node": {"type": "str"},
            "timeout": {"type": "float", "default": 30.0},
            "interval": {"type": "float", "default": 1.0},
            "request_timeout": {"type": "float", "default": 5.0},
        },
        supports_check_mode=True,
    )
    p = module.params
    polled = wait_ready(p["url"], p["timeout"], p["interval"], p["request_timeout"])
    reported, error = None, None
    try:
        reported = get_json(join_url(p["url"], "/version"), p["request_timeout"])
    except CheckError as exc:
        error = str(exc)
    node = p["node"] or (reported or {}).get("node") or p["url"]
    records = [ready_record(node, polled, p["timeout"]), version_record(node, reported, error, p["version"])]
    result = {
        "changed": False,
        "records": records,
        "ready": polled["status"] == 200,
        "reported": reported,
        "node": node,
    }
    if failed(records):
        module.fail_json(msg=failure_message(records, f"bluegreen_health on {node}"), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
