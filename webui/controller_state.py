"""Read-only view of the controller's state dir: state.json, history.jsonl and deploy.lock.

The parsing, the lock's staleness rules and the holder's description are the controller's own code
(plugins/module_utils/bluegreen_state.py), imported the way Ansible imports it (bluegreen/__init__.py),
so the dashboard and `ansible-playbook` always agree on who holds the lock and whether it is stale.
Nothing here writes: the playbooks own these files.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from ansible.module_utils.bluegreen_state import (
    COLORS,
    StateDir,
    StateError,
    abandoned_run,
    describe_failure,
    describe_holder,
    other_color,
)
from ansible.module_utils.bluegreen_status_view import compare_lbs

__all__ = [
    "COLORS",
    "ControllerState",
    "StateError",
    "abandoned_run",
    "compare_lbs",
    "describe_failure",
    "describe_holder",
    "other_color",
]


class ControllerState:
    def __init__(self, state_dir: Path | str) -> None:
        self.dir = StateDir(str(state_dir))

    def lock(self) -> dict | None:
        """The deploy lock as held now (with `stale`, `stale_reason`), or None when free."""
        return self.dir.lock_info()

    def state(self) -> dict | None:
        """state.json, or None when there is none yet. Raises StateError when it is unreadable."""
        return self.dir.read()

    def history(self, last: int = 100) -> list[dict]:
        return self.dir.history(last)


def seconds_until(timestamp: str | None) -> float | None:
    """Seconds from now until an ISO time as the controller writes it (negative when past)."""
    if not timestamp:
        return None
    try:
        when = dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return round((when - dt.datetime.now(dt.UTC)).total_seconds(), 1)
