"""Runs: one ansible-runner job per run, with its own event store, handlers and thread.

Progress (stages, checks, the failure) comes from our callback's events (plugins/callback/
bluegreen_events.py), which the run writes to a file in its private directory; each runner event
also brings in the progress events written since the last one. Task names are only shown, never read.

A run goes on when nobody watches: the runner thread owns it, the browser only reads its events.
One run at a time, through the same lock the CLI takes: before starting, the deploy lock in the
state dir is read and a held lock refuses the run, naming the holder. The playbook takes the lock
itself, so a CLI that wins a race still ends the run in a clean refusal, shown on the run page.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import ansible_runner

from bluegreen.progress import EventFollower
from webui.actions import Action, ActionRefused, run_vars
from webui.controller_state import ControllerState, describe_holder
from webui.store import FINAL_STATUSES, Database, RunEvents

log = logging.getLogger("webui.jobs")

RUN_ID_PATTERN = re.compile(r"^\d{8}T\d{6}Z-[a-z-]+-[0-9a-f]{6}$")
PROGRESS_FILE = "bluegreen-events.jsonl"  # in the run's private directory (BLUEGREEN_EVENTS_FILE)
CALLBACK_DIR = Path(__file__).resolve().parent.parent / "plugins" / "callback"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# runs ansible-runner stopped, and why
STOPPED = {
    "timeout": "the run took too long and was stopped (RUN_TIMEOUT)",
    "canceled": "the run was cancelled",
}
STDOUT_LIMIT = 4000
MSG_LIMIT = 2000


def new_run_id(action: str) -> str:
    return f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}-{action}-{secrets.token_hex(3)}"


def _text(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else ("" if value is None else str(value))
    text = ANSI.sub("", text).replace("\r\n", "\n")
    return text if len(text) <= limit else text[:limit] + " ..."


class RunJob:
    """One run: the handlers ansible-runner calls, and the run's own event store."""

    def __init__(self, db: Database, run_id: str, action: Action, progress_file: Path | None = None) -> None:
        self.db = db
        self.run_id = run_id
        self.action = action
        self.events = RunEvents(db, run_id)
        self._progress_events = EventFollower(progress_file) if progress_file else None
        self.thread: threading.Thread | None = None
        self.runner: Any = None
        self.cancel_requested = False
        self.done = threading.Event()
        # set first thing in finish(): from the moment the store says finished, the run is no longer
        # in the way of the next one (done is set only after the end event is appended)
        self.ending = False
        self._progress_lock = threading.Lock()
        self._stage: str | None = None  # the stage running now
        self._stages: dict[str, str] = {}  # name -> running | ok | failed, in the order they started
        self._failure: dict | None = None  # the run's failure event (first failure wins)
        self._run_end: dict | None = None
        self._last_failure: str | None = None
        self._last_error_lines: list[str] = []

    # --- progress events (our callback's file) -------------------------------------------------
    def read_progress(self) -> None:
        """Append the progress events written since the last call (whole lines only) to the store."""
        if self._progress_events is None:
            return
        with self._progress_lock:
            for event in self._progress_events.new():
                self._progress(event)
                self.events.append("progress", event)

    def _progress(self, event: dict) -> None:
        kind, stage = event.get("type"), event.get("stage")
        if kind == "stage_start" and stage:
            self._stage = stage
            self._stages[stage] = "running"
        elif kind == "stage_end" and stage:
            self._stages[stage] = "failed" if event.get("result") == "failed" else "ok"
            self._stage = None
        elif kind == "failure" and self._failure is None:
            self._failure = event
        elif kind == "run_end":
            self._run_end = event

    # --- ansible-runner callbacks (runner thread) ---------------------------------------------
    def event_handler(self, event: dict) -> bool:
        self.read_progress()
        kind = event.get("event", "verbose")
        data = event.get("event_data") or {}
        task = data.get("task") or None
        res = data.get("res") if isinstance(data.get("res"), dict) else {}
        msg = None
        failed = kind in ("runner_on_failed", "runner_on_unreachable") and not data.get("ignore_errors")
        if kind in ("runner_on_failed", "runner_on_unreachable", "runner_on_ok") and res.get("msg"):
            msg = _text(res.get("msg"), MSG_LIMIT)
        if failed:
            self._last_failure = msg or _text(res or data.get("res"), MSG_LIMIT)
        stdout = _text(event.get("stdout"), STDOUT_LIMIT)
        if kind in ("verbose", "error") and stdout.strip():
            self._last_error_lines = (self._last_error_lines + stdout.strip().splitlines())[-5:]
        payload = {
            "created": event.get("created"),
            "task": task,
            "play": data.get("play") or None,
            "host": data.get("host") or None,
            "stage": self._stage if task else None,
            "stdout": stdout,
            "msg": msg,
            "failed": failed,
            "changed": bool(res.get("changed")) if res else False,
        }
        self.events.append(kind, payload, raw=event)
        return True  # ansible-runner also keeps it under artifacts/<ident>/job_events

    def status_handler(self, status_data: dict, runner_config: Any = None) -> None:
        status = status_data.get("status", "unknown")
        # a final status is recorded by finish() only: the store must not call the run finished while
        # it is still the active run (the next action would be refused "in progress")
        if status not in FINAL_STATUSES:
            self.db.update_run(self.run_id, status=status)
        self.events.append("status", {"status": status})

    def cancel_callback(self) -> bool:
        return self.cancel_requested

    def finished_callback(self, runner: Any) -> None:
        self.finish(runner.status, runner.rc)

    # --- the end of a run ---------------------------------------------------------------------
    def stage_summary(self, status: str) -> dict[str, str]:
        """Each stage of the action: ok or failed as its stage_end said; one that started and never
        ended is failed (the run stopped in it) or still running; one that never started is skipped."""
        summary = {}
        for name in self.action.stages or tuple(self._stages):
            state = self._stages.get(name, "skipped")
            if state == "running" and status != "running":
                state = "failed"
            summary[name] = state
        return summary

    def failure_message(self, status: str, rc: int | None) -> str | None:
        if status == "successful":
            return None
        if status in STOPPED:
            return STOPPED[status]
        if self._run_end and self._run_end.get("message") and self._run_end.get("result") != "ok":
            return _text(self._run_end["message"], MSG_LIMIT)
        if self._last_failure:
            return self._last_failure
        if self._last_error_lines:
            return " ".join(self._last_error_lines)
        return f"ansible-playbook ended with rc {rc}"

    def finish(self, status: str, rc: int | None, failure: str | None = None) -> None:
        """Record the result and append the final `end` event (once)."""
        if self.done.is_set():
            return
        self.ending = True
        self.read_progress()  # the last events (stage_end, run_end, playbook_end) before the result
        failure = failure or self.failure_message(status, rc)
        failed_stage = (self._failure or {}).get("stage") if failure else None
        self.db.update_run(
            self.run_id,
            status=status,
            rc=rc,
            failure=failure,
            failed_stage=failed_stage,
            finished_at=time.time(),
        )
        run = self.db.run(self.run_id) or {}
        self.events.append(
            "end",
            {
                "status": status,
                "rc": rc,
                "failure": failure,
                "failed_stage": failed_stage,
                "stages": self.stage_summary(status),
                "duration_s": run.get("duration_s"),
            },
        )
        self.done.set()
        log.info("run %s %s (rc %s)%s", self.run_id, status, rc, f": {failure}" if failure else "")

    def alive(self) -> bool:
        return not self.done.is_set() and self.thread is not None and self.thread.is_alive()


class RunManager:
    """Starts runs one at a time and keeps the jobs of this process, keyed by run id."""

    def __init__(self, config: dict, db: Database) -> None:
        self.config = config
        self.db = db
        self.controller = ControllerState(config["STATE_DIR"])
        self._jobs: dict[str, RunJob] = {}
        self._start_lock = threading.Lock()
        self._mark_lost_runs()

    def _mark_lost_runs(self) -> None:
        """Runs a previous dashboard process left unfinished: their outcome is no longer observable here."""
        for run in self.db.unfinished_runs():
            job = RunJob(self.db, run["id"], Action(run["action"], run["action"], run["playbook"], "", ""))
            job.finish(
                "lost",
                None,
                failure="the dashboard stopped while this run was in progress; "
                "see the controller's history for how it ended",
            )

    def job(self, run_id: str) -> RunJob | None:
        return self._jobs.get(run_id)

    def active(self) -> RunJob | None:
        for job in list(self._jobs.values()):
            if not job.done.is_set() and not job.ending:
                if job.thread is not None and not job.thread.is_alive():
                    job.finish("error", None, failure="the runner thread ended without a result")
                    continue
                return job
        return None

    def check_lock(self, action: Action) -> dict | None:
        """Refuse (ActionRefused 409) unless the deploy lock allows this action; the lock as read."""
        lock = self.controller.lock()
        if action.needs_stale_lock:
            if lock is None:
                raise ActionRefused("the deploy lock is free: there is no stale lock to break", status=409)
            if not lock.get("stale"):
                raise ActionRefused(
                    f"refusing to break a live lock: {describe_holder(lock)}", status=409, lock=lock
                )
        elif lock is not None:
            hint = "; use Break stale lock" if lock.get("stale") else ""
            raise ActionRefused(f"{describe_holder(lock)}{hint}", status=409, lock=lock)
        return lock

    def start(
        self,
        action: Action,
        params: dict[str, str],
        extravars: dict[str, Any],
        user: dict,
        remote_addr: str | None = None,
    ) -> str:
        """Start the action's playbook and return the run id.

        ActionRefused when another run or the deploy lock is in the way; nothing is started then.
        """
        with self._start_lock:
            current = self.active()
            if current is not None:
                raise ActionRefused(
                    f"run {current.run_id} ({current.action.name}) is in progress: one run at a time",
                    status=409,
                )
            self.check_lock(action)
            extravars = run_vars(action, extravars, self.config, user["name"])
            run_id = new_run_id(action.name)
            self.db.create_run(
                {
                    "id": run_id,
                    "action": action.name,
                    "playbook": action.playbook,
                    "params": params,
                    "extravars": extravars,
                    "user": user["name"],
                    "role": user["role"],
                    "remote_addr": remote_addr,
                }
            )
            private = Path(self.config["DATA_DIR"]) / "runs" / run_id
            job = RunJob(self.db, run_id, action, progress_file=private / PROGRESS_FILE)
            self._jobs[run_id] = job
            job.events.append(
                "accepted",
                {"action": action.name, "params": params, "user": user["name"], "playbook": action.playbook},
            )
            private.mkdir(parents=True, exist_ok=False)
            try:
                job.thread, job.runner = ansible_runner.run_async(
                    private_data_dir=str(private),
                    project_dir=self.config["PROJECT_DIR"],
                    playbook=action.playbook,
                    inventory=self.config["INVENTORY"],
                    extravars=dict(extravars),
                    ident=run_id,
                    envvars={
                        # the venv's ansible-playbook, as the Makefile's $(BIN)/ansible-playbook
                        "PATH": os.pathsep.join([self.config["ANSIBLE_BIN_DIR"], os.environ.get("PATH", "")]),
                        "ANSIBLE_NOCOLOR": "1",
                        "ANSIBLE_FORCE_COLOR": "0",
                        # our progress callback, beside ansible-runner's own (which replaces the path)
                        "ANSIBLE_CALLBACK_PLUGINS": str(CALLBACK_DIR),
                        "ANSIBLE_CALLBACKS_ENABLED": "bluegreen_events",
                        "BLUEGREEN_EVENTS_FILE": str(private / PROGRESS_FILE),
                    },
                    event_handler=job.event_handler,
                    status_handler=job.status_handler,
                    cancel_callback=job.cancel_callback,
                    finished_callback=job.finished_callback,
                    timeout=self.config["RUN_TIMEOUT"],
                    quiet=True,
                )
            except Exception as exc:  # a runner that cannot even start is a failed run, not a 500
                log.exception("run %s could not start", run_id)
                job.finish("error", None, failure=f"ansible-runner could not start the run: {exc}")
            log.info("run %s: %s %s by %s", run_id, action.name, params, user["name"])
            return run_id
