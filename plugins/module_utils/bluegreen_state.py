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
import socket
import tempfile
import time
from collections.abc import Iterator

from ansible.module_utils.bluegreen_files import atomic_write, read_text

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
        dir_fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def acquire(self, holder: dict, break_stale: bool = False) -> tuple[dict, dict | None]:
        """Take the lock for holder: (the lock, the stale lock broken for it or None).

        The holder's own lock (same deployment id, token, pid and host) is returned as it is. Any other
        lock is refused naming its holder; with break_stale a stale one is broken first (recorded in
        history), a live one never.
        """
        with self._lock_mutex():
            current = self.lock_info()
            broken = None
            if current is not None:
                if holds(current, holder):
                    return current, None
                if not break_stale:
                    raise StateError(describe_holder(current))
                broken = self._break(current, holder)
            lock = {**holder, "started_at": now()}
            self._write_lock(lock)
            return lock, broken

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
            return self._break(current, by)

    def _break(self, current: dict, by: dict) -> dict:
        """Under the mutex: remove `current`, the lock as just read, if it is stale; record the break."""
        if not current.get("stale"):
            raise StateError(f"refusing to break a lock that is not stale: {describe_holder(current)}")
        os.unlink(self._file(LOCK_FILE))
        who = {key: by.get(key) for key in ("user", "actor", "host", "deployment_id")}
        self.record({"action": "break-lock", "result": "ok", "broken_lock": current, **who})
        return current


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
