"""roles/supervisor on a lab host, as the other roles rely on it: one supervisord from the role's instance
directory, running after converge's SSH sessions ended, as the user the role ran as, answering
supervisorctl on its socket, its files that user's alone, the supervisor release the role installs."""

from __future__ import annotations

from typing import Any

ROLE = "supervisor"


def test_supervisord_runs_from_its_instance_and_answers_supervisorctl(host: Any, role_vars: Any) -> None:
    root = role_vars("supervisor_root")
    ctl = f"{root}/venv/bin/supervisorctl -c {root}/supervisord.conf"
    pid = int(host.file(f"{root}/supervisord.pid").content_string)
    supervisord = host.process.get(pid=pid)
    assert f"{root}/supervisord.conf" in supervisord.args
    # the user the role's tasks ran as (become, as the inventory says; testinfra becomes the same way)
    assert supervisord.user == host.user().name
    assert host.check_output(f"{ctl} pid") == str(pid)
    # the version the role installs, from the environment venv links to
    assert host.check_output(f"{root}/venv/bin/supervisord --version") == role_vars("supervisor_version")
    assert host.file(f"{root}/venv").linked_to == f"{root}/releases/{role_vars('supervisor_version')}/venv"


def test_its_files_are_the_owners_alone(host: Any, role_vars: Any) -> None:
    root = role_vars("supervisor_root")
    owner = host.user().name
    for folder in role_vars("supervisor_dirs"):
        entry = host.file(folder["path"])
        assert entry.is_directory, folder["path"]
        assert (entry.user, entry.mode) == (owner, int(folder["mode"], 8)), folder["path"]
    config = host.file(f"{root}/supervisord.conf")
    assert (config.user, config.mode) == (owner, 0o640)
    sock = host.file(f"{root}/supervisor.sock")
    assert sock.is_socket
    assert (sock.user, sock.mode) == (owner, 0o700)
