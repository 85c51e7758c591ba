#!/usr/bin/python
"""Compare the configurations of logplatform nodes key by key: which node drifted, and in which keys."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: bluegreen_config_drift
short_description: Find configuration drift between logplatform nodes, naming the node and the keys
description:
  - Takes the results of M(bluegreen_config_check) on the nodes that must agree (the idle color) and,
    optionally, on the live color's nodes, and compares their effective configurations key by key,
    leaving out the node-specific keys (node, color, listen_host, listen_port, sink_dir).
  - Check C(config_consistent), one per node of I(results), compares the node with a reference node
    of I(results); the reference is the most common configuration among the nodes that run their
    rendered file (ties go to the first), so with one edited node out of many the edited one is named.
    When I(ignore_keys) is empty the running C(shared_config_digest) of the nodes must be equal too.
  - Check C(config_matches_live), one per node of I(results), compares it with the reference of
    I(baseline), on the settings that must match between blue and green (limits, sink settings,
    processing rules, that is every shared key but I(baseline_ignore_keys)).
  - Fails naming every failed check, including the C(config_rendered) checks carried in I(results),
    so one task reports all of the configuration validation. Needs nothing but the results; run it
    once (C(run_once), on the controller).
options:
  results:
    description: Registered results of M(bluegreen_config_check) on the nodes that must be identical (the
      idle color), failed ones included (register them with C(failed_when=false)).
    type: list
    elements: dict
    required: true
  baseline:
    description: Registered results of M(bluegreen_config_check) on the live color's nodes. Without it,
      blue and green are not compared.
    type: list
    elements: dict
    default: []
  ignore_keys:
    description: Keys (dotted, C(fault.error_rate); a table name covers all its keys) left out of the
      comparison between the nodes of I(results).
    type: list
    elements: str
    default: []
  baseline_ignore_keys:
    description: Keys left out of the comparison with I(baseline). By default the TEST-ONLY C(fault)
      table, which tests set on one color on purpose to build faulty releases.
    type: list
    elements: str
    default: [fault]
author: bluegreen
"""

EXAMPLES = r"""
- name: Compare the configurations of all idle nodes, and with the live color
  bluegreen_config_drift:
    results: "{{ ansible_play_hosts_all | map('extract', hostvars, 'bluegreen_config') | list }}"
    baseline: "{{ bluegreen_live_configs | default([]) }}"
  run_once: true
  delegate_to: localhost
  register: bluegreen_drift
"""

RETURN = r"""
records:
  description: This module's check records, C(config_consistent) and C(config_matches_live) per node;
    C(observed) holds the node's values of the keys that differ, C(threshold) the reference's values.
  returned: always
  type: list
  elements: dict
all_records:
  description: The C(config_rendered) records carried in I(results), then I(records).
  returned: always
  type: list
  elements: dict
reference:
  description: The node of I(results) the others were compared with.
  returned: always
  type: str
baseline_reference:
  description: The node of I(baseline) the idle nodes were compared with, or null.
  returned: always
  type: str
drift:
  description: Per node, the keys that differ from the reference, each as [node's value, reference's value].
  returned: always
  type: dict
  sample: {green-2: {max_batch_entries: [500, 10000]}}
baseline_drift:
  description: Per node of I(results), the keys that differ from the baseline reference (shaped as I(drift)).
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.bluegreen_checks import (
    NODE_SPECIFIC_KEYS,
    PASS,
    canonical_digest,
    config_diff,
    describe_diff,
    failure_message,
    flatten,
    ignored,
    record,
)


def node_name(result: dict, index: int) -> str:
    return str(result.get("node") or (result.get("config") or {}).get("node") or f"result {index}")


def signature(config: dict, ignore: list[str]) -> str:
    skip = tuple(NODE_SPECIFIC_KEYS) + tuple(ignore)
    return canonical_digest({k: v for k, v in flatten(config).items() if not ignored(k, skip)})


def runs_its_file(result: dict) -> bool:
    return all(
        r.get("verdict") == PASS for r in result.get("records") or [] if r.get("name") == "config_rendered"
    )


def pick_reference(results: list[dict], ignore: list[str]) -> dict | None:
    """The most common configuration, preferring nodes that run their rendered file; ties: first given."""
    usable = [r for r in results if isinstance(r.get("config"), dict)]
    if not usable:
        return None
    preferred = [r for r in usable if runs_its_file(r)] or usable
    counts: dict[str, int] = {}
    for r in preferred:
        sig = signature(r["config"], ignore)
        counts[sig] = counts.get(sig, 0) + 1
    best = max(counts.values())
    return next(r for r in preferred if counts[signature(r["config"], ignore)] == best)


def compare(
    name: str, node: str, result: dict, ref: dict, ref_node: str, *, ignore: list[str], digests: bool
) -> dict:
    diff = config_diff(result["config"], ref["config"], ignore)
    observed = {key: values[0] for key, values in diff.items()}
    threshold = {key: values[1] for key, values in diff.items()}
    detail = {"reference": ref_node, "ignored_keys": list(ignore)}
    problems = []
    if diff:
        problems.append(describe_diff(diff, node, ref_node))
    if digests:
        ours = (result.get("running") or {}).get("shared_config_digest")
        theirs = (ref.get("running") or {}).get("shared_config_digest")
        detail.update(running_shared_config_digest=ours, reference_running_shared_config_digest=theirs)
        if ours != theirs:
            observed["running_shared_config_digest"] = ours
            threshold["running_shared_config_digest"] = theirs
            problems.append(
                f"the node runs shared settings {str(ours)[:12]}, {ref_node} runs {str(theirs)[:12]}"
                + ("" if diff else f" although their files agree: restart {node}")
            )
    if problems:
        message = f"check {name} on {node}: {'; '.join(problems)} (reference {ref_node})"
        return record(name, node, observed, threshold, False, op="==", detail=detail, message=message)
    message = f"check {name} on {node}: same shared settings as {ref_node}"
    return record(name, node, observed, threshold, True, op="==", detail=detail, message=message)


def missing(name: str, node: str, result: dict) -> dict:
    why = result.get("msg") or "no effective configuration in the result"
    return record(
        name,
        node,
        None,
        None,
        False,
        op="==",
        message=f"check {name} on {node}: no configuration to compare ({why})",
    )


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "results": {"type": "list", "elements": "dict", "required": True},
            "baseline": {"type": "list", "elements": "dict", "default": []},
            "ignore_keys": {"type": "list", "elements": "str", "default": []},
            "baseline_ignore_keys": {"type": "list", "elements": "str", "default": ["fault"]},
        },
        supports_check_mode=True,
    )
    p = module.params
    results, baseline = p["results"], p["baseline"]
    if not results:
        module.fail_json(msg="bluegreen_config_drift: no results to compare")
    carried = [r for res in results for r in res.get("records") or [] if r.get("name") == "config_rendered"]
    ref = pick_reference(results, p["ignore_keys"])
    ref_node = node_name(ref, results.index(ref)) if ref else None
    base_ref = pick_reference(baseline, p["baseline_ignore_keys"]) if baseline else None
    base_node = node_name(base_ref, baseline.index(base_ref)) if base_ref else None

    records: list[dict] = []
    drift: dict = {}
    baseline_drift: dict = {}
    for index, res in enumerate(results):
        node = node_name(res, index)
        if not isinstance(res.get("config"), dict) or ref is None:
            records.append(missing("config_consistent", node, res))
            continue
        rec = compare(
            "config_consistent",
            node,
            res,
            ref,
            ref_node,
            ignore=p["ignore_keys"],
            digests=not p["ignore_keys"],
        )
        records.append(rec)
        diff = config_diff(res["config"], ref["config"], p["ignore_keys"])
        if diff:
            drift[node] = diff
        if baseline:
            if base_ref is None:
                records.append(missing("config_matches_live", node, baseline[0]))
                continue
            records.append(
                compare(
                    "config_matches_live",
                    node,
                    res,
                    base_ref,
                    base_node,
                    ignore=p["baseline_ignore_keys"],
                    digests=False,
                )
            )
            live_diff = config_diff(res["config"], base_ref["config"], p["baseline_ignore_keys"])
            if live_diff:
                baseline_drift[node] = live_diff
    all_records = carried + records
    result = {
        "changed": False,
        "records": records,
        "all_records": all_records,
        "reference": ref_node,
        "baseline_reference": base_node,
        "drift": drift,
        "baseline_drift": baseline_drift,
    }
    if any(r["verdict"] == "fail" for r in all_records):
        module.fail_json(msg=failure_message(all_records, "configuration validation"), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
