"""bluegreen_release: a node unpacks a prebuilt release once, on a matching interpreter, atomically."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from bluegreen.release import base_python
from tests.ansible_modules import run_module


def make_artifact(tmp_path: Path, version: str = "1.2.0") -> tuple[Path, dict]:
    """A small relocatable-venv artifact: the real interpreter link, pyvenv.cfg and a script using it."""
    python = base_python()
    venv = tmp_path / "build" / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(python["executable"])
    (venv / "pyvenv.cfg").write_text(f"home = {Path(python['executable']).parent}\nrelocatable = true\n")
    script = venv / "bin" / "hello"
    script.write_text('#!/bin/sh\nexec "$(dirname -- "$(realpath -- "$0")")"/python -c "print(\'hello\')"\n')
    script.chmod(0o755)
    artifact = tmp_path / "release.tar.gz"
    with tarfile.open(artifact, "w:gz") as tar:
        tar.add(venv, arcname="venv")
    manifest = {
        "format": 2,
        "name": "logplatform",
        "version": version,
        "python": python,
        "artifact": "release.tar.gz",
        "artifact_sha256": hashlib.sha256(artifact.read_bytes()).hexdigest(),
    }
    return artifact, manifest


@pytest.fixture
def node(tmp_path):
    artifact, manifest = make_artifact(tmp_path)
    root = tmp_path / "node"
    (root / "store").mkdir(parents=True)

    def install(check_mode: bool = False, **overrides):
        copied = root / "store" / "1.2.0.tar.gz"
        if not copied.exists():
            copied.write_bytes(artifact.read_bytes())
        args = {
            "dest": str(root / "releases" / "1.2.0"),
            "archive": str(copied),
            "manifest": manifest,
            "link": str(root / "current"),
            "node": "blue-1",
            **overrides,
        }
        return run_module("bluegreen_release", args, check_mode=check_mode)

    return root, manifest, install


def test_unpacks_points_current_and_runs(node):
    root, manifest, install = node
    failed, result = install()
    assert not failed, result
    assert result["changed"] and result["installed"] and result["linked"]
    assert (root / "current").readlink() == root / "releases" / "1.2.0"
    out = subprocess.run(
        [root / "current" / "venv" / "bin" / "hello"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "hello"
    assert (root / "releases" / "1.2.0" / f".artifact-{manifest['artifact_sha256']}").exists()
    assert not (root / "store" / "1.2.0.tar.gz").exists()  # the release dir holds it all now


def test_an_installed_release_is_not_unpacked_again(node):
    root, _, install = node
    install()
    inode = (root / "releases" / "1.2.0").stat().st_ino
    failed, result = install(archive=None)  # nothing copied: the role's stat found the marker
    assert not failed, result
    assert (result["changed"], result["installed"], result["linked"]) == (False, False, False)
    assert (root / "releases" / "1.2.0").stat().st_ino == inode


def test_an_interpreter_of_another_abi_is_refused_naming_both(node):
    root, manifest, install = node
    built_for = {**manifest["python"], "cache_tag": "cpython-399", "soabi": "cpython-399-x86_64-linux-gnu"}
    failed, result = install(manifest={**manifest, "python": built_for})
    assert failed
    assert "node blue-1: release 1.2.0 was built for cpython" in result["msg"]
    assert "cpython-399" in result["msg"] and sys.implementation.cache_tag in result["msg"]
    assert "cache_tag, soabi differ" in result["msg"]
    assert not (root / "releases" / "1.2.0").exists()
    assert not (root / "current").exists()


def test_a_missing_interpreter_is_refused(node):
    root, _, install = node
    failed, result = install(python="/nonexistent/python3.11")
    assert failed
    assert "no interpreter '/nonexistent/python3.11' for release 1.2.0" in result["msg"]
    assert not (root / "releases" / "1.2.0").exists()


def test_the_interpreter_may_live_at_another_path_on_the_node(node, tmp_path):
    root, manifest, install = node
    elsewhere = tmp_path / "opt-python" / "bin"
    elsewhere.mkdir(parents=True)
    (elsewhere / "python3").symlink_to(manifest["python"]["executable"])
    # the real interpreter behind the link is what the venv is pointed at, and pyvenv.cfg says so
    failed, result = install(python=str(elsewhere / "python3"))
    assert not failed, result
    venv = root / "releases" / "1.2.0" / "venv"
    assert str((venv / "bin" / "python").readlink()) == result["python"]["executable"]
    assert f"home = {Path(result['python']['executable']).parent}" in (venv / "pyvenv.cfg").read_text()


def test_leftovers_of_a_killed_install_are_replaced(node):
    root, manifest, install = node
    releases = root / "releases"
    (releases / "1.2.0" / "venv").mkdir(parents=True)  # a partial unpack, no marker
    (releases / ".1.2.0.tmp-99999").mkdir()
    failed, result = install()
    assert not failed, result
    assert result["installed"]
    assert sorted(p.name for p in releases.iterdir()) == ["1.2.0"]
    assert (releases / "1.2.0" / f".artifact-{manifest['artifact_sha256']}").exists()


def test_not_installed_and_no_artifact_is_a_clear_error(node):
    _, _, install = node
    failed, result = install(archive="/nonexistent/1.2.0.tar.gz")
    assert failed
    assert "release 1.2.0 is not installed in" in result["msg"]
    assert "no artifact to unpack" in result["msg"]


def test_an_older_manifest_is_refused_with_the_rebuild_command(node):
    _, _, install = node
    failed, result = install(manifest={"version": "1.2.0", "bundle_sha256": "x"})
    assert failed
    assert "bluegreen release 1.2.0 --force" in result["msg"]


def test_check_mode_changes_nothing_and_shows_where_current_would_point(node):
    root, _, install = node
    (root / "releases" / "1.1.0").mkdir(parents=True)
    (root / "current").symlink_to(root / "releases" / "1.1.0")
    # in check mode the role copies nothing: there is no artifact on the node
    failed, result = install(
        check_mode=True, archive=str(root / "store" / "absent.tar.gz"), _ansible_diff=True
    )
    assert not failed, result
    assert result["changed"] and result["installed"] and result["linked"]
    assert result["diff"]["after"] == f"{root / 'current'} -> {root / 'releases' / '1.2.0'}\n"
    assert not (root / "releases" / "1.2.0").exists()
    assert (root / "current").readlink() == root / "releases" / "1.1.0"


def test_query_makes_the_dirs_and_says_whether_the_release_is_installed(node):
    root, _, install = node
    owned = root / "sink"
    dirs = [
        {"path": str(root / "etc"), "mode": "0755"},
        {"path": str(owned), "mode": "0750", "owner": str(os.getuid()), "group": str(os.getgid())},
        {"path": "", "mode": "0750"},  # an optional directory that is turned off
    ]
    failed, result = install(state="query", dirs=dirs)
    assert not failed, result
    assert (result["changed"], result["present"], result["installed"]) == (True, False, False)
    assert stat.S_IMODE((root / "etc").stat().st_mode) == 0o755
    assert stat.S_IMODE(owned.stat().st_mode) == 0o750
    assert not (root / "releases" / "1.2.0").exists() and not (root / "current").exists()
    owned.chmod(0o777)
    failed, result = install(state="query", dirs=dirs)
    assert (failed, result["changed"]) == (False, True)  # the mode is kept, not just set once
    assert stat.S_IMODE(owned.stat().st_mode) == 0o750

    install()
    failed, result = install(state="query", dirs=dirs, archive=None)
    assert not failed, result
    assert (result["changed"], result["present"]) == (False, True)


def test_a_dir_that_is_a_file_is_refused_naming_it(node):
    root, _, install = node
    (root / "etc").write_text("not a directory")
    failed, result = install(state="query", dirs=[{"path": str(root / "etc")}])
    assert failed and f"{root / 'etc'} exists and is not a directory" in result["msg"]


def test_link_to_venv_points_the_link_at_the_virtualenv_and_query_says_whether_it_does(node):
    """supervisor's layout: <root>/venv is a link to the unpacked environment's virtualenv, so its programs
    keep one path across versions; a query says whether the link is right, so a re-run skips the install."""
    root, _, install = node
    link = root / "venv"
    failed, result = install(state="query", link=str(link), link_to="venv", archive=None)
    assert not failed, result
    assert (result["present"], result["link_ok"]) == (False, False)
    failed, result = install(link=str(link), link_to="venv")
    assert not failed, result
    assert result["installed"] and result["linked"]
    assert link.readlink() == root / "releases" / "1.2.0" / "venv"
    out = subprocess.run([link / "bin" / "hello"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "hello"
    failed, result = install(state="query", link=str(link), link_to="venv", archive=None)
    assert not failed, result
    assert (result["changed"], result["present"], result["link_ok"]) == (False, True, True)


def test_a_tool_environment_is_named_with_its_interpreter_variable(node):
    _, manifest, install = node
    tool = {**manifest, "name": "supervisor", "version": "4.3.0"}
    failed, result = install(manifest=tool, python="/nonexistent/python3.11")
    assert failed
    assert "no interpreter '/nonexistent/python3.11' for supervisor 4.3.0" in result["msg"]
    assert "set supervisor_python" in result["msg"]


def test_a_directory_where_the_link_goes_is_refused_naming_it(node):
    root, _, install = node
    (root / "venv" / "bin").mkdir(parents=True)  # a virtualenv of an older layout
    failed, result = install(link=str(root / "venv"), link_to="venv")
    assert failed
    assert f"{root / 'venv'} exists and is not a symlink" in result["msg"]
    assert (root / "venv" / "bin").is_dir()


@pytest.mark.skipif(os.geteuid() != 0, reason="a directory only root may enter needs root to test")
def test_an_interpreter_the_service_user_cannot_reach_is_refused_naming_what_blocks_it(node, tmp_path):
    """The node runs the release as its service user (run_as): an interpreter behind a directory that user
    may not enter (the builder's pyenv under /root, 0700) would only show as a node that exits at start."""
    root, manifest, install = node
    # the interpreter itself (not a link to it: the venv runs what a link resolves to) in a 0700 directory
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    interpreter = private / "python3"
    try:
        os.link(manifest["python"]["executable"], interpreter)
    except OSError:  # another filesystem
        shutil.copy2(manifest["python"]["executable"], interpreter)
    failed, result = install(python=str(interpreter), run_as="nobody")
    assert failed
    assert "node blue-1: the service user nobody cannot run the interpreter" in result["msg"], result["msg"]
    assert f"{private} is 0700, owned by root:root" in result["msg"], result["msg"]
    assert "logplatform_python" in result["msg"]
    assert not (root / "releases" / "1.2.0").exists()
    # the user the role runs nothing as (none: the process manager's user) is not checked
    failed, result = install(python=str(private / "python3"))
    assert not failed, result


def test_an_unknown_service_user_is_refused(node):
    _, _, install = node
    failed, result = install(run_as="no-such-user-here")
    assert failed
    assert "node blue-1: the service user no-such-user-here does not exist" in result["msg"], result["msg"]
