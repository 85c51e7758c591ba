"""Server-Sent Events: the wire format, the response, the run stream (replay, then follow live), and
the cap on open streams.

waitress serves each open stream with one of its threads for as long as it is open. So streams get
at most THREADS - STREAM_RESERVED_THREADS threads (the rest always serve pages, the API and actions:
an operator's Rollback is never starved by open tabs), and one user at most STREAMS_PER_USER of them.
A stream over either cap is refused at once with 429 and a message saying which.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from flask import Response, current_app, g, jsonify, request, session, stream_with_context

from webui.auth import session_generation
from webui.store import Database

RETRY_MS = 2000


def format_event(data: Any, event: str | None = None, event_id: int | None = None) -> str:
    """One SSE message. JSON never holds a raw newline, so `data:` is always one line."""
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if event:
        lines.append(f"event: {event}")
    lines.append("data: " + json.dumps(data, separators=(",", ":"), default=str))
    return "\n".join(lines) + "\n\n"


def comment(text: str = "keep-alive") -> str:
    return f": {text}\n\n"


def last_event_id() -> int:
    """The Last-Event-ID the browser sent on reconnect (or ?last_event_id=), 0 when none or malformed."""
    value = request.headers.get("Last-Event-ID") or request.args.get("last_event_id") or "0"
    try:
        return max(0, int(value.strip()))
    except ValueError:
        return 0


class StreamRefused(Exception):
    """No stream slot: the message says which cap was reached."""


class StreamSlots:
    """Open event streams, in total and per user. acquire() takes a slot or refuses; the release it
    returns gives the slot back (once, however often it is called)."""

    def __init__(self, total: int, per_user: int) -> None:
        self.total = total
        self.per_user = per_user
        self._open: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def acquire(self, user: str) -> Callable[[], None]:
        with self._lock:
            if self._open[user] >= self.per_user:
                raise StreamRefused(
                    f"{user} has {self._open[user]} event streams open, the most one user may: "
                    "close another tab of the dashboard"
                )
            if self._open.total() >= self.total:
                raise StreamRefused(
                    f"the dashboard serves at most {self.total} event streams at once and all are open: "
                    "try again later (pages and actions still work)"
                )
            self._open[user] += 1
        released = threading.Event()

        def release() -> None:
            with self._lock:
                if not released.is_set():
                    released.set()
                    self._open[user] -= 1
                    if self._open[user] <= 0:
                        del self._open[user]

        return release

    def open_streams(self) -> dict[str, int]:
        with self._lock:
            return dict(self._open)


def _while_session_holds(generator: Iterator[str], user: str) -> Iterator[str]:
    """The stream, ended early when the user's sessions are revoked (logout anywhere, a new password):
    checked at most once a second, between two messages (a quiet stream sends one every SSE_HEARTBEAT).
    The browser's reconnect then gets 401 like any other request."""
    generation = session.get("generation")
    checked = time.monotonic()
    try:
        for chunk in generator:
            yield chunk
            if time.monotonic() - checked >= 1.0:
                checked = time.monotonic()
                if session_generation(user) != generation:
                    return
    finally:
        getattr(generator, "close", lambda: None)()


def response(generator: Iterator[str]) -> Response:
    """The stream as a response, if the logged-in user may open one more (else 429, generator unused).
    Its slot is given back when the server closes the response: the stream ended or the client left."""
    try:
        release = current_app.extensions["bluegreen"].streams.acquire(g.user["name"])
    except StreamRefused as refused:
        getattr(generator, "close", lambda: None)()
        refusal = jsonify(error=str(refused))
        refusal.status_code = 429
        refusal.headers["Retry-After"] = str(RETRY_MS // 1000 * 5)
        return refusal
    stream = Response(
        stream_with_context(_while_session_holds(generator, g.user["name"])),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"},
    )
    stream.call_on_close(release)
    return stream


def run_stream(db: Database, run_id: str, after: int, job: Any, heartbeat: float) -> Iterator[str]:
    """Every event of the run after `after` from the store, then new ones as they come, then `end`.

    The end event carries the run's result; a client that resumes after it gets it again, so it
    always learns how the run ended.
    """
    yield f"retry: {RETRY_MS}\n\n"
    sent = after
    while True:
        batch = db.events(run_id, after=sent)
        for row in batch:
            if row["kind"] == "end":
                yield format_event(row["payload"], event="end", event_id=row["seq"])
                return
            yield format_event(row["payload"], event_id=row["seq"])
            sent = row["seq"]
        if batch:
            continue
        if job is not None and not job.done.is_set():
            if job.thread is not None and not job.thread.is_alive() and not job.done.is_set():
                job.finish("error", None, failure="the runner thread ended without a result")
                continue
            if not job.events.wait_after(sent, timeout=heartbeat):
                yield comment()
            continue
        # finished (or run by an earlier dashboard process): the end event is in the store
        end_event = db.end_event(run_id)
        if end_event is not None:
            yield format_event(end_event["payload"], event="end", event_id=end_event["seq"])
            return
        if job is None:
            # unfinished in the store and unknown to this process: should not happen (marked lost at start)
            yield format_event({"status": "lost", "rc": None, "failure": "run not tracked"}, event="end")
            return
