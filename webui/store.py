"""The dashboard's SQLite database: runs (who ran what, result), their events, and refused attempts.

One short-lived connection per operation (WAL mode), so the runner threads, the SSE streams and the
request threads never share a connection. Each run's events are appended through its own RunEvents
object (see jobs.py); there is no queue shared between runs.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from webui.files import private_dir, private_file

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id           TEXT PRIMARY KEY,
    action       TEXT NOT NULL,
    playbook     TEXT NOT NULL,
    params       TEXT NOT NULL,          -- JSON: the validated form fields
    extravars    TEXT NOT NULL,          -- JSON: exactly what the playbook got
    user         TEXT NOT NULL,
    role         TEXT NOT NULL,
    remote_addr  TEXT,
    status       TEXT NOT NULL,          -- starting running successful failed timeout canceled error lost
    rc           INTEGER,
    failure      TEXT,                   -- the failure in plain words
    failed_stage TEXT,
    created_at   REAL NOT NULL,
    finished_at  REAL
);
CREATE TABLE IF NOT EXISTS events (
    run_id  TEXT NOT NULL REFERENCES runs(id),
    seq     INTEGER NOT NULL,            -- the SSE event id, 1, 2, 3 ... per run
    kind    TEXT NOT NULL,               -- runner event name, or status / end
    payload TEXT NOT NULL,               -- JSON sent to the browser
    raw     TEXT,                        -- the runner's event as it came (bounded)
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE IF NOT EXISTS session_generations (
    user       TEXT PRIMARY KEY,
    generation INTEGER NOT NULL        -- a session cookie names the generation it was issued in
);
CREATE TABLE IF NOT EXISTS refusals (
    at      REAL NOT NULL,
    user    TEXT,
    action  TEXT,
    status  INTEGER NOT NULL,
    reason  TEXT NOT NULL
);
"""

FINAL_STATUSES = ("successful", "failed", "timeout", "canceled", "error", "lost")
RAW_LIMIT = 64 * 1024


class Database:
    def __init__(self, path: Path | str, refusals_keep: int = 1000) -> None:
        self.path = Path(path)
        self.refusals_keep = refusals_keep
        private_dir(self.path.parent)
        # 0600 before SQLite opens it: its -wal and -shm files take the database file's mode
        for name in (self.path, *(self.path.with_name(self.path.name + x) for x in ("-wal", "-shm"))):
            if name == self.path or name.exists():
                private_file(name)
        with self.connect() as db:
            db.executescript(SCHEMA)

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=10)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            with db:  # one transaction
                yield db
        finally:
            db.close()

    # --- runs ---------------------------------------------------------------------------------
    def create_run(self, run: dict[str, Any]) -> None:
        with self.connect() as db:
            db.execute(
                "INSERT INTO runs (id, action, playbook, params, extravars, user, role, remote_addr, status,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'starting', ?)",
                (
                    run["id"],
                    run["action"],
                    run["playbook"],
                    json.dumps(run["params"], sort_keys=True),
                    json.dumps(run["extravars"], sort_keys=True),
                    run["user"],
                    run["role"],
                    run.get("remote_addr"),
                    time.time(),
                ),
            )

    def update_run(self, run_id: str, **fields: Any) -> None:
        allowed = {"status", "rc", "failure", "failed_stage", "finished_at"}
        if not fields or set(fields) - allowed:
            raise ValueError(f"cannot update run fields {sorted(fields)}")
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with self.connect() as db:
            db.execute(f"UPDATE runs SET {assignments} WHERE id = ?", (*fields.values(), run_id))  # noqa: S608

    def run(self, run_id: str) -> dict | None:
        with self.connect() as db:
            row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return _run_dict(row) if row else None

    def runs(self, limit: int = 200) -> list[dict]:
        with self.connect() as db:
            rows = db.execute("SELECT * FROM runs ORDER BY created_at DESC LIMIT ?", (limit,)).fetchall()
        return [_run_dict(row) for row in rows]

    def unfinished_runs(self) -> list[dict]:
        marks = ",".join("?" for _ in FINAL_STATUSES)
        with self.connect() as db:
            rows = db.execute(
                f"SELECT * FROM runs WHERE status NOT IN ({marks})",  # noqa: S608
                FINAL_STATUSES,
            ).fetchall()
        return [_run_dict(row) for row in rows]

    # --- events -------------------------------------------------------------------------------
    def append_event(self, run_id: str, seq: int, kind: str, payload: dict, raw: dict | None) -> None:
        raw_text = json.dumps(raw, default=str)[:RAW_LIMIT] if raw is not None else None
        with self.connect() as db:
            db.execute(
                "INSERT INTO events (run_id, seq, kind, payload, raw) VALUES (?, ?, ?, ?, ?)",
                (run_id, seq, kind, json.dumps(payload, default=str), raw_text),
            )

    def last_seq(self, run_id: str) -> int:
        with self.connect() as db:
            row = db.execute("SELECT MAX(seq) FROM events WHERE run_id = ?", (run_id,)).fetchone()
        return row[0] or 0

    def events(self, run_id: str, after: int = 0, limit: int = 500) -> list[dict]:
        """Events with seq > after, oldest first: {"seq", "kind", "payload"}."""
        with self.connect() as db:
            rows = db.execute(
                "SELECT seq, kind, payload FROM events WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (run_id, after, limit),
            ).fetchall()
        return [{"seq": r["seq"], "kind": r["kind"], "payload": json.loads(r["payload"])} for r in rows]

    def end_event(self, run_id: str) -> dict | None:
        with self.connect() as db:
            row = db.execute(
                "SELECT seq, kind, payload FROM events WHERE run_id = ? AND kind = 'end'"
                " ORDER BY seq DESC LIMIT 1",
                (run_id,),
            ).fetchone()
        return (
            {"seq": row["seq"], "kind": row["kind"], "payload": json.loads(row["payload"])} if row else None
        )

    def raw_events(self, run_id: str) -> list[dict]:
        with self.connect() as db:
            rows = db.execute(
                "SELECT seq, kind, payload, raw FROM events WHERE run_id = ? ORDER BY seq", (run_id,)
            ).fetchall()
        return [
            {
                "seq": r["seq"],
                "kind": r["kind"],
                "payload": json.loads(r["payload"]),
                "raw": _maybe_json(r["raw"]),
            }
            for r in rows
        ]

    # --- session generations ------------------------------------------------------------------
    def session_generation(self, user: str) -> int:
        """The user's current session generation (0 until the first logout)."""
        with self.connect() as db:
            row = db.execute("SELECT generation FROM session_generations WHERE user = ?", (user,)).fetchone()
        return row[0] if row else 0

    def end_sessions(self, user: str) -> None:
        """Move the user to a new session generation: every cookie issued before is refused from now on."""
        with self.connect() as db:
            db.execute(
                "INSERT INTO session_generations (user, generation) VALUES (?, 1)"
                " ON CONFLICT(user) DO UPDATE SET generation = generation + 1",
                (user,),
            )

    # --- refused attempts ---------------------------------------------------------------------
    def record_refusal(self, user: str | None, action: str | None, status: int, reason: str) -> None:
        """Record a refused attempt; only the newest `refusals_keep` are kept (anyone can cause one)."""
        with self.connect() as db:
            cursor = db.execute(
                "INSERT INTO refusals (at, user, action, status, reason) VALUES (?, ?, ?, ?, ?)",
                (time.time(), user, (action or "")[:40], status, reason[:500]),
            )
            db.execute("DELETE FROM refusals WHERE rowid <= ?", (cursor.lastrowid - self.refusals_keep,))

    def refusals(self, limit: int = 50) -> list[dict]:
        with self.connect() as db:
            rows = db.execute("SELECT * FROM refusals ORDER BY at DESC LIMIT ?", (limit,)).fetchall()
        return [dict(row) for row in rows]


def _maybe_json(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text  # cut at RAW_LIMIT


def _run_dict(row: sqlite3.Row) -> dict:
    run = dict(row)
    run["params"] = json.loads(run["params"])
    run["extravars"] = json.loads(run["extravars"])
    end = run["finished_at"] or time.time()
    run["duration_s"] = round(end - run["created_at"], 1)
    run["finished"] = run["status"] in FINAL_STATUSES
    return run


class RunEvents:
    """The event store of one run: appends numbered events and wakes the streams that follow it."""

    def __init__(self, db: Database, run_id: str) -> None:
        self.db = db
        self.run_id = run_id
        self._cond = threading.Condition()
        self._seq = db.last_seq(run_id)

    @property
    def seq(self) -> int:
        return self._seq

    def append(self, kind: str, payload: dict, raw: dict | None = None) -> int:
        with self._cond:
            self._seq += 1
            payload = {**payload, "seq": self._seq, "event": kind}
            self.db.append_event(self.run_id, self._seq, kind, payload, raw)
            self._cond.notify_all()
            return self._seq

    def wait_after(self, seq: int, timeout: float) -> bool:
        """Block until an event later than seq exists (True) or timeout passes (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._seq > seq, timeout=timeout)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()
