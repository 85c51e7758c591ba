"""bluegreen_judge runs on the controller: judging records needs no host, and a module run costs ~0.3 s.

The module (plugins/modules/bluegreen_judge.py) keeps the documentation and the argument spec; both run
the same `judge` of module_utils/bluegreen_checks.py. A stage-3 gate is judged once per gate, five
times in a deploy: on the controller that is milliseconds instead of five module runs on a host.
"""

from __future__ import annotations

from pathlib import Path

import ansible.module_utils
from ansible.plugins.action import ActionBase

# Ansible imports our module_utils for modules (ansible.cfg module_utils), not for controller plugins:
# put them on the same import path (as plugins/test/bluegreen_version.py does), so this judges with the
# one implementation the module runs.
_MODULE_UTILS = str(Path(__file__).resolve().parent.parent / "module_utils")
if _MODULE_UTILS not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(_MODULE_UTILS)

from ansible.module_utils.bluegreen_checks import JUDGE_ARGUMENT_SPEC, judge


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True

    def run(self, tmp: str | None = None, task_vars: dict | None = None) -> dict:
        result = super().run(tmp, task_vars)
        _, args = self.validate_argument_spec(argument_spec=JUDGE_ARGUMENT_SPEC)
        bad, verdict = judge(args["records"], args["stage"], args["run_id"], args["gate"])
        result.update(verdict)
        result["failed"] = bad
        return result
