"""Shared test plumbing: where the repository, the venv and the lab live, and the one way tests run
ansible-playbook (from the repo, no colour, with an events file: `start_playbook` / `run_playbook`)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from xdist.scheduler import LoadScopeScheduling

import bluegreen  # noqa: F401  (our module_utils import as ansible.module_utils.<name>, as for our modules)
from bluegreen.progress import EventFollower, PlaybookResult
from tests import lab_namespace

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
LAB = REPO / ".lab"
POLL_SECONDS = 0.05
LAB_TESTS = "tests/integration/"


# The order in which the scheduler hands out the lab's test modules (with private labs, to whichever
# worker is free): the longest first, so that it does not end last; test_validation.py last, because its
# deploys fail on purpose and leave the idle color running a broken release (never ready, losing writes)
# that the modules after it on its worker would start from (test_shadow mirrors to the idle color,
# test_lab expects site.yml to change nothing). A module not named here comes before test_validation.py.
LAB_MODULES_FIRST = (
    "test_deploy.py",
    "test_ssh_deploy.py",
    "test_lab.py",
    "test_provision.py",
    "test_shadow.py",
    "test_webui_browser.py",
)
LAB_MODULES_LAST = ("test_validation.py",)
# Lab test modules whose tests share no lab (each brings one up and down itself): with private labs each of
# their tests is a scope of its own, so that the workers share them out.
LAB_MODULES_APART = ("test_molecule.py",)


def _lab_rank(scope: str) -> int:
    name = scope.rsplit("/", 1)[-1]
    if name in LAB_MODULES_FIRST:
        return LAB_MODULES_FIRST.index(name)
    if name in LAB_MODULES_LAST:
        return len(LAB_MODULES_FIRST) + 1 + LAB_MODULES_LAST.index(name)
    return len(LAB_MODULES_FIRST)


class LabScheduling(LoadScopeScheduling):
    """The lab's tests go first (in `_lab_rank`'s order), to whichever worker is free, grouped so that a
    module's fixtures are built once: with private labs (tests/lab_namespace.py) one scope per module of
    tests/integration/ (per test for LAB_MODULES_APART), else one scope for all of them (one worker: the
    checkout's one lab). Every other test is a scope of its own, run by whichever worker is free, after
    the lab's."""

    def __init__(self, config: pytest.Config, log: object, private_labs: bool) -> None:
        super().__init__(config, log)
        self.private_labs = private_labs

    def _split_scope(self, nodeid: str) -> str:
        if not nodeid.startswith(LAB_TESTS):
            return nodeid
        if not self.private_labs:
            return "lab"
        module = nodeid.split("::", 1)[0]
        return nodeid if module.rsplit("/", 1)[-1] in LAB_MODULES_APART else module

    def _assign_work_unit(self, node: object) -> None:
        lab = [scope for scope in self.workqueue if scope == "lab" or scope.startswith(LAB_TESTS)]
        if lab:
            self.workqueue.move_to_end(min(lab, key=_lab_rank), last=False)
        super()._assign_work_unit(node)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> LabScheduling:
    """Under pytest-xdist (`make test`: -n auto), as root, every worker may run lab tests, each with a lab
    of its own (tests/lab_namespace.py); otherwise every test of tests/integration/ runs in ONE worker,
    one after another in one session (the checkout's one lab: fixed ports, one .lab/). Every other test
    picks free ports and runs on whichever worker is free. (xdist's loadgroup marks would group tests
    too, but they do not group under pytest 9: xdist sets item._nodeid.)"""
    return LabScheduling(config, log, private_labs=lab_namespace.wanted())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> object:
    """Once the worker has entered its lab (tests/lab_namespace.py), lab tests run in the lab's network
    namespace, every other test in the machine's."""
    network = lab_namespace.lab_network if item.nodeid.startswith(LAB_TESTS) else lab_namespace.host_network
    with network():
        return (yield)


def pytest_report_header(config: pytest.Config) -> str | None:
    if not getattr(config.option, "numprocesses", None) or hasattr(config, "workerinput"):
        return None
    if lab_namespace.wanted():
        return "lab tests: every worker, each its own lab (private network and mount namespaces)"
    return (
        "lab tests: all on ONE worker, one after another (private labs need root and namespaces, and no "
        "BLUEGREEN_TEST_REUSE_LAB=1 or BLUEGREEN_TEST_ONE_LAB=1: tests/lab_namespace.py)"
    )


@dataclass
class PlaybookRun(PlaybookResult):
    """A finished ansible-playbook: what the tests judge comes from its events (plugins/callback/
    bluegreen_events.py); `output` is Ansible's own output, for a person reading a failed test, never
    parsed."""

    output: str = ""

    @property
    def stats(self) -> dict[str, dict[str, int]]:
        """Per host: ok, changed, failures, unreachable, skipped, rescued, ignored (playbook_end)."""
        ends = self.of_type("playbook_end")
        return ends[-1]["hosts"] if ends else {}

    @property
    def message(self) -> str:
        """The run's closing message (its run_end event), "" when no run ended."""
        ends = [e for e in self.of_type("run_end") if e.get("message")]
        return str(ends[-1]["message"]) if ends else ""

    @property
    def failure(self) -> dict | None:
        """The run's failure (stage, check, host, observed): the first failure event."""
        failures = self.of_type("failure")
        return failures[0] if failures else None

    @property
    def task_failures(self) -> list[str]:
        """The message of every task failure nobody ignored (task_failed events)."""
        return [str(e.get("message") or "") for e in self.of_type("task_failed")]

    def tail(self, chars: int = 3000) -> str:
        """The end of Ansible's output, for an assertion's message."""
        return self.output[-chars:]


class Playbook:
    """ansible-playbook started from the repository (its ansible.cfg), no colour, its progress events
    written to a file of its own and read as they come (`new_events`)."""

    def __init__(
        self,
        playbook: str | Path,
        *args: str,
        env: dict[str, str] | None = None,
        new_session: bool = False,
    ) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="bluegreen-test-playbook-"))
        self.events_file = self._dir / "events" / "run.jsonl"  # the callback makes the folder
        self._output_file = self._dir / "output.log"
        self._follower = EventFollower(self.events_file)
        self.events: list[dict] = []
        self._started = time.monotonic()
        environment = {
            **os.environ,
            **(env or {}),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "BLUEGREEN_EVENTS_FILE": str(self.events_file),
        }
        with self._output_file.open("wb") as output:
            self.proc = subprocess.Popen(
                [str(VENV_BIN / "ansible-playbook"), str(playbook), *args],
                cwd=REPO,
                env=environment,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=new_session,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def new_events(self) -> list[dict]:
        """The events written since the last call (all of them are also kept in `events`)."""
        new = list(self._follower.new())
        self.events.extend(new)
        return new

    def wait_for_event(self, matches: Callable[[dict], bool], timeout: float = 300) -> dict:
        """The first event (seen from now on) that matches; fails if the playbook ends first."""
        deadline = time.monotonic() + timeout
        while True:
            finished = self.proc.poll() is not None
            for event in self.new_events():
                if matches(event):
                    return event
            if finished:
                raise AssertionError(f"the playbook ended without that event:\n{self.output()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no such event within {timeout} s:\n{self.output()[-3000:]}")
            time.sleep(POLL_SECONDS)

    def wait(self, timeout: float = 600) -> PlaybookRun:
        try:
            returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self.new_events()
        run = PlaybookRun(returncode, time.monotonic() - self._started, self.events, None, self.output())
        shutil.rmtree(self._dir, ignore_errors=True)
        return run

    def kill(self) -> None:
        """SIGKILL the playbook (and, when it has a session of its own, its workers with it)."""
        if self.proc.poll() is None:
            if self.proc.pid == os.getpgid(self.proc.pid):
                os.killpg(self.proc.pid, signal.SIGKILL)
            else:
                self.proc.kill()
        self.proc.wait()
        self.new_events()
        shutil.rmtree(self._dir, ignore_errors=True)

    def output(self) -> str:
        """Ansible's output so far, for people (never parsed)."""
        try:
            return self._output_file.read_text(errors="replace")
        except OSError:
            return ""


def start_playbook(playbook: str | Path, *args: str, **options: object) -> Playbook:
    """ansible-playbook <playbook> <args> in the background (playbook: relative to the repo, or absolute)."""
    return Playbook(playbook, *args, **options)


def run_playbook(
    playbook: str | Path, *args: str, timeout: float = 600, env: dict[str, str] | None = None
) -> PlaybookRun:
    """ansible-playbook <playbook> <args> to its end: returncode, events, and the output for people."""
    return Playbook(playbook, *args, env=env).wait(timeout)
