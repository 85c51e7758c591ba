"""The test plumbing that lets every xdist worker run lab tests: a worker's own namespaces
(tests/lab_namespace.py) and the scheduler that hands out the lab's modules (tests/conftest.py)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests import lab_namespace
from tests.conftest import REPO, LabScheduling

# In a process of its own (the namespaces are for good): enter, then report what the worker would see.
WORKER = r"""
import json, socket, sys
from pathlib import Path
from tests import lab_namespace

repo_lab, private, port = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
lab_namespace.enter(repo_lab, private)
seen = {}
with socket.socket() as server:
    server.bind(("127.0.0.1", port))  # taken in the machine's namespace
    server.listen()
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        seen["own_port"] = True
try:
    socket.create_connection(("127.0.0.1", port), timeout=5).close()
    seen["machine_port_reached"] = True
except OSError:
    seen["machine_port_reached"] = False
with lab_namespace.host_network():
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        seen["host_network_reaches_it"] = conn.recv(10).decode()
(repo_lab / "nodes").mkdir()
(repo_lab / "nodes" / "written").write_text("by the worker")
(repo_lab / "releases" / "9.9.9").mkdir()
seen["lab_view"] = sorted(p.name for p in repo_lab.iterdir())
print(json.dumps(seen))
"""


@pytest.mark.skipif(not lab_namespace.available(), reason="private labs need root and namespaces")
def test_a_worker_lab_has_its_own_ports_and_folder_and_shares_the_controller_caches(tmp_path):
    repo_lab, private = tmp_path / "repo" / ".lab", tmp_path / "private"
    (repo_lab / "releases" / "1.0.0").mkdir(parents=True)
    with socket.socket() as server:  # the machine's namespace: this port is taken
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]

        def answer() -> None:
            conn, _ = server.accept()
            with conn:
                conn.sendall(b"machine")

        answering = threading.Thread(target=answer)
        answering.start()
        worker = subprocess.run(
            [sys.executable, "-c", WORKER, str(repo_lab), str(private), str(port)],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        answering.join(timeout=10)
    assert worker.returncode == 0, worker.stderr
    seen = json.loads(worker.stdout)
    assert seen == {
        "own_port": True,
        "machine_port_reached": False,
        "host_network_reaches_it": "machine",
        "lab_view": ["nodes", "releases", "tools"],
    }
    # the worker's lab went to its own folder; the release store is the checkout's
    assert (private / "nodes" / "written").read_text() == "by the worker"
    assert not (repo_lab / "nodes").exists()
    assert sorted(p.name for p in (repo_lab / "releases").iterdir()) == ["1.0.0", "9.9.9"]
    # and none of its mounts reached this (the machine's) mount namespace
    assert str(tmp_path) not in Path("/proc/self/mountinfo").read_text()


class FakeWorker:
    """What the scheduler needs of an xdist worker: it records the tests sent to it."""

    def __init__(self, name: str) -> None:
        self.gateway = SimpleNamespace(id=name)
        self.shutting_down = False
        self.sent: list[int] = []

    def send_runtest_some(self, indices: list[int]) -> None:
        self.sent.extend(indices)

    def shutdown(self) -> None:
        self.shutting_down = True


COLLECTION = [
    *(f"tests/integration/test_lab.py::test_{i}" for i in range(4)),
    *(f"tests/integration/test_shadow.py::test_{i}" for i in range(1)),
    *(f"tests/integration/test_deploy.py::test_{i}" for i in range(5)),
    *(f"tests/integration/test_validation.py::test_{i}" for i in range(3)),
    *(f"tests/unit/test_x.py::test_{i}" for i in range(8)),
]


def run_schedule(private_labs: bool, collection: list[str] = COLLECTION) -> dict[str, list[str]]:
    """Every test of `collection` through LabScheduling on two workers that take turns finishing a test."""
    config = SimpleNamespace(
        getvalue=lambda name: ["2*popen"] if name == "tx" else None,
        option=SimpleNamespace(loadscopereorder=False),
    )
    scheduler = LabScheduling(config, None, private_labs=private_labs)
    workers = [FakeWorker("gw0"), FakeWorker("gw1")]
    for worker in workers:
        scheduler.add_node(worker)
    for worker in workers:
        scheduler.add_node_collection(worker, collection)
    scheduler.schedule()
    done = {worker.gateway.id: 0 for worker in workers}
    while any(done[w.gateway.id] < len(w.sent) for w in workers):
        for worker in workers:
            if done[worker.gateway.id] < len(worker.sent):
                scheduler.mark_test_complete(worker, worker.sent[done[worker.gateway.id]])
                done[worker.gateway.id] += 1
    assert scheduler.tests_finished
    return {w.gateway.id: [collection[i] for i in w.sent] for w in workers}


def modules(nodeids: list[str]) -> list[str]:
    return list(dict.fromkeys(n.split("::")[0].rsplit("/", 1)[1] for n in nodeids))


def test_with_private_labs_each_lab_module_goes_whole_to_one_worker_in_the_set_order():
    ran = run_schedule(private_labs=True)
    assert sorted(n for nodeids in ran.values() for n in nodeids) == sorted(COLLECTION)  # each test once
    lab_modules = {w: [m for m in modules(n) if m != "test_x.py"] for w, n in ran.items()}
    assert all(lab_modules.values()), lab_modules  # both workers run lab tests
    assert sorted(m for ms in lab_modules.values() for m in ms) == sorted(
        ["test_deploy.py", "test_validation.py", "test_lab.py", "test_shadow.py"]
    )  # a module's tests on one worker only (its module fixtures once)
    assert modules(ran["gw0"])[0] == "test_deploy.py" and modules(ran["gw1"])[0] == "test_lab.py"
    # test_validation.py's failed deploys leave a broken idle color: no lab module after it on its worker
    (last,) = [w for w, ms in lab_modules.items() if "test_validation.py" in ms]
    assert lab_modules[last][-1] == "test_validation.py"
    for nodeids in ran.values():  # the lab's tests before any other
        kinds = [n.startswith("tests/integration/") for n in nodeids]
        assert kinds == sorted(kinds, reverse=True), nodeids


def test_without_private_labs_every_lab_test_runs_on_one_worker_in_file_order():
    ran = run_schedule(private_labs=False)
    lab = {w: [n for n in nodeids if n.startswith("tests/integration/")] for w, nodeids in ran.items()}
    (worker,) = [w for w, nodeids in lab.items() if nodeids]
    assert lab[worker] == [n for n in COLLECTION if n.startswith("tests/integration/")]


def test_with_private_labs_the_tests_of_a_module_apart_are_shared_out():
    """test_molecule.py's scenarios each bring their own lab up and down: no module fixture to share, so
    the workers share them out instead of one worker running them all, one after another."""
    scenarios = [
        f"tests/integration/test_molecule.py::test_scenario[{role}]" for role in ("a", "b", "c", "d")
    ]
    collection = [*scenarios, "tests/integration/test_deploy.py::test_0", "tests/unit/test_x.py::test_0"]
    ran = run_schedule(private_labs=True, collection=collection)
    assert sorted(n for nodeids in ran.values() for n in nodeids) == sorted(collection)  # each test once
    on = {w: [n for n in nodeids if n in scenarios] for w, nodeids in ran.items()}
    assert all(on.values()), on
