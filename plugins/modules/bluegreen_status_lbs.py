#!/usr/bin/python
"""Every lb's status in one, and whether the lbs agree: what status.yml shows, writes and emits."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: bluegreen_status_lbs
short_description: Put every lb's status together and say whether the lbs agree
description:
  - Takes the status C(bluegreen_status) returned on each lb and the names of every lb of the play,
    and returns them as one status (the anchor lb's at the top, every lb's under C(lbs)), as lines for
    people, and as the C(status) progress event.
  - The lbs disagree when one gave no status (unreachable, or its status failed), or when they differ
    in HAProxy's live color, state.json's live color, the map file's live color or state.json's
    versions. Each difference is one sentence naming every lb and what it says.
  - Runs on the controller; reads and changes nothing.
options:
  statuses:
    description: lb name -> the C(status) its C(bluegreen_status) returned, for the lbs that returned one.
    type: dict
    required: true
  lbs:
    description: Every lb of the play, in order, including those that returned no status.
    type: list
    elements: str
    required: true
  anchor:
    description: The lb that keeps the run's lock, running deployment and history (C(bluegreen_anchor)).
    type: str
    required: true
author: bluegreen
"""

EXAMPLES = r"""
- name: Every lb's status in one
  bluegreen_status_lbs:
    statuses: >-
      {{ dict(ansible_play_hosts | zip(ansible_play_hosts | map('extract', hostvars, ['st', 'status']))) }}
    lbs: "{{ ansible_play_hosts_all }}"
    anchor: "{{ groups['lb'][0] }}"
  run_once: true
  delegate_to: localhost
  register: all_lbs
"""

RETURN = r"""
status:
  description:
    - The anchor lb's status (see C(bluegreen_status)) with C(anchor), C(lbs) (lb -> its status, null
      when it gave none), C(lbs_agree), C(lbs_disagreement) (the sentences) and C(live_by_lb).
    - When the lbs disagree, C(live) and C(idle) are null - there is no one live color.
  returned: always
  type: dict
agree:
  description: Whether every lb gave a status and they all agree.
  returned: always
  type: bool
lines:
  description: The same for people. One lb - its lines. Several - a first line naming what each lb
    serves, one C(!! LBS DISAGREE) line per difference, then each lb's lines.
  returned: always
  type: list
bluegreen_event:
  description: The progress event C({type=status, status, lines}), for the events callback.
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.bluegreen_status_view import combine, render_lbs


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "statuses": {"type": "dict", "required": True},
            "lbs": {"type": "list", "elements": "str", "required": True},
            "anchor": {"type": "str", "required": True},
        },
        supports_check_mode=True,
    )
    p = module.params
    unknown = sorted(set(p["statuses"]) - set(p["lbs"]))
    if unknown or not p["lbs"]:
        module.fail_json(
            msg=f"statuses of lbs not in lbs {p['lbs']}: {unknown}" if unknown else "lbs is empty"
        )
    statuses = {lb: p["statuses"].get(lb) or None for lb in p["lbs"]}
    combined = combine(statuses, p["anchor"])
    lines = render_lbs(combined)
    module.exit_json(
        changed=False,
        status=combined,
        agree=combined["lbs_agree"],
        lines=lines,
        # for whoever follows the run's progress events (plugins/callback/bluegreen_events.py)
        bluegreen_event={"type": "status", "status": combined, "lines": lines},
    )


if __name__ == "__main__":
    main()
