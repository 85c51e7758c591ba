"""Server-Sent Events: the wire format, the response, and the run stream (replay, then follow live)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from flask import Response, request, stream_with_context

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


def response(generator: Iterator[str]) -> Response:
    return Response(
        stream_with_context(generator),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"},
    )


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
