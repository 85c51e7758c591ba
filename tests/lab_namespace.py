"""A lab of its own for each pytest-xdist worker, so that the lab's tests can run on every worker at once.

The lab uses fixed ports (8080, 8081, 8404, 9101-9202) and the checkout's `.lab/`. A worker that runs lab
tests enters, once, before its lab starts:

- a network namespace of its own (`unshare(CLONE_NEWNET)`, loopback up): the ports are the worker's;
- a mount namespace of its own (`unshare(CLONE_NEWNS)`, every mount private) where `<repo>/.lab` is a
  folder of the worker's own (under its pytest temp dir), bind-mounted over it; the controller's caches
  in it, the release store (`releases/`) and the tools' environments (`tools/`: supervisor's), are the
  checkout's, shared by every worker (built under a lock: `controller_caches_lock`).

The worker runs its lab tests in its own network namespace (`lab_network`, tests/conftest.py) and every
other test, and whatever needs the network (building a release or supervisor's environment: pip), in the
machine's (`host_network`); the mount namespace is for good. What a lab test starts (ansible-playbook,
HAProxy, nodes, loadgen, the dashboard, chromium) inherits both, so the tests and the product see the same
paths and ports as on a lab of their own.

Needs root (CAP_SYS_ADMIN), as CI has (`make test` installs Debian packages). Otherwise, or with
BLUEGREEN_TEST_REUSE_LAB=1 (a running lab in the checkout's `.lab/`) or BLUEGREEN_TEST_ONE_LAB=1, every
lab test runs on one worker in the machine's namespaces, one after another (tests/conftest.py
`LabScheduling`).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000

# what the lab's controller fills over the network and every worker's lab shares (inventories/local)
CONTROLLER_CACHES = ("releases", "tools")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]


class _Networks:
    """File descriptors of the machine's network namespace and of the worker's own, once entered."""

    host: int | None = None
    lab: int | None = None


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _bind(source: Path, target: Path, flags: int = 0) -> None:
    result = _libc.mount(str(source).encode(), str(target).encode(), None, MS_BIND | flags, None)
    _check(result, f"bind-mount {source} on {target}")


def wanted() -> bool:
    """Whether this session gives each xdist worker a lab of its own: root, namespaces available (a
    container may refuse them even to root), no BLUEGREEN_TEST_REUSE_LAB (that lab is the checkout's) and
    no BLUEGREEN_TEST_ONE_LAB=1 (the lab's tests on one worker, as without root)."""
    one_lab = "1" in (os.environ.get("BLUEGREEN_TEST_REUSE_LAB"), os.environ.get("BLUEGREEN_TEST_ONE_LAB"))
    return not one_lab and available()


@functools.cache
def available() -> bool:
    """Root, and the kernel lets this process make network and mount namespaces."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run(["unshare", "--net", "--mount", "true"], capture_output=True, check=False)
    return probe.returncode == 0


def entered() -> bool:
    return _Networks.lab is not None


def enter(repo_lab: Path, private: Path) -> None:
    """Move this worker (its main thread, and whatever it starts from now on) into a network namespace
    and a mount namespace of its own, with `private` mounted over `repo_lab` (the shared caches inside).
    Called by the lab fixture, in the worker's first lab test: the rest of that test runs in the lab's
    network; from the next test on, tests/conftest.py chooses the network for each test."""
    if entered():
        return
    for cache in CONTROLLER_CACHES:
        (repo_lab / cache).mkdir(parents=True, exist_ok=True)
        (private / cache).mkdir(parents=True, exist_ok=True)
    _Networks.host = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWNET), "unshare(CLONE_NEWNS | CLONE_NEWNET)")
    # private first: no mount made here may reach the machine's mount namespace
    _check(_libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
    for cache in CONTROLLER_CACHES:
        _bind(repo_lab / cache, private / cache)
    _bind(private, repo_lab, MS_REC)
    _Networks.lab = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)


@contextmanager
def _network(fd: int | None) -> Iterator[None]:
    """This thread (and what it starts meanwhile) in the network namespace `fd`, then back in the one it
    was in; a no-op before the worker entered its lab. setns moves the calling thread only."""
    if not entered():
        yield
        return
    before = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_libc.setns(fd, CLONE_NEWNET), "setns(network namespace)")
        try:
            yield
        finally:
            _check(_libc.setns(before, CLONE_NEWNET), "setns(network namespace)")
    finally:
        os.close(before)


def host_network() -> contextlib.AbstractContextManager[None]:
    """The machine's network namespace: for what needs the network (pip), and for every test that is not
    a lab test (tests/conftest.py: they pick free ports, some build from the package index)."""
    return _network(_Networks.host)


def lab_network() -> contextlib.AbstractContextManager[None]:
    """The worker's lab's network namespace: for lab tests, and for the lab fixture's teardown (it may run
    after the worker's last test, which need not be a lab test)."""
    return _network(_Networks.lab)


@contextmanager
def controller_caches_lock(repo_lab: Path) -> Iterator[None]:
    """One writer at a time in the shared caches: two workers building one release at once would replace
    the release directory under the other (bluegreen release renames its build over it)."""
    store = repo_lab / "releases"
    store.mkdir(parents=True, exist_ok=True)
    with (store / ".tests.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
