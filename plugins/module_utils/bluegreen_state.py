"""The deployment state on an lb host: state.json, history.jsonl and the deploy lock.

state.json    {"live": "blue", "previous": "green", "versions": {"blue": "1.0.0", "green": "1.1.0"},
               "deployment": {"id", "version", "stage", "started_at"} | null,
               "warm_until": "<time the previous color may be retired>" | null, "updated_at": "..."}
history.jsonl one JSON object per finished deployment / switch / rollback / lock break.
deploy.lock   {"deployment_id", "action", "user", "actor", "host", "pid", "started_at", "ttl_seconds"}
              (user: the controller's OS user; actor: who asked, e.g. the dashboard's user, or null)

Every write is atomic (temp file, fsync, rename), so a reader sees the old or the new file, never a
torn one. The lock is created with O_EXCL, so two deploys racing for it cannot both win.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import time

from ansible.module_utils.bluegreen_files import atomic_write, read_text

COLORS = ("blue", "green")
STATE_FILE = "state.json"
HISTORY_FILE = "history.jsonl"
LOCK_FILE = "deploy.lock"


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

    def acquire(self, holder: dict) -> dict:
        """Take the lock for holder; refuse, naming the holder, when someone has it (even if stale)."""
        os.makedirs(self.path, exist_ok=True)
        lock = {**holder, "started_at": now()}
        payload = json.dumps(lock, sort_keys=True) + "\n"
        try:
            fd = os.open(self._file(LOCK_FILE), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        except FileExistsError:
            current = self.lock_info() or {}
            raise StateError(describe_holder(current)) from None
        try:
            os.write(fd, payload.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return lock

    def release(self, deployment_id: str) -> bool:
        """Release the lock if deployment_id holds it. Returns whether a lock was removed."""
        current = self.lock_info()
        if current is None:
            return False
        if current.get("deployment_id") != deployment_id:
            raise StateError(f"not releasing the lock: {describe_holder(current)}, not {deployment_id}")
        os.unlink(self._file(LOCK_FILE))
        return True

    def break_lock(self, by: dict) -> dict | None:
        """Remove the lock whoever holds it (only when asked explicitly); recorded in history."""
        current = self.lock_info()
        if current is None:
            return None
        os.unlink(self._file(LOCK_FILE))
        self.record({"action": "break-lock", "result": "ok", "broken_lock": current, **by})
        return current


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
