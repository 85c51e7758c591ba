"""The lab fixture: bring the one-machine lab up once per session (per xdist worker: each worker that runs
lab tests has a lab of its own, tests/lab_namespace.py), stop it at the end."""

from __future__ import annotations

import os

import pytest

from tests import lab_namespace
from tests.conftest import LAB
from tests.integration.lab import (
    PlaybookRun,
    fill_controller_caches,
    lab_ran_here,
    run_playbook,
    stop_lab,
    supervisord_pids,
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> PlaybookRun:
    """A fresh lab: whatever ran before is stopped and its data removed, then site.yml (blue live).

    Under pytest-xdist, as root, the worker first enters namespaces of its own (its own ports, its own
    .lab/ under its temp dir: tmp_path_factory's `lab0`), and what site.yml would build on the controller
    from the package index (the initial release, supervisor's environment) is built first, outside them.
    BLUEGREEN_TEST_REUSE_LAB=1 keeps a running lab (and leaves it running) to iterate faster.
    """
    reuse = os.environ.get("BLUEGREEN_TEST_REUSE_LAB") == "1"
    if "PYTEST_XDIST_WORKER" in os.environ and lab_namespace.wanted():
        lab_namespace.enter(LAB, tmp_path_factory.mktemp("lab"))
        fill_controller_caches()
    if not reuse and (lab_ran_here() or supervisord_pids()):  # a fresh lab has nothing to stop
        stop_lab(purge=True)
    run = run_playbook("site.yml")
    try:
        assert run.returncode == 0, run.tail(4000)
        yield run
    finally:
        if not reuse:
            with lab_namespace.lab_network():  # the session may end after a test that is not a lab test
                stop_lab()
