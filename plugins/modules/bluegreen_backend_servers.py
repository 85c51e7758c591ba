#!/usr/bin/python
"""Nodes join and leave a color's backend through HAProxy's runtime API, as haproxy.cfg lists them."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: bluegreen_backend_servers
short_description: Make HAProxy's running backends hold the servers haproxy.cfg lists, without a reload
description:
  - Reads the C(server) lines of the I(backends) sections of the rendered I(config) (what the next
    start or reload loads) and makes the running HAProxy hold the same servers through its runtime
    API, so nodes join and leave a color without a reload (a reload under load failed requests).
  - A server the config has and HAProxy has not is added with the keywords of its config line
    (C(add server), HAProxy 2.4 or later; the line must carry every option, a dynamic server does
    not take C(default-server)'s), in drain with its health checks on, and made ready only once its
    check has passed; until then it takes no request of any frontend. A server that does not pass in
    I(timeout) seconds is removed again and the module fails naming it.
  - A server HAProxy has and the config has not is drained (no new requests), waited for until it
    has no current session and no queue, put in maintenance and deleted (C(del server)). HAProxy 2.6
    refuses to delete a server something else still points to (its Lua mirror, once it has read the
    backend's servers). Such a server is left in maintenance, taking no traffic, reported in
    C(kept), and the next reload or restart drops it.
  - With I(previous) (the config before this render, for example the template's backup) it also
    says in C(reload) whether a reload is still needed, which it is when anything but the server lists of
    I(backends) changed, or a kept server's line changed (its address, its options). A change of
    the server lists alone needs none, once this module has applied it.
  - When HAProxy is not running (no socket), it changes nothing at runtime and needs no reload (the
    next start loads the config).
options:
  config:
    description: The rendered haproxy.cfg whose backends' server lines are the servers wanted.
    type: path
    required: true
  previous:
    description: The config HAProxy was running before this render (to judge whether a reload is needed).
    type: path
  backends:
    description: The backends whose servers the module manages (every other section is left alone).
    type: list
    elements: str
    default: [bg_blue, bg_green]
  timeout:
    description:
      - Seconds a new server may take to pass its health check, and a removed one to drain and be
        deleted.
    type: float
    default: 60.0
extends_documentation_fragment:
  - bluegreen_haproxy
author: bluegreen
"""

EXAMPLES = r"""
- name: Join new nodes and remove the nodes gone from the inventory, through the runtime API
  bluegreen_backend_servers:
    socket: /var/lib/bluegreen/haproxy/admin.sock
    config: /var/lib/bluegreen/haproxy/haproxy.cfg
    previous: "{{ rendered.backup_file | default(omit) }}"
  register: servers

- name: Reload only when more than the server lists changed
  ansible.builtin.debug:
    msg: "{{ servers.reload_reason }}"
  when: servers.reload
"""

RETURN = r"""
added:
  description: Servers added (C(backend/name)), each ready and passing its health check.
  returned: always
  type: list
  elements: str
  sample: [bg_green/green-3]
removed:
  description: Servers drained and deleted.
  returned: always
  type: list
  elements: str
kept:
  description: Servers out of the config that HAProxy would not delete, left in maintenance until a reload.
  returned: always
  type: list
  elements: str
reload:
  description: Whether a reload is still needed to apply the config (see I(previous)).
  returned: always
  type: bool
reload_reason:
  description: Why a reload is needed, or why not.
  returned: always
  type: str
running:
  description: Whether HAProxy's runtime API answered (false when its socket is missing).
  returned: always
  type: bool
servers:
  description: Per backend, the servers HAProxy holds after the module ran.
  returned: always
  type: dict
  sample: {bg_green: [green-1, green-2, green-3]}
"""

import contextlib
import ipaddress
import os
import socket
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.bluegreen_files import read_text
from ansible.module_utils.bluegreen_haproxy import HAProxyRuntime, HAProxyRuntimeError

POLL_SECONDS = 0.2
DELETED = "Server deleted."
# HAProxy 2.6's answer when something else (a Lua script, a track) holds the server
PINNED = "other configuration elements pointing to it"


class Refused(Exception):
    """The runtime did not reach the wanted servers; the message names the server and what HAProxy said."""


def parse(text: str, backends: list[str]) -> tuple[dict[str, dict[str, list[str]]], list[str]]:
    """(backend -> server name -> the words after the name, i.e. address and keywords; every other
    line of the config, in order). Comments and blank lines are left out of both."""
    servers: dict[str, dict[str, list[str]]] = {name: {} for name in backends}
    rest: list[str] = []
    section = None
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        words = line.split()
        if not line[0].isspace():
            section = words[1] if words[0] == "backend" and len(words) > 1 else None
        if section in servers and words[0] == "server" and len(words) >= 3:
            servers[section][words[1]] = words[2:]
        else:
            rest.append(" ".join(words))
    return servers, rest


def reload_reason(previous: str, config: str, backends: list[str], kept_names: set[str]) -> str:
    """Why the change from `previous` to `config` needs a reload, or "" when the runtime can apply it."""
    old_servers, old_rest = parse(previous, backends)
    new_servers, new_rest = parse(config, backends)
    if old_rest != new_rest:
        return "haproxy.cfg changed beyond the backends' server lists"
    for backend in backends:
        for name in sorted(set(old_servers[backend]) & set(new_servers[backend])):
            if old_servers[backend][name] != new_servers[backend][name] and name not in kept_names:
                return f"the config line of {backend}/{name} changed"
    return ""


def _resolved(address: str) -> str:
    host, _, port = address.rpartition(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        with contextlib.suppress(OSError):  # unresolvable: compared as written
            host = socket.gethostbyname(host)
    return f"{host}:{port}"


class Backends:
    """The runtime side: HAProxy's servers of the managed backends, and the steps that change them."""

    def __init__(self, runtime: HAProxyRuntime, timeout: float) -> None:
        self.runtime = runtime
        self.timeout = timeout

    def held(self, backends: list[str]) -> dict[str, dict[str, str]]:
        """backend -> server name -> address:port, as HAProxy holds them now."""
        held: dict[str, dict[str, str]] = {name: {} for name in backends}
        for row in self.runtime.servers_state():
            if row.get("be_name") in held:
                held[row["be_name"]][row["srv_name"]] = f"{row['srv_addr']}:{row['srv_port']}"
        return held

    def row(self, backend: str, name: str) -> dict[str, str]:
        for row in self.runtime.show_stat():
            if row.get("pxname") == backend and row.get("svname") == name:
                return row
        raise Refused(f"{backend}/{name} is not in HAProxy's stats")

    def add(self, backend: str, name: str, words: list[str]) -> None:
        """In drain with checks on (no traffic), then ready once its check passes; else removed again."""
        address, options = words[0], words[1:]
        self.runtime.add_server(backend, name, address, options)
        checked = "check" in options
        try:
            if checked:
                self.runtime.enable_health(backend, name)
                self.runtime.set_server_state(backend, name, "drain")
                self._wait_healthy(backend, name, address)
            self.runtime.set_server_state(backend, name, "ready")
        except (Refused, HAProxyRuntimeError):
            self.runtime.set_server_state(backend, name, "maint")
            self.runtime.del_server(backend, name)
            raise

    def _wait_healthy(self, backend: str, name: str, address: str) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            row = self.row(backend, name)
            # "DRAIN" alone: up with full health; "DRAIN 1/2" is on its way, a fresh server is not trusted
            if row["status"] == "DRAIN" and row["check_status"].lstrip("* ").endswith(("OK", "OKC")):
                return
            if time.monotonic() > deadline:
                raise Refused(
                    f"{backend}/{name} ({address}) did not pass its health check within {self.timeout:g} s "
                    f"(status {row['status']}, check {row['check_status'] or '-'}: "
                    f"{row.get('check_desc') or ''}); "
                    "removed again, it never took traffic"
                )
            time.sleep(POLL_SECONDS)

    def remove(self, backend: str, name: str) -> tuple[bool, bool]:
        """Drain, wait for no session and no queue, maintenance, delete: (deleted, changed). Not deleted:
        HAProxy keeps it (pinned), in maintenance; one kept by an earlier run is left as it is."""
        deadline = time.monotonic() + self.timeout
        if self.row(backend, name)["status"] == "MAINT":
            answer = self.runtime.del_server(backend, name)
            if answer == DELETED or PINNED in answer:
                return answer == DELETED, answer == DELETED
        self.runtime.set_server_state(backend, name, "drain")
        while True:
            row = self.row(backend, name)
            if int(row.get("scur") or 0) == 0 and int(row.get("qcur") or 0) == 0:
                break
            if time.monotonic() > deadline:
                raise Refused(
                    f"{backend}/{name} still has {row.get('scur')} sessions and {row.get('qcur')} queued "
                    f"after {self.timeout:g} s of drain; left draining (no new requests)"
                )
            time.sleep(POLL_SECONDS)
        self.runtime.set_server_state(backend, name, "maint")
        while True:
            answer = self.runtime.del_server(backend, name)
            if answer == DELETED:
                return True, True
            if PINNED in answer:
                return False, True
            # idle connections to it are closed shortly after maintenance: ask again
            if time.monotonic() > deadline:
                raise Refused(f"HAProxy did not delete {backend}/{name} (in maintenance): {answer}")
            time.sleep(POLL_SECONDS)


def plan(
    wanted: dict[str, dict[str, list[str]]], held: dict[str, dict[str, str]]
) -> tuple[list[tuple[str, str]], list[tuple[str, str]], list[str]]:
    """(servers to add, servers to remove, servers whose address HAProxy holds differently)."""
    add, remove, moved = [], [], []
    for backend, servers in wanted.items():
        for name, words in servers.items():
            if name not in held[backend]:
                add.append((backend, name))
            elif _resolved(words[0]) != held[backend][name]:
                moved.append(f"{backend}/{name} runs at {held[backend][name]}, the config says {words[0]}")
        remove.extend((backend, name) for name in held[backend] if name not in servers)
    return add, remove, moved


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "socket": {"type": "path", "required": True},
            "config": {"type": "path", "required": True},
            "previous": {"type": "path"},
            "backends": {"type": "list", "elements": "str", "default": ["bg_blue", "bg_green"]},
            "timeout": {"type": "float", "default": 60.0},
        },
        supports_check_mode=True,
    )
    params = module.params
    where = f"lb {socket.gethostname()}"
    backends = params["backends"]
    config = read_text(params["config"])
    if config is None:
        module.fail_json(msg=f"{where}: no haproxy.cfg at {params['config']}")
    previous = read_text(params["previous"]) if params["previous"] else None
    if params["previous"] and previous is None:
        module.fail_json(msg=f"{where}: the previous config {params['previous']} cannot be read")
    wanted, _ = parse(config, backends)
    result = {"changed": False, "added": [], "removed": [], "kept": [], "running": True, "servers": {}}
    if not os.path.exists(params["socket"]):
        reason = "HAProxy is not running: its next start loads the config"
        module.exit_json(**{**result, "running": False, "reload": False, "reload_reason": reason})

    live = Backends(HAProxyRuntime(params["socket"]), params["timeout"])
    try:
        held = live.held(backends)
    except HAProxyRuntimeError as exc:
        module.fail_json(msg=f"{where}: cannot read HAProxy's servers: {exc}", **result)
    add, remove, moved = plan(wanted, held)
    result["changed"] = bool(add or remove)
    result["diff"] = {
        "before": "".join(f"{b}/{n} {a}\n" for b in backends for n, a in sorted(held[b].items())),
        "after": "".join(f"{b}/{n} {w[0]}\n" for b in backends for n, w in sorted(wanted[b].items())),
    }
    if module.check_mode:
        result.update(
            added=[f"{b}/{n}" for b, n in add],
            removed=[f"{b}/{n}" for b, n in remove],
            servers={b: sorted(wanted[b]) for b in backends},
        )
    else:
        try:
            # more capacity first: a node that replaces another takes traffic before that one drains
            for backend, name in add:
                live.add(backend, name, wanted[backend][name])
                result["added"].append(f"{backend}/{name}")
            result["changed"] = bool(add)
            for backend, name in remove:
                deleted, changed = live.remove(backend, name)
                result["removed" if deleted else "kept"].append(f"{backend}/{name}")
                result["changed"] = result["changed"] or changed
            result["servers"] = {b: sorted(servers) for b, servers in live.held(backends).items()}
        except (Refused, HAProxyRuntimeError) as exc:
            module.fail_json(msg=f"{where}: {exc}", **result)
    kept_names = {entry.split("/", 1)[1] for entry in result["kept"]}
    reason = reload_reason(previous, config, backends, kept_names) if previous is not None else ""
    if moved:
        reason = f"a server's address changed: {'; '.join(moved)}"
    result["reload"] = bool(reason)
    result["reload_reason"] = reason or "the running HAProxy holds the servers the config lists"
    for entry in result["kept"]:
        module.warn(
            f"{entry} is out of the config but HAProxy 2.6 will not delete it (its Lua mirror holds it): "
            "left in maintenance, taking no traffic, until the next reload or restart"
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
