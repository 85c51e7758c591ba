"""The lab fixture: bring the one-machine lab up once per session (per xdist worker: each worker that runs
lab tests has a lab of its own, tests/lab_namespace.py), stop it at the end."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests import lab_namespace
from tests.conftest import LAB
from tests.conftest import run_playbook as run_in_repo
from tests.integration.lab import (
    PlaybookRun,
    build_release,
    fill_controller_caches,
    lab_ran_here,
    run_playbook,
    stop_lab,
    supervisord_pids,
)
from tests.integration.sshlab import SshLab, skip_unless_possible


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


def enter_private_lab(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Under pytest-xdist, as root: the worker's own namespaces (its ports, its .lab/), once, with what
    site.yml would build on the controller from the package index built first, outside them."""
    if "PYTEST_XDIST_WORKER" in os.environ and lab_namespace.wanted():
        lab_namespace.enter(LAB, tmp_path_factory.mktemp("lab"))
        fill_controller_caches()


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> PlaybookRun:
    """A fresh lab: whatever ran before is stopped and its data removed, then site.yml (blue live).

    Under pytest-xdist, as root, the worker first enters namespaces of its own (its own ports, its own
    .lab/ under its temp dir: tmp_path_factory's `lab0`), and what site.yml would build on the controller
    from the package index (the initial release, supervisor's environment) is built first, outside them.
    BLUEGREEN_TEST_REUSE_LAB=1 keeps a running lab (and leaves it running) to iterate faster.
    """
    reuse = os.environ.get("BLUEGREEN_TEST_REUSE_LAB") == "1"
    enter_private_lab(tmp_path_factory)
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


@pytest.fixture(scope="module")
def ssh_lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshLab]:
    """The SSH lab (bluegreen/sshlab.py) of the shape the module asks for (`SSH_LAB = (lbs, nodes)`),
    brought up in the worker's namespaces (its bridge and 10.87.0.x exist only there), down at the end.
    Skipped, with the reason, where the machine cannot make namespaces. The module runs its playbooks."""
    skip_unless_possible()
    enter_private_lab(tmp_path_factory)
    if not lab_namespace.entered():
        fill_controller_caches()
    lbs, nodes = getattr(request.module, "SSH_LAB", (2, 2))
    lab = SshLab(lbs, nodes)
    lab.down()  # what a killed session left
    lab.up()
    try:
        yield lab
    finally:
        with lab_namespace.lab_network():
            lab.down()


@pytest.fixture(scope="module")
def ssh_site(ssh_lab: SshLab) -> SshLab:
    """The SSH lab after site.yml (blue live, both colors on the first release), release 1.1.0 built."""
    build_release("1.1.0")
    run = run_in_repo("playbooks/site.yml", "-i", str(ssh_lab.inventory))
    assert run.returncode == 0, run.tail(4000)
    return ssh_lab
