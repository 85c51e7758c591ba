"""Where a playbook's wall time goes, task by task: one JSON line per task start (bench/scale.py only).

Enabled by bench/scale.py alone (ANSIBLE_CALLBACK_PLUGINS, ANSIBLE_CALLBACKS_ENABLED); writes to
BENCH_TASK_TIMES_FILE. Under the linear strategy a task runs on all of its hosts before the next one
starts, so a task's wall time is the time to the next task's start (or the end of the playbook).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: bench_task_times
type: aggregate
short_description: Write the start time of each task and play as JSON lines (bench/scale.py)
description:
  - One JSON object per line, C(type) C(task) (its name, role, action, play) or C(play) or C(end), with the
    time; bench/scale.py turns them into each task's share of the wall time.
options:
  path:
    description: File the lines are appended to.
    env:
      - name: BENCH_TASK_TIMES_FILE
    type: path
requirements:
  - enabled by bench/scale.py (ANSIBLE_CALLBACKS_ENABLED)
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "bench_task_times"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._file = None
        self._play = None

    def set_options(self, task_keys=None, var_options=None, direct=None):
        super().set_options(task_keys=task_keys, var_options=var_options, direct=direct)
        path = self.get_option("path")
        if path:
            self._file = Path(path).open("a", encoding="utf-8")  # noqa: SIM115 (open for the whole run)

    def _write(self, **line):
        if self._file:
            self._file.write(json.dumps({"time": round(time.time(), 4), **line}) + "\n")
            self._file.flush()

    def v2_playbook_on_play_start(self, play):
        self._play = play.get_name()
        self._write(type="play", play=self._play)

    def _task(self, task, handler=False):
        role = task._role.get_name() if task._role else None
        self._write(
            type="task", name=task.get_name(), role=role, action=task.action, play=self._play, handler=handler
        )

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._task(task)

    def v2_playbook_on_handler_task_start(self, task):
        self._task(task, handler=True)

    def v2_playbook_on_stats(self, stats):
        self._write(type="end")
        if self._file:
            self._file.close()
            self._file = None
