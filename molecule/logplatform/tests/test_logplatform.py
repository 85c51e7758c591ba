"""roles/logplatform on a node of each color, as the load balancers and a deploy rely on it: the release
asked for runs under supervisord as the service's user, answers on the address the lbs reach it at
(from the machine, over the lab's network), reports its color, release and node, writes an accepted batch
to its sink durably, and keeps the files it writes its user's."""

from __future__ import annotations

import json
import urllib.request
import uuid
from typing import Any

ROLE = "logplatform"


def node_url(role_vars: Any) -> str:
    """Where HAProxy's backends reach the node (roles/haproxy's template reads the same variables)."""
    return f"http://{role_vars('logplatform_advertise_host')}:{role_vars('logplatform_listen_port')}"


def get(url: str) -> tuple[int, dict]:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return answer.status, json.load(answer)


def service_user(host: Any, role_vars: Any) -> str:
    """The user the role runs the node as: logplatform_user, or (none) supervisord's, which starts it."""
    root = role_vars("supervisor_root")
    supervisord = host.process.get(pid=int(host.file(f"{root}/supervisord.pid").content_string))
    return role_vars("logplatform_user") or supervisord.user


def test_the_release_runs_under_supervisord_as_the_service_user(host: Any, role_vars: Any) -> None:
    root = role_vars("supervisor_root")
    status = host.check_output(f"{root}/venv/bin/supervisorctl -c {root}/supervisord.conf status logplatform")
    assert "RUNNING" in status, status
    pid = int(status.split("pid ", 1)[1].split(",", 1)[0])
    node = host.process.get(pid=pid)
    assert node.user == service_user(host, role_vars)
    # the release asked for, through `current`, with the rendered configuration
    root, release = role_vars("logplatform_root"), role_vars("logplatform_release_dir")
    assert host.file(f"{root}/current").linked_to == release
    assert node.args.split()[0].startswith(f"{release}/venv/bin/")
    assert node.args.endswith(
        f"{root}/current/venv/bin/logplatform --config {role_vars('logplatform_config_path')}"
    )


def test_it_answers_where_the_load_balancers_reach_it(host: Any, role_vars: Any) -> None:
    assert host.socket(
        f"tcp://{role_vars('logplatform_listen_host')}:{role_vars('logplatform_listen_port')}"
    ).is_listening
    assert get(f"{node_url(role_vars)}/health/ready") == (200, {"status": "ready"})
    status, version = get(f"{node_url(role_vars)}/version")
    assert status == 200
    expected = ("logplatform_version", "logplatform_color", "logplatform_node_name")
    assert (version["version"], version["color"], version["node"]) == tuple(map(role_vars, expected))


def test_an_accepted_batch_is_in_the_sink_owned_by_the_service_user(host: Any, role_vars: Any) -> None:
    marker = f"molecule-{uuid.uuid4()}"
    batch = [
        {"ts": "2026-12-01T10:00:00Z", "level": "info", "service": "molecule", "message": "hi", "id": marker}
    ]
    request = urllib.request.Request(
        f"{node_url(role_vars)}/v1/logs",
        data=json.dumps(batch).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert (answer.status, json.load(answer)) == (200, {"accepted": 1})
    sink = role_vars("logplatform_sink_dir")
    found = host.run("grep -l -F %s -r %s", marker, sink)
    assert found.rc == 0, found.stderr
    (path,) = found.stdout.split()
    assert path.startswith(f"{sink}/{role_vars('logplatform_node_name')}-")
    line = json.loads(host.check_output("grep -F %s %s", marker, path))
    assert (line["_color"], line["_node"]) == (
        role_vars("logplatform_color"),
        role_vars("logplatform_node_name"),
    )
    assert host.file(path).user == service_user(host, role_vars)


def test_its_directories_and_config_have_the_role_s_owners_and_modes(host: Any, role_vars: Any) -> None:
    user = service_user(host, role_vars)
    for folder in role_vars("logplatform_dirs"):
        if not folder["path"]:
            continue  # logplatform_shadow_sink_dir "": no shadow sink
        entry = host.file(folder["path"])
        assert entry.is_directory, folder["path"]
        assert entry.mode == int(folder["mode"], 8), folder["path"]
        assert entry.user == (folder.get("owner") or host.user().name), folder["path"]
    written = [
        role_vars("logplatform_sink_dir"),
        role_vars("logplatform_shadow_sink_dir"),
        f"{role_vars('logplatform_root')}/log",
    ]
    for path in filter(None, written):
        assert host.file(path).user == user, f"{path}: the node writes there"
    # the node reads its configuration through its group
    config = host.file(role_vars("logplatform_config_path"))
    assert config.mode == 0o640
    assert config.group == (role_vars("logplatform_group") or host.user().group)
