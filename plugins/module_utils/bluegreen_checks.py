"""Checks of the health validation system: HTTP reads, check records, percentiles, config diffs, reports.

Every check of a deployment produces one record::

    {"name": "perf_p99_ms", "node": "green-1", "observed": 312.4, "threshold": 250.0, "op": "<=",
     "verdict": "fail", "message": "check perf_p99_ms on green-1: observed 312.4 ms, threshold <= 250 ms"}

`verdict` is "pass", "fail" or "skip" (not judged: check mode, or nothing to compare with); `op` says
how `observed` is compared with `threshold` ("<=", ">=", "==", "within"); `detail` (optional) holds
what explains the observation (attempts, baseline figures, differing keys). Modules fail with the
messages of their failed records, so a failure always names the check, the node, the observed value
and the threshold.

Only the standard library: these run on managed hosts that have nothing but Python.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import json
import math
import os
from collections.abc import Callable
from urllib.parse import urlsplit

from ansible.module_utils.bluegreen_files import atomic_write

PASS, FAIL, SKIP = "pass", "fail", "skip"
VERDICTS = (PASS, FAIL, SKIP)
RECORD_KEYS = ("name", "node", "observed", "threshold", "verdict")

# logplatform's config.NODE_SPECIFIC_KEYS: the keys that differ between nodes of one deployment by design
# and are left out of its shared_config_digest. `shared_digest` below recomputes that digest from an
# effective config, so a release whose set differs from this one is detected (bluegreen_config_check).
NODE_SPECIFIC_KEYS = frozenset({"node", "color", "listen_host", "listen_port", "sink_dir", "shadow_sink_dir"})


class CheckError(Exception):
    """A check could not be carried out (unreachable node, unreadable answer); the message says why."""


# --- HTTP -----------------------------------------------------------------------------------------------
def connection(url: str, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    """A connection to the URL's host (no proxy: checks talk straight to the target) and the URL's path."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CheckError(f"not an http(s) URL: {url!r}")
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.hostname, parts.port, timeout=timeout)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return conn, path


def join_url(base: str, path: str) -> str:
    return base.rstrip("/") + "/" + path.lstrip("/")


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """(status, body) of one GET; CheckError when there is no HTTP answer at all."""
    try:
        conn, path = connection(url, timeout)
        try:
            conn.request(
                "GET", path, headers={"Accept": "application/json", "User-Agent": "bluegreen-checks"}
            )
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()
    except (OSError, http.client.HTTPException) as exc:
        raise CheckError(f"GET {url} failed: {exc or type(exc).__name__}") from exc


def get_json(url: str, timeout: float = 5.0) -> dict:
    """The JSON object a URL answers with 200; CheckError naming the URL otherwise."""
    status, body = http_get(url, timeout)
    if status != 200:
        raise CheckError(f"GET {url} answered {status} {short(body)}")
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise CheckError(f"GET {url} answered 200 with invalid JSON: {short(body)}") from exc
    if not isinstance(data, dict):
        raise CheckError(f"GET {url} answered 200 with {type(data).__name__}, not a JSON object")
    return data


def short(body: bytes | str, limit: int = 120) -> str:
    """A response body as one short line, for messages."""
    text = body.decode(errors="replace") if isinstance(body, bytes) else body
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


RunCommand = Callable[[list[str]], tuple[int, str, str]]


def check_config_file(run_command: RunCommand, binary: str, path: str) -> dict:
    """The release's --check-config report of a file: {config, config_digest, shared_config_digest}.

    `run_command` is AnsibleModule.run_command; CheckError names the binary or the file.
    """
    if not os.access(binary, os.X_OK):
        raise CheckError(f"{binary} is not an executable: is the release installed on this node?")
    rc, out, err = run_command([binary, "--check-config", "--config", path])
    if rc != 0:
        lines = (err or out).strip().splitlines()
        raise CheckError(f"{binary} --check-config refused {path} (exit {rc}): {lines[-1] if lines else ''}")
    try:
        report = json.loads(out)
        config = report["config"]
        digests = report["config_digest"], report["shared_config_digest"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckError(f"{binary} --check-config printed no config report: {exc}") from exc
    # Recompute both digests: equal only if bluegreen computes them as this release does and agrees on
    # which keys are node-specific, which the key-by-key comparison of bluegreen_config_drift relies on.
    if digests != (canonical_digest(config), shared_digest(config)):
        raise CheckError(
            f"the digests of release {binary} are not computed over the keys bluegreen expects "
            f"(node-specific: {', '.join(sorted(NODE_SPECIFIC_KEYS))}); "
            "update bluegreen_checks.NODE_SPECIFIC_KEYS"
        )
    return {"config": config, "config_digest": digests[0], "shared_config_digest": digests[1]}


# --- records ----------------------------------------------------------------------------------------------
def fmt(value: object, unit: str = "") -> str:
    if isinstance(value, float):
        text = f"{value:.4g}" if abs(value) < 1 else f"{value:.1f}".rstrip("0").rstrip(".")
    else:
        text = str(value)
    return f"{text} {unit}".rstrip() if unit else text


def record(
    name: str,
    node: str,
    observed: object,
    threshold: object,
    ok: bool | None,
    *,
    op: str = "<=",
    unit: str = "",
    detail: dict | None = None,
    message: str | None = None,
) -> dict:
    """One check record; `ok` None means not judged (verdict skip)."""
    verdict = SKIP if ok is None else PASS if ok else FAIL
    if message is None:
        message = (
            f"check {name} on {node}: observed {fmt(observed, unit)}, threshold {op} {fmt(threshold, unit)}"
        )
    rec = {
        "name": name,
        "node": node,
        "observed": observed,
        "threshold": threshold,
        "op": op,
        "verdict": verdict,
        "message": message,
    }
    if unit:
        rec["unit"] = unit
    if detail:
        rec["detail"] = detail
    return rec


def at_most(name: str, node: str, observed: float, limit: float | None, unit: str = "", **kw) -> dict:
    """observed <= limit (skip when there is no limit)."""
    return record(
        name, node, observed, limit, None if limit is None else observed <= limit, op="<=", unit=unit, **kw
    )


def at_least(name: str, node: str, observed: float, limit: float | None, unit: str = "", **kw) -> dict:
    """observed >= limit (skip when there is no limit)."""
    return record(
        name, node, observed, limit, None if limit is None else observed >= limit, op=">=", unit=unit, **kw
    )


def failed(records: list[dict]) -> list[dict]:
    return [r for r in records if r.get("verdict") == FAIL]


def failure_message(records: list[dict], where: str = "") -> str:
    """One message naming every failed check (name, node, observed, threshold)."""
    bad = failed(records)
    prefix = f"{where}: " if where else ""
    if not bad:
        return f"{prefix}all {len(records)} checks passed"
    count = f"{len(bad)} of {len(records)} checks failed: " if len(records) > 1 else ""
    return prefix + count + "; ".join(r["message"] for r in bad)


def summarize(records: list[dict]) -> dict:
    counts = {v: sum(1 for r in records if r.get("verdict") == v) for v in VERDICTS}
    return {"total": len(records), "passed": counts[PASS], "failed": counts[FAIL], "skipped": counts[SKIP]}


def check_record_shape(rec: object) -> str | None:
    """Why rec is not a check record, or None when it is one."""
    if not isinstance(rec, dict):
        return f"not a mapping: {rec!r}"
    missing = [k for k in RECORD_KEYS if k not in rec]
    if missing:
        return f"record {rec.get('name', '?')!r} lacks {', '.join(missing)}"
    if rec["verdict"] not in VERDICTS:
        return f"record {rec['name']!r} has verdict {rec['verdict']!r}, expected one of {', '.join(VERDICTS)}"
    return None


# The options of bluegreen_judge, for its module and its action plugin alike.
JUDGE_ARGUMENT_SPEC = {
    "records": {"type": "list", "elements": "dict", "required": True},
    "stage": {"type": "str", "default": "validate"},
    "run_id": {"type": "str"},
    "gate": {"type": "str", "default": "checks"},
}


def judge(records: list, stage: str, run_id: str | None, gate: str) -> tuple[bool, dict]:
    """A gate's verdict on its records: (failed, result) with the failed records, the counts, the
    progress event (type checks) and the message naming every failed check. A malformed record fails
    the gate naming it. Used by bluegreen_judge, on the controller (its action plugin) or on a host."""
    for rec in records:
        problem = check_record_shape(rec)
        if problem:
            return True, {"msg": f"gate {gate}: {problem}"}
    bad = failed(records)
    result = {
        "changed": False,
        "records": records,
        "failed_records": bad,
        "summary": summarize(records),
        "bluegreen_event": {
            "type": "checks",
            "run_id": run_id,
            "stage": stage,
            "gate": gate,
            "records": records,
        },
        "msg": "; ".join(r["message"] for r in bad) if bad else failure_message(records),
    }
    return bool(bad), result


# --- statistics ------------------------------------------------------------------------------------------
def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least p % of the values at or below it.

    p in (0, 100]; None for no values. The result is always one of the observed values.
    """
    if not 0 < p <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {p}")
    if not values:
        return None
    ordered = sorted(values)
    rank = math.ceil(p / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


def ratio(observed: float, baseline: float, floor: float = 0.0) -> float:
    """observed / baseline with both raised to at least `floor` (so noise on tiny figures is no ratio)."""
    denominator = max(baseline, floor)
    if denominator <= 0:
        return 1.0 if max(observed, floor) <= 0 else math.inf
    return max(observed, floor) / denominator


# --- configuration ------------------------------------------------------------------------------------------
def canonical_digest(data: dict) -> str:
    """sha256 hex of logplatform's canonical JSON of a config (its config_digest when given all of it)."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def shared_digest(effective: dict) -> str:
    """logplatform's shared_config_digest of an effective config (without NODE_SPECIFIC_KEYS)."""
    return canonical_digest({k: v for k, v in effective.items() if k not in NODE_SPECIFIC_KEYS})


def flatten(config: dict, prefix: str = "") -> dict:
    """Nested tables as dotted keys: {"fault": {"error_rate": 0.0}} -> {"fault.error_rate": 0.0}."""
    flat: dict = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def ignored(key: str, ignore: list[str] | tuple[str, ...] | frozenset[str]) -> bool:
    """A dotted key is ignored when it or one of its parent tables is listed."""
    return any(key == item or key.startswith(item + ".") for item in ignore)


def config_diff(config: dict, reference: dict, ignore: list[str] | tuple[str, ...] = ()) -> dict:
    """Keys whose values differ (node-specific and ignored keys left out): key -> [value, reference value].

    A key present on one side only differs too (its missing side is None).
    """
    ours, theirs = flatten(config), flatten(reference)
    skip = tuple(NODE_SPECIFIC_KEYS) + tuple(ignore)
    diff = {}
    for key in sorted(set(ours) | set(theirs)):
        if ignored(key, skip):
            continue
        if ours.get(key) != theirs.get(key):
            diff[key] = [ours.get(key), theirs.get(key)]
    return diff


def describe_diff(diff: dict, node: str, reference: str) -> str:
    return ", ".join(
        f"{key} = {json.dumps(a)} on {node}, {json.dumps(b)} on {reference}" for key, (a, b) in diff.items()
    )


# --- report ---------------------------------------------------------------------------------------------
def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def build_report(records: list[dict], deployment: dict | None = None) -> dict:
    """The JSON report of a deployment's checks: result, counts and every record."""
    summary = summarize(records)
    return {
        "deployment": deployment or {},
        "generated_at": now(),
        "result": FAIL if summary["failed"] else PASS,
        "summary": summary,
        "failed": [r["message"] for r in failed(records)],
        "checks": records,
    }


def write_report(path: str, records: list[dict], deployment: dict | None = None, mode: int = 0o640) -> dict:
    """Write the report atomically (a reader sees the old report or the new one); returns it.

    Refuses anything that is not a check record (ValueError), so a report never holds half a check.
    """
    for rec in records:
        problem = check_record_shape(rec)
        if problem:
            raise ValueError(problem)
    report = build_report(records, deployment)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o750, exist_ok=True)
    atomic_write(path, json.dumps(report, indent=2, sort_keys=True, default=str) + "\n", mode)
    return report
