"""roles/haproxy on a load balancer, as the clients, the nodes and a deploy rely on it: HAProxy's master
under supervisord with its workers under the role's user; the live frontend sends traffic to the live
color (from the machine, over the lab's network), the preview frontend to the other one; both colors'
nodes are UP in their backends; the runtime API answers on its socket, which only its owner may use."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

ROLE = "haproxy"
testinfra_hosts = ["lb"]

# HTTP from the lb itself (the preview and stats frontends listen on its loopback): status and headers
HTTP_GET = """
import json, sys, urllib.error, urllib.request
try:
    answer = urllib.request.urlopen(sys.argv[1], timeout=10)
except urllib.error.HTTPError as error:
    answer = error
print(json.dumps({"status": answer.status, "headers": {k.lower(): v for k, v in answer.headers.items()}}))
"""
# one runtime API command on the socket (as root: the socket is 0600)
RUNTIME = """
import socket, sys
with socket.socket(socket.AF_UNIX) as sock:
    sock.settimeout(10)
    sock.connect(sys.argv[1])
    sock.sendall(sys.argv[2].encode() + b"\\n")
    while chunk := sock.recv(65536):
        sys.stdout.write(chunk.decode())
"""
UP_WITHIN_SECONDS = 60


def http_on_lb(host: Any, url: str) -> dict:
    return json.loads(host.check_output("python3 -c %s %s", HTTP_GET, url))


def runtime(host: Any, role_vars: Any, command: str) -> str:
    return host.check_output("python3 -c %s %s %s", RUNTIME, role_vars("haproxy_runtime_socket"), command)


def servers(host: Any, role_vars: Any) -> dict[tuple[str, str], dict[str, str]]:
    """(backend, server) -> its `show stat` row, for every server."""
    lines = runtime(host, role_vars, "show stat").splitlines()
    header = lines[0].lstrip("# ").split(",")
    rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
    return {
        (row["pxname"], row["svname"]): row for row in rows if row["svname"] not in ("FRONTEND", "BACKEND")
    }


def test_the_master_runs_under_supervisord_and_the_workers_as_the_role_s_user(
    host: Any, role_vars: Any
) -> None:
    root = role_vars("supervisor_root")
    status = host.check_output(f"{root}/venv/bin/supervisorctl -c {root}/supervisord.conf status haproxy")
    assert "RUNNING" in status, status
    master = host.process.get(pid=int(host.file(role_vars("haproxy_pid_file")).content_string))
    supervisord = host.process.get(pid=int(host.file(f"{root}/supervisord.pid").content_string))
    assert master.ppid == supervisord.pid
    assert master.args.startswith(role_vars("haproxy_binary"))
    # the master binds, reloads and owns the runtime socket as supervisord's user; workers drop privileges
    assert master.user == supervisord.user
    workers = host.process.filter(ppid=master.pid)
    assert workers, "HAProxy's master has no worker"
    assert {worker.user for worker in workers} == {role_vars("haproxy_user") or master.user}


def test_the_runtime_api_answers_on_a_socket_only_its_owner_may_use(host: Any, role_vars: Any) -> None:
    sock = host.file(role_vars("haproxy_runtime_socket"))
    master = host.process.get(pid=int(host.file(role_vars("haproxy_pid_file")).content_string))
    assert sock.is_socket
    assert (sock.user, sock.mode) == (master.user, 0o600)
    live_map = runtime(host, role_vars, f"show map {role_vars('haproxy_live_map')}")
    assert live_map.split()[1:] == ["live", role_vars("haproxy_initial_live_color")], live_map
    config = host.file(role_vars("haproxy_config_path"))
    assert config.mode == 0o640
    assert host.run("%s -c -f %s", role_vars("haproxy_binary"), config.path).rc == 0


def every_node_up(host: Any, role_vars: Any) -> dict[tuple[str, str], dict[str, str]]:
    """The backends' servers once every node of both colors is in its color's backend and UP (health
    checks need rise x interval after a start), failing after UP_WITHIN_SECONDS."""
    expected = {
        (f"bg_{color}", node)
        for color, group in role_vars("haproxy_color_groups").items()
        for node in role_vars(f"groups['{group}']")
    }
    deadline = time.monotonic() + UP_WITHIN_SECONDS
    while True:
        found = servers(host, role_vars)
        if set(found) == expected and all(row["status"] == "UP" for row in found.values()):
            return found
        assert time.monotonic() < deadline, f"not every node UP within {UP_WITHIN_SECONDS} s: {found}"
        time.sleep(1)


def test_every_node_of_both_colors_is_up_in_its_backend(host: Any, role_vars: Any) -> None:
    for (_, node), row in every_node_up(host, role_vars).items():
        port = role_vars(f"hostvars['{node}'].logplatform_listen_port")
        assert row["addr"] == f"{role_vars(f'hostvars[{node!r}].logplatform_advertise_host')}:{port}"


def test_live_traffic_goes_to_the_live_color_and_preview_to_the_other(host: Any, role_vars: Any) -> None:
    every_node_up(host, role_vars)
    live_color = role_vars("haproxy_initial_live_color")
    idle_color = {"blue": "green", "green": "blue"}[live_color]
    live = f"http://{role_vars('haproxy_local_address')}:{role_vars('haproxy_live_port')}/health/ready"
    preview = f"http://{role_vars('haproxy_preview_local_address')}:{role_vars('haproxy_preview_port')}"
    answer = http_on_lb(host, live)
    assert (answer["status"], answer["headers"]["x-bluegreen-color"]) == (200, live_color)
    answer = http_on_lb(host, f"{preview}/health/ready")
    assert (answer["status"], answer["headers"]["x-bluegreen-color"]) == (200, idle_color)
    if role_vars("haproxy_bind_address") == "0.0.0.0":
        # the front door on every address of the lb: from the machine, as log shippers reach it
        url = f"http://{role_vars('ansible_host')}:{role_vars('haproxy_live_port')}/health/ready"
        with urllib.request.urlopen(url, timeout=10) as reply:
            assert (reply.status, reply.headers["X-Bluegreen-Color"]) == (200, live_color)


def test_the_stats_page_answers(host: Any, role_vars: Any) -> None:
    stats = f"http://{role_vars('haproxy_stats_address')}:{role_vars('haproxy_stats_port')}"
    assert http_on_lb(host, f"{stats}/stats;csv")["status"] == 200
    assert http_on_lb(host, f"{stats}/metrics")["status"] == 200
