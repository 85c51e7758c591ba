#!/usr/bin/python
"""Write the JSON report of every check of a deployment, atomically."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: bluegreen_report
short_description: Write the JSON report of a deployment's checks atomically
description:
  - Writes C(deployment), C(generated_at), C(result) (pass when no check failed), C(summary) (counts
    of passed, failed, skipped), C(failed) (the messages of the failed checks) and C(checks) (every
    check record) to I(path) as JSON, atomically (temporary file, fsync, rename, directory fsync), so a
    reader sees the previous report or the new one, never a torn file. Creates the parent directory.
  - Every record must have C(name), C(node), C(observed), C(threshold) and C(verdict) (pass, fail or
    skip), as the records of M(bluegreen_health), M(bluegreen_config_check), M(bluegreen_config_drift)
    and M(bluegreen_perf) have.
  - Does not fail when checks failed (that is the check modules' job); it reports C(result).
  - The report is an artifact of the run, not system state; still, C(changed) is true when it was
    written. In check mode nothing is written.
options:
  path:
    description: The report file, for example C(<state_dir>/reports/<deployment id>.json).
    type: path
    required: true
  records:
    description: The check records, in the order they ran.
    type: list
    elements: dict
    required: true
  deployment:
    description: What the checks were about (deployment id, version, from, to, stage, ...).
    type: dict
    default: {}
  mode:
    description: Permissions of the report file.
    type: raw
    default: "0640"
author: bluegreen
"""

EXAMPLES = r"""
- name: Save the report of every check of this deployment
  bluegreen_report:
    path: "{{ bluegreen_state_dir }}/reports/{{ bluegreen_run.id }}.json"
    deployment:
      id: "{{ bluegreen_run.id }}"
      version: "{{ bluegreen_version }}"
      idle: "{{ bluegreen_run.idle }}"
    records: >-
      {{ (ansible_play_hosts_all | map('extract', hostvars, ['bluegreen_health', 'records']) | flatten)
         + bluegreen_drift.all_records + bluegreen_perf_preview.records }}
  run_once: true
  delegate_to: "{{ bluegreen_anchor }}"
"""

RETURN = r"""
path:
  description: The report file.
  returned: always
  type: str
result:
  description: pass when no check failed, else fail.
  returned: always
  type: str
summary:
  description: Counts of checks (total, passed, failed, skipped).
  returned: always
  type: dict
  sample: {total: 9, passed: 8, failed: 1, skipped: 0}
failed_checks:
  description: The messages of the failed checks.
  returned: always
  type: list
  elements: str
written:
  description: Whether the file was written (false in check mode).
  returned: always
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.bluegreen_checks import build_report, check_record_shape, write_report


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "records": {"type": "list", "elements": "dict", "required": True},
            "deployment": {"type": "dict", "default": {}},
            "mode": {"type": "raw", "default": "0640"},
        },
        supports_check_mode=True,
    )
    p = module.params
    problems = [problem for problem in map(check_record_shape, p["records"]) if problem]
    if problems:
        module.fail_json(msg=f"bluegreen_report: not check records: {'; '.join(problems)}")
    try:
        # quoted "0640" is octal text; an unquoted 0640 reaches us already read as an octal number
        mode = p["mode"] if isinstance(p["mode"], int) else int(str(p["mode"]), 8)
    except ValueError:
        module.fail_json(msg=f"bluegreen_report: mode {p['mode']!r} is not an octal permission like 0640")
    if module.check_mode:
        report = build_report(p["records"], p["deployment"])
        written = False
    else:
        try:
            report = write_report(p["path"], p["records"], p["deployment"], mode)
        except OSError as exc:
            module.fail_json(msg=f"bluegreen_report: cannot write {p['path']}: {exc}")
        written = True
    module.exit_json(
        changed=written,
        path=p["path"],
        result=report["result"],
        summary=report["summary"],
        failed_checks=report["failed"],
        written=written,
    )


if __name__ == "__main__":
    main()
