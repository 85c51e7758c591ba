"""The lab fixture: bring the one-machine lab up once per session, stop it at the end."""

from __future__ import annotations

import os

import pytest

from tests.conftest import LAB
from tests.integration.lab import PlaybookRun, run_playbook, stop_lab, supervisord_pids


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def lab() -> PlaybookRun:
    """A fresh lab: whatever ran before is stopped and its data removed, then site.yml (blue live).

    BLUEGREEN_TEST_REUSE_LAB=1 keeps a running lab (and leaves it running) to iterate faster.
    """
    reuse = os.environ.get("BLUEGREEN_TEST_REUSE_LAB") == "1"
    if not reuse and (LAB.exists() or supervisord_pids()):  # a fresh clone has nothing to stop
        stop_lab(purge=True)
    run = run_playbook("site.yml")
    try:
        assert run.returncode == 0, run.tail(4000)
        yield run
    finally:
        if not reuse:
            stop_lab()
