"""The run's progress as structured events (JSON lines), for the dashboard, the demo, the CLI and CI.

Whoever shows progress reads these events, never task names or playbook stdout: task names are for
people and free to change.
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: bluegreen_events
type: notification
short_description: Write a bluegreen run's progress as JSON-lines events
description:
  - Writes one JSON object per line to O(path) as the playbook runs; nothing when O(path) is not set.
  - The stage and run events come from the results of our modules, which carry a C(bluegreen_event) (a
    dict, or a list of them) with a C(type) of C(run_start), C(stage_start), C(checks), C(failure),
    C(run_end) or C(status) (what status.yml shows, every lb's status and whether the lbs agree,
    C(bluegreen_status_lbs)). This callback adds C(seq) and C(time), expands C(checks) into one C(check)
    event per record, emits each event once (the same event returned by every lb host counts once), and
    closes each stage with a C(stage_end) event carrying its result and duration. A C(run_start) that
    names a C(stage) starts that stage too; a C(run_end) naming a stage that never started (a failure
    skipped the stages before the one the run ends in) starts and ends it.
  - It adds C(playbook_start), C(task_failed) (a task failure nobody ignored, rescued or not, for
    people to read, with its C(message) and the C(stderr) of the command that failed, if any; the run's
    failure is the C(failure) event), C(diff) (with C(--diff), what a changed task changed or, in check
    mode, would change, as the text Ansible shows) and C(playbook_end) (the hosts' stats).
options:
  path:
    description: File the events are appended to (created if missing).
    env:
      - name: BLUEGREEN_EVENTS_FILE
    ini:
      - section: callback_bluegreen_events
        key: path
    type: path
requirements:
  - enabled in ansible.cfg (C(callbacks_enabled))
"""

import json
import os
import threading
import time

from ansible.plugins.callback import CallbackBase

# event types a module may return in `bluegreen_event`
MODULE_EVENTS = ("run_start", "stage_start", "checks", "failure", "run_end", "status")
MESSAGE_LIMIT = 2000
DIFF_LIMIT = 20000


def _identity(event):
    """What makes two module events the same event (each lb host returns its own copy)."""
    kind = event.get("type")
    if kind == "check":
        return (kind, event.get("run_id"), event.get("stage"), event.get("name"), event.get("node"))
    if kind == "failure":  # first failure wins, as in the state module
        return (kind, event.get("run_id"))
    if kind == "status":  # every status shown is shown (status.yml shows one, for all its lbs)
        return None
    return (kind, event.get("run_id"), event.get("stage"))


class EventLog:
    """Turns module results into the run's events; `emit` receives each finished event dict."""

    def __init__(self, emit, clock=time.time):
        self._emit = emit
        self._clock = clock
        self._seq = 0
        self._seen = set()
        self._stage = None  # the open stage: {"run_id", "stage", "started"}
        self._failed_stages = set()
        self._started = set()  # (run_id, stage) of every stage started
        self._lock = threading.Lock()

    def _send(self, event):
        self._seq += 1
        self._emit({"seq": self._seq, "time": round(self._clock(), 3), **event})

    def _close_stage(self, failed=False):
        if self._stage is None:
            return
        stage, self._stage = self._stage, None
        failed = failed or (stage["run_id"], stage["stage"]) in self._failed_stages
        self._send(
            {
                "type": "stage_end",
                "run_id": stage["run_id"],
                "stage": stage["stage"],
                "result": "failed" if failed else "ok",
                "duration_s": round(self._clock() - stage["started"], 3),
            }
        )

    def playbook_start(self, playbook):
        with self._lock:
            self._send({"type": "playbook_start", "playbook": playbook})

    def module_events(self, result):
        """Events a module returned (`bluegreen_event`: a dict or a list of dicts)."""
        raw = result.get("bluegreen_event") if isinstance(result, dict) else None
        events = raw if isinstance(raw, list) else [raw] if isinstance(raw, dict) else []
        with self._lock:
            for event in events:
                if not isinstance(event, dict) or event.get("type") not in MODULE_EVENTS:
                    continue
                if event["type"] == "checks":
                    for record in event.get("records") or []:
                        if isinstance(record, dict):
                            self._module_event(
                                {
                                    **record,
                                    "type": "check",
                                    "run_id": event.get("run_id"),
                                    "stage": event.get("stage"),
                                }
                            )
                else:
                    self._module_event(dict(event))

    def _module_event(self, event):
        key = _identity(event)
        if key is not None:
            if key in self._seen:
                return
            self._seen.add(key)
        event.pop("time", None)  # one clock for every event: this callback's
        kind = event["type"]
        if kind == "stage_start":
            self._close_stage()
        if kind == "failure":
            self._failed_stages.add((event.get("run_id"), event.get("stage")))
        if kind == "run_end":
            self._close_stage()
            stage = event.get("stage")
            if stage and (event.get("run_id"), stage) not in self._started:
                # the stage the run ends in (deploy: finish) runs even when a failure skipped the
                # stages before it: show it, so that every consumer sees where the run ended
                self._module_event({"type": "stage_start", "run_id": event.get("run_id"), "stage": stage})
                self._close_stage()
        self._send(event)
        if kind == "run_start" and event.get("stage"):
            # a run begins in its first stage: that stage starts with it (once, whoever says it first)
            self._module_event(
                {"type": "stage_start", "run_id": event.get("run_id"), "stage": event["stage"]}
            )
        if kind == "stage_start":
            run_id, stage = event.get("run_id"), event.get("stage")
            self._stage = {"run_id": run_id, "stage": stage, "started": self._clock()}
            self._started.add((run_id, stage))

    def task_failed(self, host, task, action, message, stderr=""):
        with self._lock:
            self._send(
                {
                    "type": "task_failed",
                    "host": host,
                    "task": task,
                    "action": action,
                    "stage": self._stage["stage"] if self._stage else None,
                    "message": message[:MESSAGE_LIMIT],
                    "stderr": stderr[-MESSAGE_LIMIT:],
                }
            )

    def diff(self, host, task, text):
        with self._lock:
            self._send(
                {
                    "type": "diff",
                    "host": host,
                    "task": task,
                    "stage": self._stage["stage"] if self._stage else None,
                    "diff": text[:DIFF_LIMIT],
                }
            )

    def playbook_end(self, stats):
        with self._lock:
            failed = any(s["failures"] or s["unreachable"] for s in stats.values())
            self._close_stage(
                failed=failed
            )  # a stage still open when the playbook failed is where it stopped
            self._send({"type": "playbook_end", "result": "failed" if failed else "ok", "hosts": stats})


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "bluegreen_events"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._log = None
        self._file = None

    def set_options(self, task_keys=None, var_options=None, direct=None):
        super().set_options(task_keys=task_keys, var_options=var_options, direct=direct)
        path = self.get_option("path")
        if path:
            directory = os.path.dirname(os.path.abspath(path))
            os.makedirs(directory, exist_ok=True)
            self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (open for the whole run)
            self._log = EventLog(self._write)

    def _write(self, event):
        self._file.write(json.dumps(event, sort_keys=True, default=str) + "\n")
        self._file.flush()

    # --- Ansible's callbacks --------------------------------------------------------------------
    def v2_playbook_on_start(self, playbook):
        if self._log:
            self._log.playbook_start(os.path.basename(playbook._file_name))

    def _result(self, result):
        if self._log:
            self._log.module_events(result.result)

    def _failed(self, result, ignore_errors=False):
        if not self._log:
            return
        self._log.module_events(result.result)
        if ignore_errors:
            return
        res = result.result
        message = res.get("msg") or res.get("stderr") or res.get("module_stderr") or ""
        stderr = res.get("stderr") or res.get("module_stderr") or ""
        self._log.task_failed(
            result.host.get_name(),
            result.task.get_name(),
            result.task.action,
            message if isinstance(message, str) else json.dumps(message, default=str),
            stderr if isinstance(stderr, str) else json.dumps(stderr, default=str),
        )

    def v2_on_file_diff(self, result):
        if not self._log:
            return
        res = result.result
        results = res["results"] if result.task.loop and "results" in res else [res]
        for one in results:
            if isinstance(one, dict) and one.get("diff") and one.get("changed", False):
                text = self._get_diff(one["diff"])
                if text:
                    self._log.diff(result.host.get_name(), result.task.get_name(), text)

    def v2_runner_on_ok(self, result):
        self._result(result)

    def v2_runner_item_on_ok(self, result):
        self._result(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._failed(result, ignore_errors)

    def v2_runner_item_on_failed(self, result):
        self._failed(result, result.task.ignore_errors)

    def v2_runner_on_unreachable(self, result):
        self._failed(result)

    def v2_playbook_on_stats(self, stats):
        if not self._log:
            return
        hosts = {host: stats.summarize(host) for host in sorted(stats.processed)}
        self._log.playbook_end(hosts)
        self._file.close()
        self._log = None
