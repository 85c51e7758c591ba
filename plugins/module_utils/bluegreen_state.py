"""The deployment state on an lb host: state.json, history.jsonl and the deploy lock.

state.json    {"live": "blue", "previous": "green", "versions": {"blue": "1.0.0", "green": "1.1.0"},
               "deployment": {"id", "version", "stage", "started_at"} | null,
               "warm_until": "<time the previous color may be retired>" | null, "updated_at": "..."}
history.jsonl one JSON object per finished deployment / switch / rollback / lock break.
deploy.lock   {"deployment_id", "token", "action", "user", "actor", "host", "pid", "started_at",
               "ttl_seconds"}
              (user: the controller's OS user; actor: who asked, e.g. the dashboard's user, or null;
              token: a random value of the run; the run holds the lock only if id, token, pid and host
              all match)

Every write is atomic (temp file, fsync, rename), so a reader sees the old or the new file, never a
torn one. The lock appears whole (a complete temp file link()ed to its name, which fails if the name
exists), and every change of it (take, break, release) is serialised by flock on .deploy.lock.mutex:
two runs racing for it cannot both win, and only a stale lock is ever broken.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import secrets
import socket
import tempfile
import time
from collections.abc import Iterator

from ansible.module_utils.bluegreen_files import atomic_write, fsync_dir, read_text
from ansible.module_utils.bluegreen_version import VersionError, check_version

COLORS = ("blue", "green")
STATE_FILE = "state.json"
HISTORY_FILE = "history.jsonl"
LOCK_FILE = "deploy.lock"
# flock()ed while the lock is taken, broken or released (never removed; its content means nothing)
LOCK_MUTEX_FILE = ".deploy.lock.mutex"


class StateError(Exception):
    """State, history or lock cannot be used as asked; the message says why."""


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)


def stage_durations(marks: dict, end: float) -> dict:
    """Seconds per stage from each stage's start time (epoch seconds) to the next one's (or end)."""
    ordered = sorted((float(start), stage) for stage, start in marks.items())
    ends = [start for start, _ in ordered[1:]] + [end]
    durations = {stage: round(stop - start, 3) for (start, stage), stop in zip(ordered, ends, strict=True)}
    durations["total"] = round(end - ordered[0][0], 3) if ordered else 0.0
    return durations


def other_color(color: str) -> str:
    if color not in COLORS:
        raise StateError(f"unknown color {color!r}: expected blue or green")
    return "green" if color == "blue" else "blue"


class StateDir:
    """state.json, history.jsonl and deploy.lock in one directory."""

    def __init__(self, path: str) -> None:
        self.path = path

    def _file(self, name: str) -> str:
        return os.path.join(self.path, name)

    # --- state.json -------------------------------------------------------------------------
    def read(self) -> dict | None:
        text = read_text(self._file(STATE_FILE))
        if text is None:
            return None
        try:
            state = json.loads(text)
        except ValueError as exc:
            raise StateError(f"{self._file(STATE_FILE)} is not valid JSON: {exc}") from exc
        if state.get("live") not in COLORS:
            raise StateError(f"{self._file(STATE_FILE)} has no valid live color: {state.get('live')!r}")
        return state

    def write(self, state: dict) -> None:
        os.makedirs(self.path, exist_ok=True)
        state = {**state, "updated_at": now()}
        atomic_write(self._file(STATE_FILE), json.dumps(state, indent=2, sort_keys=True) + "\n")

    @staticmethod
    def initial(live: str, versions: dict[str, str]) -> dict:
        other_color(live)
        return {
            "live": live,
            "previous": None,
            "versions": {color: versions.get(color) for color in COLORS},
            "deployment": None,
            "warm_until": None,
        }

    # --- history.jsonl ------------------------------------------------------------------------
    def record(self, entry: dict) -> dict:
        """Append one history line (with its time, and stage durations from `marks`) and fsync it."""
        os.makedirs(self.path, exist_ok=True)
        entry = {"at": now(), **entry}
        if entry.get("marks"):
            entry["durations_s"] = stage_durations(entry["marks"], time.time())
        line = json.dumps(entry, sort_keys=True) + "\n"
        fd = os.open(self._file(HISTORY_FILE), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return entry

    def history(self, last: int = 20) -> list[dict]:
        text = read_text(self._file(HISTORY_FILE)) or ""
        entries = []
        for line in text.splitlines()[-last:] if last else text.splitlines():
            try:
                entries.append(json.loads(line))
            except ValueError:
                continue  # a torn last line after a crash is not history
        return entries

    # --- deploy.lock ----------------------------------------------------------------------------
    def lock_info(self) -> dict | None:
        """The lock as held now, with `stale` and `stale_reason` added, or None when free."""
        text = read_text(self._file(LOCK_FILE))
        if text is None:
            return None
        try:
            lock = json.loads(text)
        except ValueError:
            return {"stale": True, "stale_reason": "lock file is not valid JSON", "raw": text[:200]}
        lock["stale"], lock["stale_reason"] = self._staleness(lock)
        return lock

    @staticmethod
    def _staleness(lock: dict) -> tuple[bool, str | None]:
        pid = lock.get("pid")
        if (
            lock.get("host") == socket.gethostname()
            and isinstance(pid, int)
            and not os.path.exists(f"/proc/{pid}")
        ):
            return True, f"holder process {pid} on {lock.get('host')} is gone"
        try:
            age = (dt.datetime.now(dt.timezone.utc) - parse_time(lock["started_at"])).total_seconds()
        except (KeyError, ValueError):
            return True, "lock has no valid started_at"
        ttl = lock.get("ttl_seconds")
        if isinstance(ttl, (int, float)) and age > ttl:
            return True, f"lock is {int(age)}s old, over its TTL of {int(ttl)}s"
        return False, None

    @contextlib.contextmanager
    def _lock_mutex(self) -> Iterator[None]:
        """Serialise every change of deploy.lock (take, break, release) on this host with flock.

        Readers need no mutex: the lock file appears whole (link of a complete temporary file) or not
        at all. The mutex makes "read the lock, judge it, then remove or replace it" one step, so two
        operators breaking one stale lock cannot both win, and nobody removes a lock they did not read.
        """
        os.makedirs(self.path, exist_ok=True)
        fd = os.open(self._file(LOCK_MUTEX_FILE), os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the flock

    def _write_lock(self, lock: dict) -> None:
        """Create deploy.lock whole: a complete, fsynced temporary file linked to the lock's name (link
        fails if the name exists, like O_EXCL), then the directory fsynced so the entry survives a crash."""
        fd, tmp = tempfile.mkstemp(prefix=".tmp-lock-", dir=self.path)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(lock, sort_keys=True) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o640)
            os.link(tmp, self._file(LOCK_FILE))
        finally:
            os.unlink(tmp)
        fsync_dir(self.path)

    def acquire(self, holder: dict, break_stale: bool = False) -> tuple[dict, dict | None]:
        """Take the lock for holder: (the lock, the stale lock broken for it or None).

        The holder's own lock (same deployment id, token, pid and host) is returned as it is. Any other
        lock is refused naming its holder; with break_stale a stale one is broken first (recorded in
        history), a live one never.
        """
        with self._lock_mutex():
            current = self.lock_info()
            if current is not None and holds(current, holder):
                return current, None
            broken = self._break(current, holder, break_stale) if current is not None else None
            lock = {**holder, "started_at": now()}
            self._write_lock(lock)
            return lock, broken

    def check_acquire(self, holder: dict, break_stale: bool = False) -> None:
        """Refuse as acquire() would, changing nothing (check mode)."""
        current = self.lock_info()
        if current is not None and not holds(current, holder):
            refusal(current, break_stale)

    def release(self, deployment_id: str, token: str | None = None) -> bool:
        """Release the lock if deployment_id (and token, when given) holds it; whether a lock was removed."""
        with self._lock_mutex():
            current = self.lock_info()
            if current is None:
                return False
            other_token = token is not None and current.get("token") != token
            if current.get("deployment_id") != deployment_id or other_token:
                raise StateError(f"not releasing the lock: {describe_holder(current)}, not {deployment_id}")
            os.unlink(self._file(LOCK_FILE))
            return True

    def break_lock(self, by: dict) -> dict | None:
        """Remove a stale lock (only when asked explicitly), recorded in history; a live lock is refused.
        Returns the lock broken, or None when the lock was free."""
        with self._lock_mutex():
            current = self.lock_info()
            if current is None:
                return None
            return self._break(current, by, break_stale=True)

    def _break(self, current: dict, by: dict, break_stale: bool) -> dict:
        """Under the mutex: remove `current`, the lock as just read, if it is stale and breaking was
        asked for (else StateError); record the break in history."""
        refusal(current, break_stale)
        os.unlink(self._file(LOCK_FILE))
        who = {key: by.get(key) for key in ("user", "actor", "host", "deployment_id")}
        self.record({"action": "break-lock", "result": "ok", "broken_lock": current, **who})
        return current


def refusal(current: dict, break_stale: bool) -> None:
    """Raise StateError naming the holder unless `current`, another run's lock, may be broken."""
    if not break_stale:
        raise StateError(describe_holder(current))
    if not current.get("stale"):
        raise StateError(f"refusing to break a lock that is not stale: {describe_holder(current)}")


def holds(lock: dict, holder: dict) -> bool:
    """Whether holder is the run that holds lock: the same deployment id, token, pid and host.
    An equal deployment id alone proves nothing (two runs may be named alike)."""
    return all(lock.get(key) == holder.get(key) for key in ("deployment_id", "token", "pid", "host"))


def describe_holder(lock: dict) -> str:
    """One sentence naming who holds a lock, for refusals."""
    if not lock:
        return "the deploy lock is held"
    # actor: who asked for the run when it is not the OS user (the dashboard's logged-in user)
    who = f"{lock['actor']} (OS user {lock.get('user')})" if lock.get("actor") else f"user {lock.get('user')}"
    text = (
        f"the deploy lock is held by deployment {lock.get('deployment_id')} ({lock.get('action', 'deploy')}) "
        f"of {who} on {lock.get('host')}, pid {lock.get('pid')}, "
        f"since {lock.get('started_at')}"
    )
    if lock.get("stale"):
        text += f"; it looks stale ({lock.get('stale_reason')}): break it with -e bluegreen_break_lock=true"
    return text


# --- the run lifecycle: begin, stage, fail, end -------------------------------------------------------
# One home for "start a run", "fail a run" and "finish a run" of deploy, switch, rollback and retire.
# The run lives in the state dir, not in the controller's memory: state.json's `deployment` holds the
# running run (stage, stage start times), its `failure` the first failure of the last run, deploy.lock
# its holder, history.jsonl one line when it ends. So status.yml and the dashboard show what a run is
# doing, and why it failed, even after its controller died.

RUN_ACTIONS = ("deploy", "switch", "rollback", "retire")
FIRST_STAGE = {"deploy": "preflight", "switch": "switch", "rollback": "rollback", "retire": "retire"}
FAILURE_KEYS = ("stage", "check", "host", "observed")
OBSERVED_MAX = 1200


def event(kind: str, run: dict, stage: str | None, **extra) -> dict:
    """The structured progress record every lifecycle result carries as `bluegreen_event`."""
    return {
        "type": kind,
        "run_id": run.get("id"),
        "action": run.get("action"),
        "stage": stage,
        **extra,
        "time": now(),
    }


def run_holder(run: dict) -> dict:
    """What proves that `run` holds the lock: its id, token and the controller's pid and host."""
    controller = run.get("controller") or {}
    return {
        "deployment_id": run.get("id"),
        "token": run.get("token"),
        "pid": controller.get("pid"),
        "host": controller.get("host"),
    }


def run_message(
    run: dict, failure: dict | None, switched: bool = False, rollback_error: str | None = None
) -> str:
    """The one sentence a run ends with: what happened, and on failure its stage, check, host, observed
    value and where traffic is. `run` may be one that never began (no id): then nothing was changed."""
    action = run.get("action", "deploy")
    began = bool(run.get("id"))
    if failure is None:
        if action == "deploy":
            return f"deployment {run.get('id')}: {run.get('version')} is live on {run.get('to')}"
        if action == "retire":
            return f"retired {run.get('from')}"
        return f"{action} {run.get('id')}: live traffic moved {run.get('from')} -> {run.get('to')}"
    where = f'check "{failure.get("check")}" on {failure.get("host")}: {failure.get("observed")}'
    if action == "deploy":
        if not began:
            traffic = "Nothing was changed."
        elif rollback_error:
            traffic = f"ROLLBACK FAILED: {rollback_error}; traffic may still be on {run.get('to')}."
        elif switched:
            traffic = f"Rolled back: {run.get('from')} is live again."
        else:
            traffic = f"Traffic never moved: {run.get('from')} stays live."
        return f"deploy of {run.get('version')} failed in stage {failure.get('stage')}: {where}. {traffic}"
    if action == "retire":
        return f"retire refused or failed: {where}"
    live = run.get("from") or "the live color"
    return f"{action} to {run.get('to') or 'the other color'} refused or failed: {where}. {live} stays live."


class Lifecycle:
    """begin / stage / fail / end of one run, on the state dir of the run's (anchor) lb host."""

    def __init__(self, store: StateDir) -> None:
        self.store = store

    def _state(self) -> dict:
        state = self.store.read()
        if state is None:
            raise StateError(
                f"no state.json in {self.store.path}: bring the lab up with playbooks/site.yml first"
            )
        return state

    def _held(self, run: dict) -> dict:
        """state.json, after checking that `run` holds the lock (else StateError naming who does)."""
        if not run.get("id") or not run.get("token"):
            raise StateError("this run never began (no id and token): call action=begin first")
        lock = self.store.lock_info()
        if lock is None or not holds(lock, run_holder(run)):
            holder = describe_holder(lock) if lock else "the deploy lock is free"
            raise StateError(f"run {run['id']} does not hold the deploy lock: {holder}")
        return self._state()

    def begin(
        self,
        action: str,
        *,
        controller: dict,
        version: str | None = None,
        color: str | None = None,
        ttl_seconds: int = 3600,
        break_stale: bool = False,
        check: bool = False,
    ) -> tuple[dict, dict]:
        """Check the inputs, compute from/to, take the lock, write the running deployment.
        Returns (the run, what else happened: broken_lock and abandoned, the run the broken lock held).
        With check, only what a real begin would refuse is refused; nothing is written."""
        if action not in RUN_ACTIONS:
            raise StateError(f"unknown run action {action!r}: expected one of {', '.join(RUN_ACTIONS)}")
        pid = controller.get("pid")
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            raise StateError(f"controller.pid must be the ansible-playbook's process id, got {pid!r}")
        for key in ("user", "host"):
            if not isinstance(controller.get(key), str) or not controller[key]:
                raise StateError(
                    f"controller.{key} must name the controller's {key}, got {controller.get(key)!r}"
                )
        if action == "deploy":
            try:
                check_version(version, "bluegreen_version")
            except VersionError as exc:
                raise StateError(str(exc)) from None
        if action == "switch" and color not in COLORS:
            raise StateError(f"bluegreen_color must be blue or green, got {json.dumps(color)}")
        state = self._state()
        live = state["live"]
        target = color if action == "switch" else other_color(live)
        versions = dict(state.get("versions") or {})
        token = secrets.token_hex(8)
        label = {"deploy": version, "retire": "retire"}.get(action, f"{action}-{target}")
        stage = FIRST_STAGE[action]
        started = time.time()
        run = {
            "id": f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}-{label}-{token[:6]}",
            "token": token,
            "action": action,
            "version": version if action == "deploy" else versions.get(target),
            "live": live,
            "idle": target,
            "from": target if action == "retire" else live,
            "to": None if action == "retire" else target,
            "versions_before": versions,
            "started_at": now(),
            "controller": {key: controller.get(key) for key in ("pid", "user", "host", "actor")},
            "dir": self.store.path,
            "warm_until": state.get("warm_until"),
        }
        holder = {
            **run_holder(run),
            "action": action,
            "version": run["version"],
            "user": controller["user"],
            "actor": controller.get("actor"),
            "ttl_seconds": ttl_seconds,
        }
        if check:
            self.store.check_acquire(holder, break_stale=break_stale)
            run["stage"] = stage
            return run, {}
        _, broken = self.store.acquire(holder, break_stale=break_stale)
        extra: dict = {}
        if broken:
            extra["broken_lock"] = broken
        try:
            state = self._state()  # again: the run whose lock was just broken may have changed it
            abandoned = state.get("deployment")
            if abandoned:
                # a run that died without ending: its line in history, so nothing about it is lost
                failure = (
                    state.get("failure")
                    if (state.get("failure") or {}).get("run_id") == abandoned.get("id")
                    else None
                )
                reason = (broken or {}).get("stale_reason") or "its controller never ended it"
                extra["abandoned"] = self.store.record(
                    {
                        "action": abandoned.get("action", "deploy"),
                        "deployment_id": abandoned.get("id"),
                        "version": abandoned.get("version"),
                        "from": abandoned.get("from"),
                        "to": abandoned.get("to"),
                        "result": "abandoned",
                        "failure": failure
                        or {
                            "stage": abandoned.get("stage"),
                            "check": "run ended",
                            "host": (broken or {}).get("host"),
                            "observed": f"the run stopped in stage {abandoned.get('stage')}: {reason}",
                        },
                        "started_at": abandoned.get("started_at"),
                        "marks": abandoned.get("marks") or {},
                    }
                )
            deployment = {
                "id": run["id"],
                "action": action,
                "version": run["version"],
                "from": run["from"],
                "to": run["to"],
                "stage": stage,
                "started_at": run["started_at"],
                "marks": {stage: started},
                "controller": run["controller"],
            }
            self.store.write({**state, "deployment": deployment, "failure": None})
        except BaseException:
            self.store.release(run["id"], token)
            raise
        run["stage"] = stage
        return run, extra

    def stage(self, run: dict, stage: str) -> tuple[dict, bool]:
        """Enter `stage` (its start time in state.json) unless the run failed already.
        Returns (the run's deployment, with `failure` when it failed; whether the stage was entered)."""
        state = self._held(run)
        deployment = dict(state.get("deployment") or {})
        failure = self._failure(state, run)
        if failure is not None:
            return {**deployment, "failure": failure}, False
        marks = {**(deployment.get("marks") or {}), stage: time.time()}
        deployment = {**deployment, "stage": stage, "marks": marks}
        self.store.write({**state, "deployment": deployment})
        return {**deployment, "failure": None}, True

    def fail(self, run: dict, failure: dict) -> tuple[dict, bool]:
        """Record the run's failure in state.json; the first failure of a run wins.
        Returns (the run's failure as stored, whether this call stored it)."""
        missing = [key for key in FAILURE_KEYS if failure.get(key) in (None, "")]
        if missing:
            raise StateError(f"a failure needs {', '.join(FAILURE_KEYS)}; missing: {', '.join(missing)}")
        state = self._held(run)
        first = self._failure(state, run)
        if first is not None:
            return first, False
        stored = {
            "run_id": run["id"],
            "action": run.get("action"),
            **{key: str(failure[key]) for key in FAILURE_KEYS},
            "at": now(),
        }
        if len(stored["observed"]) > OBSERVED_MAX:
            stored["observed"] = stored["observed"][: OBSERVED_MAX - 3] + "..."
        self.store.write({**state, "failure": stored})
        return stored, True

    def end(self, run: dict, rollback_error: str | None = None, entry: dict | None = None) -> dict:
        """History line (with stage durations), running deployment cleared, lock released.
        Returns {result, failed, message, entry}."""
        state = self._held(run)
        deployment = state.get("deployment") or {}
        failure = self._failure(state, run)
        marks = deployment.get("marks") or {}
        switched = run.get("action") == "deploy" and "switch" in marks
        result = "ok" if failure is None else ("rolled-back" if switched else "failed")
        line = self.store.record(
            {
                "action": run.get("action"),
                "deployment_id": run["id"],
                "version": run.get("version"),
                "from": run.get("from"),
                "to": run.get("to"),
                "result": result,
                "failure": failure,
                "rollback_error": rollback_error or None,
                "user": (run.get("controller") or {}).get("user"),
                "actor": (run.get("controller") or {}).get("actor"),
                "host": (run.get("controller") or {}).get("host"),
                "started_at": run.get("started_at"),
                "marks": marks,
                **(entry or {}),
            }
        )
        self.store.write({**state, "deployment": None})
        self.store.release(run["id"], run["token"])
        return {
            "result": result,
            "failed": failure is not None,
            "message": run_message(run, failure, switched, rollback_error),
            "entry": line,
        }

    @staticmethod
    def _failure(state: dict, run: dict) -> dict | None:
        failure = state.get("failure")
        return failure if failure and failure.get("run_id") == run.get("id") else None


def describe_failure(failure: dict) -> str:
    """A stored failure in one line, for status.yml and the dashboard."""
    return (
        f"{failure.get('run_id')} in stage {failure.get('stage')}: "
        f'check "{failure.get("check")}" on {failure.get("host")}: {failure.get("observed")}'
    )


def abandoned_run(state: dict | None, lock: dict | None) -> dict | None:
    """The running deployment when nobody runs it any more (its lock is stale, gone or another's):
    {run_id, action, stage, reason}; None when no run is recorded or its holder still runs."""
    deployment = (state or {}).get("deployment")
    if not deployment:
        return None
    if lock and lock.get("deployment_id") == deployment.get("id") and not lock.get("stale"):
        return None
    if lock is None:
        reason = "no lock is held for it"
    elif lock.get("deployment_id") != deployment.get("id"):
        reason = f"the lock is held by another run, {lock.get('deployment_id')}"
    else:
        reason = lock.get("stale_reason")
    return {
        "run_id": deployment.get("id"),
        "action": deployment.get("action", "deploy"),
        "stage": deployment.get("stage"),
        "reason": reason,
    }
