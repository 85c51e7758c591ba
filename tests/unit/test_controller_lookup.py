"""bluegreen_controller lookup: the pid it names is the ansible-playbook process, not a forked worker."""

from __future__ import annotations

import getpass
import importlib.util
import os
import socket
import subprocess
import sys

from tests.conftest import REPO

PLUGIN = REPO / "plugins" / "lookup" / "bluegreen_controller.py"


def load():
    spec = importlib.util.spec_from_file_location("bluegreen_controller", PLUGIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def in_forked_child(depth: int) -> tuple[int, int]:
    """(child's own pid, playbook_pid() seen from it) in a process forked `depth` times from this one.

    A fork keeps the command line, as Ansible's workers keep ansible-playbook's."""
    playbook_pid = load().playbook_pid
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: fork again if asked, then report through the pipe and leave at once
        try:
            os.close(read_end)
            if depth > 1 and (grandchild := os.fork()):
                os.waitpid(grandchild, 0)
                os._exit(0)
            os.write(write_end, f"{os.getpid()} {playbook_pid()}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        with os.fdopen(read_end) as pipe:
            own, seen = pipe.read().split()
    finally:
        os.waitpid(pid, 0)
    return int(own), int(seen)


def test_lookup_names_this_process_when_not_forked():
    assert load().LookupModule().run([]) == [
        {"pid": os.getpid(), "user": getpass.getuser(), "host": socket.gethostname()}
    ]


def test_forked_worker_names_its_parent():
    own, seen = in_forked_child(depth=1)
    assert own != os.getpid()
    assert seen == os.getpid()


def test_worker_forked_twice_climbs_to_the_top():
    own, seen = in_forked_child(depth=2)
    assert own != os.getpid()
    assert seen == os.getpid()


def test_a_child_running_another_command_is_its_own_controller():
    code = (
        "import importlib.util, os, sys\n"
        f"spec = importlib.util.spec_from_file_location('c', {str(PLUGIN)!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "print(os.getpid(), m.playbook_pid())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    own, seen = map(int, out.split())
    assert seen == own != os.getpid()


def test_bluegreen_actor_is_named_beside_the_os_user():
    found = load().LookupModule().run([], variables={"bluegreen_actor": "alice"})
    assert found == [
        {"pid": os.getpid(), "user": getpass.getuser(), "host": socket.gethostname(), "actor": "alice"}
    ]
    # unset or empty (the role default): the identity is exactly what a CLI run records
    for variables in ({}, {"bluegreen_actor": ""}, None):
        assert "actor" not in load().LookupModule().run([], variables=variables)[0]


def test_bluegreen_actor_that_is_not_a_user_name_is_refused():
    from ansible.errors import AnsibleError  # noqa: PLC0415

    module = load()
    for bad in ("alice; rm -rf /", "a" * 65, "-x", "al ice", "al\nice", "alice\n", ["alice"]):
        try:
            module.LookupModule().run([], variables={"bluegreen_actor": bad})
        except AnsibleError as exc:
            assert "bluegreen_actor" in str(exc)
            assert "not a user name" in str(exc)
        else:
            raise AssertionError(f"{bad!r} was accepted")
