#!/usr/bin/python
"""Bounded load against a logplatform URL: throughput, latency, errors vs thresholds and a baseline."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: bluegreen_perf
short_description: Measure a logplatform target under bounded load and judge it against thresholds
description:
  - POSTs batches of I(batch_size) valid log entries to I(url) + I(path) at most I(rate) batches per
    second for I(seconds), over I(concurrency) keep-alive connections (threads and C(http.client), nothing
    but Python is needed on the host). I(rate) is a cap, never exceeded; when every connection is busy a
    send slot is dropped, not made up later, so the load stays gentle however slow the target is.
  - Measures throughput (successful batches and entries per second of the sending window, so never
    more than I(rate), and less when the target cannot keep up or fails), latency percentiles (p50, p90,
    p99, max, over every answered request, nearest-rank) and the error rate (batches not answered 2xx,
    including those with no answer, over batches sent).
  - Judges them with absolute thresholds and, given I(baseline) (the figures of the live color measured
    the same way in the same run), with ratios, for example p99 <= I(max_p99_ratio) x the baseline's p99.
    One check record per check; fails naming every failed check, the target, the observed value and the
    threshold.
  - The entries are real (service I(service), ids C(<run_id>-<batch>-<n>)) and land in the target's sink.
  - In check mode no load is sent; the records are returned with verdict C(skip) and say so.
options:
  url:
    description: Base URL to load, for example the preview frontend C(http://127.0.0.1:8081).
    type: str
    required: true
  path:
    description: Path the batches are POSTed to.
    type: str
    default: /v1/logs
  node:
    description: Name of the target in records and messages, for example C(preview green). Default I(url).
    type: str
  rate:
    description: Highest number of batches per second sent (a cap, never exceeded).
    type: float
    required: true
  seconds:
    description: How long to send.
    type: float
    default: 10
  batch_size:
    description: Entries per batch.
    type: int
    default: 100
  concurrency:
    description: Keep-alive connections (one thread each); at most this many batches are in flight.
    type: int
    default: 4
  request_timeout:
    description: Seconds one request may take before it counts as an error.
    type: float
    default: 10
  run_id:
    description: Prefix of the entries' ids. Default, a random one.
    type: str
  service:
    description: The C(service) field of the entries, to tell them apart in a sink.
    type: str
    default: bluegreen-perf
  max_error_rate:
    description: Highest error rate (0..1) allowed.
    type: float
    default: 0.01
  max_p99_ms:
    description: Highest p99 latency allowed, in milliseconds.
    type: float
    default: 1000
  max_p50_ms:
    description: Highest p50 latency allowed, in milliseconds. Without it p50 is recorded, not judged.
    type: float
  min_throughput:
    description: Lowest throughput allowed, in successful batches per second. Default 90 % of I(rate),
      as the target must keep up with the offered load.
    type: float
  baseline:
    description: The result of M(bluegreen_perf) on the live color (or its C(figures)), measured the same
      way in the same run. Enables the ratio checks.
    type: dict
  max_p99_ratio:
    description: Highest p99 allowed, as a multiple of the baseline's p99.
    type: float
    default: 2.0
  max_p50_ratio:
    description: Highest p50 allowed, as a multiple of the baseline's p50. Without it not judged.
    type: float
  min_throughput_ratio:
    description: Lowest throughput allowed, as a fraction of the baseline's throughput.
    type: float
    default: 0.9
  figures:
    description: Judge these figures (the C(figures) of an earlier M(bluegreen_perf) run, or that whole
      result) instead of measuring; no load is sent. With two asynchronous runs started at once, one on the
      idle color and one on the live color, this judges the first against the second measured at the same
      time, under the same load of the machine.
    type: dict
  ratio_floor_ms:
    description: Latencies under this many milliseconds are raised to it before a ratio is taken, so
      that jitter on very small figures (2 ms against 1 ms) is not read as a slower release.
    type: float
    default: 5.0
author: bluegreen
"""

EXAMPLES = r"""
- name: Measure the live color gently, as the baseline (through the live frontend)
  bluegreen_perf:
    url: http://127.0.0.1:8080
    node: live blue
    rate: 20
    seconds: 10
    batch_size: 50
  register: bluegreen_perf_live

- name: Measure the idle color through the preview frontend, against thresholds and the baseline
  bluegreen_perf:
    url: http://127.0.0.1:8081
    node: preview green
    rate: 20
    seconds: 10
    batch_size: 50
    max_p99_ms: 250
    max_error_rate: 0.0
    baseline: "{{ bluegreen_perf_live }}"
    max_p99_ratio: 1.5
"""

RETURN = r"""
records:
  description: One check record per check (perf_error_rate, perf_p99_ms, perf_p50_ms, perf_throughput and,
    with a baseline, perf_p99_ratio, perf_p50_ratio, perf_throughput_ratio). A check without a
    threshold has verdict C(skip).
  returned: always
  type: list
  elements: dict
figures:
  description: What was measured (null in check mode).
  returned: always
  type: dict
  contains:
    sent:
      description: Batches sent
      type: int
    planned:
      description: Send slots in I(seconds) at I(rate)
      type: int
    missed_slots:
      description: Slots dropped because every connection was busy
      type: int
    ok:
      description: Batches answered 2xx
      type: int
    errors:
      description: Batches not answered 2xx (any other status, or no answer)
      type: int
    error_rate:
      description: errors / sent.
      type: float
    statuses:
      description: "Count per status code, or C(error:<exception>) for no answer"
      type: dict
    throughput_batches_per_s:
      description: ok batches per second
      type: float
    throughput_entries_per_s:
      description: ok entries per second
      type: float
    p50_ms:
      description: Median latency of answered requests
      type: float
    p90_ms:
      description: 90th percentile latency
      type: float
    p99_ms:
      description: 99th percentile latency
      type: float
    max_ms:
      description: Highest latency
      type: float
    mean_ms:
      description: Mean latency
      type: float
    elapsed_s:
      description: From the first slot to the last answer (at least I(seconds))
      type: float
  sample: {sent: 200, ok: 200, errors: 0, error_rate: 0.0, throughput_batches_per_s: 19.9, p50_ms: 4.1,
           p99_ms: 9.8}
measured:
  description: False when this task sent no load, because I(figures) were judged or in check mode (there
    the task is reported ok with a C(msg) saying so, not as skipped, so the message shows however skipped
    hosts are displayed).
  returned: always
  type: bool
node:
  description: The target name used in the records.
  returned: always
  type: str
run_id:
  description: The prefix of the ids of the entries sent.
  returned: always
  type: str
"""

import uuid

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.bluegreen_checks import (
    at_least,
    at_most,
    failure_message,
    fmt,
    join_url,
    ratio,
    record,
)
from ansible.module_utils.bluegreen_checks import failed as failed_records
from ansible.module_utils.bluegreen_load import run_load

ABSOLUTE = ("perf_error_rate", "perf_p99_ms", "perf_p50_ms", "perf_throughput")
RATIOS = ("perf_p99_ratio", "perf_p50_ratio", "perf_throughput_ratio")


def latency(name: str, node: str, observed: float | None, limit: float | None) -> dict:
    if observed is None:
        message = (
            f"check {name} on {node}: observed no latency (no request was answered), "
            f"threshold <= {fmt(limit, 'ms')}"
        )
        ok = None if limit is None else False
        return record(name, node, None, limit, ok, op="<=", unit="ms", message=message)
    return at_most(name, node, observed, limit, "ms")


def absolute_records(node: str, f: dict, p: dict) -> list[dict]:
    min_throughput = p["min_throughput"] if p["min_throughput"] is not None else round(0.9 * p["rate"], 3)
    return [
        at_most(
            "perf_error_rate",
            node,
            f["error_rate"],
            p["max_error_rate"],
            detail={"statuses": f["statuses"], "sent": f["sent"], "errors": f["errors"]},
        ),
        latency("perf_p99_ms", node, f["p99_ms"], p["max_p99_ms"]),
        latency("perf_p50_ms", node, f["p50_ms"], p["max_p50_ms"]),
        at_least(
            "perf_throughput",
            node,
            f["throughput_batches_per_s"],
            min_throughput,
            "batches/s",
            detail={
                "entries_per_s": f["throughput_entries_per_s"],
                "rate": p["rate"],
                "missed_slots": f["missed_slots"],
            },
        ),
    ]


# ratio check -> (figure, limit option, higher is worse, unit of the figure)
RATIO_CHECKS = {
    "perf_p99_ratio": ("p99_ms", "max_p99_ratio", True, "ms"),
    "perf_p50_ratio": ("p50_ms", "max_p50_ratio", True, "ms"),
    "perf_throughput_ratio": ("throughput_batches_per_s", "min_throughput_ratio", False, "batches/s"),
}


def ratio_record(name: str, node: str, f: dict, base: dict, p: dict) -> dict:
    figure, option, higher_is_worse, unit = RATIO_CHECKS[name]
    observed, baseline, limit = f.get(figure), base.get(figure), p[option]
    floor = p["ratio_floor_ms"] if unit == "ms" else 0.0
    op = "<=" if higher_is_worse else ">="
    detail = {figure: observed, f"baseline_{figure}": baseline, "floor": floor}
    if baseline is None:
        # nothing to compare with (the baseline run was skipped or got no answer): not judged here
        message = f"check {name} on {node}: not judged, the baseline has no {figure}"
        return record(name, node, None, limit, None, op=op, unit="x", detail=detail, message=message)
    if observed is None:
        message = f"check {name} on {node}: observed no {figure} (no request was answered)"
        ok = None if limit is None else False
        return record(name, node, None, limit, ok, op=op, unit="x", detail=detail, message=message)
    value = round(ratio(observed, baseline, floor), 3)
    ok = None if limit is None else (value <= limit if higher_is_worse else value >= limit)
    message = (
        f"check {name} on {node}: observed {fmt(value, 'x')} the baseline ({figure} {fmt(observed, unit)} vs "
        f"{fmt(baseline, unit)}), threshold {op} {fmt(limit, 'x') if limit is not None else 'none'}"
    )
    return record(name, node, value, limit, ok, op=op, unit="x", detail=detail, message=message)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "url": {"type": "str", "required": True},
            "path": {"type": "str", "default": "/v1/logs"},
            "node": {"type": "str"},
            "rate": {"type": "float", "required": True},
            "seconds": {"type": "float", "default": 10.0},
            "batch_size": {"type": "int", "default": 100},
            "concurrency": {"type": "int", "default": 4},
            "request_timeout": {"type": "float", "default": 10.0},
            "run_id": {"type": "str"},
            "service": {"type": "str", "default": "bluegreen-perf"},
            "max_error_rate": {"type": "float", "default": 0.01},
            "max_p99_ms": {"type": "float", "default": 1000.0},
            "max_p50_ms": {"type": "float"},
            "min_throughput": {"type": "float"},
            "baseline": {"type": "dict"},
            "max_p99_ratio": {"type": "float", "default": 2.0},
            "max_p50_ratio": {"type": "float"},
            "min_throughput_ratio": {"type": "float", "default": 0.9},
            "ratio_floor_ms": {"type": "float", "default": 5.0},
            "figures": {"type": "dict"},
        },
        supports_check_mode=True,
    )
    p = module.params
    node = p["node"] or p["url"]
    run_id = p["run_id"] or f"perf-{uuid.uuid4().hex[:12]}"
    for key in ("rate", "seconds", "batch_size", "concurrency", "request_timeout"):
        if p[key] <= 0:
            module.fail_json(msg=f"bluegreen_perf against {node}: {key} must be > 0, got {p[key]}")
    baseline = p["baseline"]
    if baseline is not None and isinstance(baseline.get("figures"), dict):
        baseline = baseline["figures"]  # a whole registered result was given
    result = {"changed": False, "node": node, "run_id": run_id, "baseline": baseline}
    given = p["figures"]
    if given is not None and "figures" in given:
        given = given["figures"]  # a whole registered result was given
    if p["figures"] is not None and not (isinstance(given, dict) and given):
        module.fail_json(msg=f"bluegreen_perf against {node}: figures hold no measurement to judge", **result)

    if module.check_mode and given is None:
        names = ABSOLUTE + (RATIOS if baseline else ())
        records = [
            record(
                name,
                node,
                None,
                None,
                None,
                message=f"check {name} on {node}: not measured in check mode (no load sent)",
            )
            for name in names
        ]
        module.exit_json(
            msg=f"check mode: no load sent to {join_url(p['url'], p['path'])}",
            measured=False,
            figures=None,
            records=records,
            **result,
        )

    figures = given or run_load(
        join_url(p["url"], p["path"]),
        rate=p["rate"],
        seconds=p["seconds"],
        batch_size=p["batch_size"],
        concurrency=p["concurrency"],
        timeout=p["request_timeout"],
        id_prefix=run_id,
        service=p["service"],
    )
    records = absolute_records(node, figures, p)
    if baseline:
        records += [ratio_record(name, node, figures, baseline, p) for name in RATIOS]
    result.update(measured=given is None, figures=figures, records=records)
    if failed_records(records):
        module.fail_json(msg=failure_message(records, f"bluegreen_perf against {node}"), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
