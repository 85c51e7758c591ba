"""The files a load-generator run leaves behind, shared by `loadgen` (writer) and `verify` (reader).

A run directory holds:

``run.json``
    Written atomically when the run starts: ``run_id``, ``urls`` (every URL the run sends to, in
    round-robin order; runs before several URLs wrote one ``url``), ``mode`` and the parameters. It lets
    `verify` find the run's ids even if the load generator was killed before it could finish.
``requests.ndjson``
    One line per request, appended as answers arrive (flushed at least once a second)::

        {"seq": 120, "count": 10, "t_start": 1732460000.123456, "latency_s": 0.00213,
         "status": 200, "kind": "ok", "served_by": "blue-1", "url": "http://10.87.0.11:8080/v1/logs"}

    The request carried the entries with ids ``<run_id>-<seq>`` .. ``<run_id>-<seq + count - 1>``.
    ``status`` is the HTTP status or null when no answer came; ``kind`` is one of `KINDS` (or
    ``http-<code>`` for any answer other than 200); ``served_by`` is the first of `SERVED_BY_HEADERS`
    the answer carried, or null; ``url`` is where the request went (absent in older runs).
``summary.json``
    Written atomically at the end (see `bluegreen.loadgen.LoadgenSummary`). Its absence means the run
    did not finish: requests in flight when it stopped have no line.

An entry is *acked* when its request got HTTP 200: that is the service's promise that it is durably
in a sink. A request whose kind is not ``ok`` is a failed request, even when it was acked (``bad-ack``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

RUN_FILE = "run.json"
REQUESTS_FILE = "requests.ndjson"
SUMMARY_FILE = "summary.json"

# Response headers that name the node (or proxy) that answered, first match wins. The lab's HAProxy
# sets X-Bluegreen-Node (and X-Bluegreen-Color) on every answer from a backend.
SERVED_BY_HEADERS = ("X-Bluegreen-Node", "X-Served-By", "X-Node", "Server")

# Run ids become id prefixes and file content: keep them to characters that need no escaping.
RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

KINDS = {
    "ok": "HTTP 200 with {'accepted': count}: every entry acked",
    "bad-ack": "HTTP 200 but the body did not confirm the count (entries still count as acked)",
    "http-<code>": "an answer other than 200: nothing of the batch may be written",
    "connect-error": "no connection could be made: the request was never sent",
    "disconnected": "the server closed the connection before answering: outcome unknown",
    "connection-reset": "the connection was reset: outcome unknown",
    "timeout": "no answer within --timeout (may include waiting for a pooled connection)",
    "payload-error": "the answer's body could not be read",
    "client-error": "any other client-side HTTP error",
    "client-backpressure": "the schedule could not start the request (--max-inflight reached): not sent",
    "unanswered": "still in flight when the load generator stopped waiting (--drain-timeout)",
}


def entry_id(run_id: str, seq: int) -> str:
    """The id of entry `seq` of run `run_id`."""
    return f"{run_id}-{seq}"


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so a reader sees either the old file or the whole new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
