#!/usr/bin/python
"""Judge one gate of the validation: its check records pass, or the gate fails naming each failed check."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: bluegreen_judge
short_description: Judge a validation gate's check records, and report them as progress
description:
  - Takes the check records a gate produced (M(bluegreen_health), M(bluegreen_config_check),
    M(bluegreen_config_drift), M(bluegreen_perf), M(bluegreen_shadow), ...), checks that each is a
    record, and fails when any has the verdict C(fail), with one message naming every failed check,
    its node, observed value and threshold.
  - Its result carries C(bluegreen_event) of type C(checks) with every record, so the progress
    callback reports each check (the dashboard's table, the CI report) whatever the verdict.
  - Changes nothing, and runs on the controller (its action plugin, C(plugins/action/bluegreen_judge.py));
    judging records needs no host. The module file holds this documentation and runs the same code
    when called as a module.
options:
  records:
    description: The gate's check records.
    type: list
    elements: dict
    required: true
  stage:
    description: The stage the gate belongs to.
    type: str
    default: validate
  run_id:
    description: The run the checks are part of (its id), if any.
    type: str
  gate:
    description: A name for the gate (health, config, canary, performance, shadow), for the messages.
    type: str
    default: checks
author: bluegreen
"""

EXAMPLES = r"""
- name: Judge the readiness gate
  bluegreen_judge:
    records: "{{ bluegreen_health_records }}"
    stage: validate
    run_id: "{{ bluegreen_run.id }}"
    gate: health
"""

RETURN = r"""
records:
  description: The records, as given.
  returned: always
  type: list
failed_records:
  description: The records with the verdict fail, in order (the first names the run's failure).
  returned: always
  type: list
summary:
  description: Counts of total, passed, failed and skipped records.
  returned: always
  type: dict
bluegreen_event:
  description: The progress event, type C(checks), with run_id, stage, gate and records.
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.bluegreen_checks import JUDGE_ARGUMENT_SPEC, judge


def main() -> None:
    module = AnsibleModule(
        argument_spec=JUDGE_ARGUMENT_SPEC,
        supports_check_mode=True,
    )
    p = module.params
    bad, result = judge(p["records"], p["stage"], p["run_id"], p["gate"])
    if bad:
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
