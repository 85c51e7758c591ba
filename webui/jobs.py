"""Runs: one ansible-runner job per run, with its own event store, handlers and thread.

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

from webui.actions import Action, ActionRefused, run_vars
from webui.controller_state import ControllerState, describe_holder
from webui.store import FINAL_STATUSES, Database, RunEvents

log = logging.getLogger("webui.jobs")

RUN_ID_PATTERN = re.compile(r"^\d{8}T\d{6}Z-[a-z-]+-[0-9a-f]{6}$")
# "[3/6 validate] Check the node is ready" -> stage 3 of 6, "validate"
STAGE_PATTERN = re.compile(r"^\[(\d+)/(\d+) ([a-z][a-z_-]*)\]")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
STDOUT_LIMIT = 4000
MSG_LIMIT = 2000


def new_run_id(action: str) -> str:
    return f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}-{action}-{secrets.token_hex(3)}"


def parse_stage(task_name: str | None) -> dict | None:
    match = STAGE_PATTERN.match(task_name or "")
    if not match:
        return None
    return {"index": int(match.group(1)), "total": int(match.group(2)), "name": match.group(3)}


def _text(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else ("" if value is None else str(value))
    text = ANSI.sub("", text).replace("\r\n", "\n")
    return text if len(text) <= limit else text[:limit] + " ..."


class RunJob:
    """One run: the handlers ansible-runner calls, and the run's own event store."""

    def __init__(self, db: Database, run_id: str, action: Action) -> None:
        self.db = db
        self.run_id = run_id
        self.action = action
        self.events = RunEvents(db, run_id)
        self.thread: threading.Thread | None = None
        self.runner: Any = None
        self.cancel_requested = False
        self.done = threading.Event()
        # set first thing in finish(): from the moment the store says finished, the run is no longer
        # in the way of the next one (done is set only after the end event is appended)
        self.ending = False
        self._stage: dict | None = None
        self._stages: dict[str, dict] = {}  # name -> {"index", "ok", "failed", "skipped"}
        self._first_failed_stage: str | None = None
        self._last_failure: str | None = None
        self._last_error_lines: list[str] = []

    # --- ansible-runner callbacks (runner thread) ---------------------------------------------
    def event_handler(self, event: dict) -> bool:
        kind = event.get("event", "verbose")
        data = event.get("event_data") or {}
        task = data.get("task") or None
        if kind == "playbook_on_task_start":
            stage = parse_stage(task)
            if stage:
                self._stage = stage
                self._stages.setdefault(
                    stage["name"], {"index": stage["index"], "ok": 0, "failed": 0, "skipped": 0}
                )
        res = data.get("res") if isinstance(data.get("res"), dict) else {}
        msg = None
        failed = kind in ("runner_on_failed", "runner_on_unreachable") and not data.get("ignore_errors")
        if kind in ("runner_on_failed", "runner_on_unreachable", "runner_on_ok") and res.get("msg"):
            msg = _text(res.get("msg"), MSG_LIMIT)
        event_stage = parse_stage(task) or (self._stage if task else None)
        if event_stage and event_stage["name"] in self._stages:
            counts = self._stages[event_stage["name"]]
            if failed:
                counts["failed"] += 1
            elif kind == "runner_on_ok":
                counts["ok"] += 1
            elif kind == "runner_on_skipped":
                counts["skipped"] += 1
        if failed:
            self._last_failure = msg or _text(res or data.get("res"), MSG_LIMIT)
            if event_stage and self._first_failed_stage is None:
                self._first_failed_stage = event_stage["name"]
        stdout = _text(event.get("stdout"), STDOUT_LIMIT)
        if kind in ("verbose", "error") and stdout.strip():
            self._last_error_lines = (self._last_error_lines + stdout.strip().splitlines())[-5:]
        payload = {
            "created": event.get("created"),
            "task": task,
            "play": data.get("play") or None,
            "host": data.get("host") or None,
            "stage": event_stage,
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
    def stage_summary(self, status: str, failed_stage: str | None = None) -> dict[str, str]:
        """Each stage the run reached: failed (the stage whose check failed first), ok, skipped (all its
        tasks skipped) or running. A later stage that did its work and then failed the run on purpose
        (finish reporting the failure) counts as ok."""
        summary = {}
        for name, counts in sorted(self._stages.items(), key=lambda item: item[1]["index"]):
            if name == failed_stage or (counts["failed"] and not counts["ok"]):
                summary[name] = "failed"
            elif counts["ok"]:
                summary[name] = "ok"
            elif counts["skipped"]:
                summary[name] = "skipped"
            else:
                summary[name] = "running" if status == "running" else "skipped"
        return summary

    def failure_message(self, status: str, rc: int | None) -> str | None:
        if status == "successful":
            return None
        if status == "timeout":
            return "the run took too long and was stopped (RUN_TIMEOUT)"
        if status == "canceled":
            return "the run was cancelled"
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
        failure = failure or self.failure_message(status, rc)
        failed_stage = None
        if failure:
            match = re.search(r"failed in stage ([a-z_-]+)", failure)
            failed_stage = self._first_failed_stage or (match.group(1) if match else None)
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
                "stages": self.stage_summary(status, failed_stage),
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
            job = RunJob(self.db, run_id, action)
            self._jobs[run_id] = job
            job.events.append(
                "accepted",
                {"action": action.name, "params": params, "user": user["name"], "playbook": action.playbook},
            )
            private = Path(self.config["DATA_DIR"]) / "runs" / run_id
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
