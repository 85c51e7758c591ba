"""Running a playbook and following its progress events (plugins/callback/bluegreen_events.py).

One home for what the demo (and the operator's command line) print while a playbook runs: stage
starts and ends with durations, failed checks, the run's failure and its closing message. All of it
comes from the callback's JSON-lines events; Ansible's own output goes to a log file, unread.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
POLL_SECONDS = 0.2


@dataclass
class PlaybookResult:
    returncode: int
    seconds: float
    events: list[dict] = field(default_factory=list)
    log: Path | None = None

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def of_type(self, kind: str) -> list[dict]:
        return [e for e in self.events if e.get("type") == kind]

    def failure_text(self) -> str | None:
        """Why the run failed, from its events: the run's closing message, else the failed tasks."""
        if self.ok:
            return None
        ends = [e for e in self.of_type("run_end") if e.get("message")]
        if ends:
            return str(ends[-1]["message"])
        failed = self.of_type("task_failed")
        if failed:
            return "; ".join(f"{e.get('host')}: {e.get('message')}" for e in failed[-3:])
        return f"ansible-playbook ended with rc {self.returncode} (see {self.log})"


class EventFollower:
    """Reads whole new lines of an events file, as often as asked."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0

    def new(self) -> Iterator[dict]:
        try:
            with self.path.open("rb") as source:
                source.seek(self._offset)
                chunk = source.read()
        except FileNotFoundError:
            return
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._offset += len(complete)
        for line in complete.splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                yield event


def describe(event: dict) -> str | None:
    """One line for a person, or None for events not worth a line."""
    kind, stage = event.get("type"), event.get("stage")
    if kind == "stage_start":
        return f"[{stage}]"
    if kind == "stage_end":
        return f"[{stage}] {event.get('result')} in {event.get('duration_s', 0):.1f} s"
    if kind == "check" and event.get("verdict") == "fail":
        return f"    check {event.get('name')} on {event.get('node')} failed: {event.get('message')}"
    if kind == "failure":
        return f"    failed: {event.get('check')} on {event.get('host')}: {event.get('observed')}"
    if kind == "run_end" and event.get("message"):
        return f"    -> {event['message']}"
    return None


def run_playbook(
    name: str,
    *args: str,
    log_dir: Path,
    on_event: Callable[[dict, float], None] | None = None,
    inventory: str | None = None,
) -> PlaybookResult:
    """Run playbooks/<name>, calling on_event(event, seconds since start) for each progress event as
    it is written. Ansible's output goes to <log_dir>/<name>.log, its events to <name>.events.jsonl."""
    log_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{Path(name).stem}-{time.strftime('%H%M%S')}-{os.getpid()}"
    events_file, log_file = log_dir / f"{stem}.events.jsonl", log_dir / f"{stem}.log"
    env = {
        **os.environ,
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "BLUEGREEN_EVENTS_FILE": str(events_file),
    }
    command = [str(BIN / "ansible-playbook"), *(["-i", inventory] if inventory else []), f"playbooks/{name}"]
    follower, events = EventFollower(events_file), []
    started = time.monotonic()
    with log_file.open("w") as log:
        proc = subprocess.Popen([*command, *args], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        while True:
            finished = proc.poll() is not None
            for event in follower.new():
                events.append(event)
                if on_event:
                    on_event(event, time.monotonic() - started)
            if finished:
                break
            time.sleep(POLL_SECONDS)
    return PlaybookResult(proc.returncode, time.monotonic() - started, events, log_file)
