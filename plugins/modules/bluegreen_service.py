"""Make a logplatform node run its release and rendered file, in one call: start, compare, restart, wait."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: bluegreen_service
short_description: Make a logplatform node run its release and rendered configuration, and answer
description:
  - Converges on what the node RUNS, not on what a task changed, so that a run that died after the release
    link moved (and lost the restart it had notified) is repaired by the next run.
  - In order, on the node. Starts the service when it is stopped (a rebooted host, a retired node brought
    back). Computes the digest of the rendered file with the release's own C(logplatform --check-config).
    Reads C(/version), waiting up to I(answer_timeout) seconds for a node that started a moment ago.
    Restarts the service when it runs another version or another configuration, or does not answer.
    Waits until C(/health/<wait_for>) answers 200.
  - A restart drains the node first (its C(drain_grace_seconds), so that load balancers take it out).
    With I(drain=false) it stops without the grace (C(SIGQUIT)), for a node that takes no traffic (the idle
    color of a deployment); only when the running release says in C(/version) that it handles that signal
    (C(quick_stop)), else it drains as usual. In-flight requests still finish and the sink is flushed.
  - Under C(supervisor) through supervisord's XML-RPC interface on its unix socket (the C(serverurl)
    that C(supervisorctl) uses, read from C(<supervisor_root>/supervisord.conf)), one call a step, no
    C(supervisorctl) process and no wait for C(startsecs); a program supervisord gives up on (C(FATAL)),
    or that exits while the module waits for its health (under load a crashing node can outlive
    C(startsecs), and supervisord then restarts it forever), fails the module at once, naming the state
    and exit status. Under C(systemd) through C(systemctl) (always drained).
  - In check mode nothing is started or restarted; the result says whether it would be.
options:
  manager:
    description: The process manager that runs the service.
    type: str
    choices: [supervisor, systemd]
    default: supervisor
  supervisor_root:
    description: The supervisor instance directory (its C(supervisord.conf)); for I(manager=supervisor).
    type: path
  name:
    description: The supervisor program or the systemd unit.
    type: str
    default: logplatform
  url:
    description: Base URL of the node, for example C(http://127.0.0.1:9101).
    type: str
    required: true
  config_path:
    description: The rendered configuration file of the node.
    type: path
    required: true
  release_dir:
    description: Directory of the release the node must run; its C(venv/bin/logplatform) computes the
      file's digest.
    type: path
    required: true
  version:
    description: The release version the node must run.
    type: str
    required: true
  node:
    description: Name of the node in messages.
    type: str
    required: true
  drain:
    description: Drain before a restart (false only for a node no load balancer routes to).
    type: bool
    default: true
  answer_timeout:
    description: Seconds to wait for C(/version) of a node that is starting before restarting it.
    type: int
    default: 10
  wait_for:
    description: Which health endpoint must answer 200 at the end.
    type: str
    choices: [live, ready]
    default: ready
  ready_timeout:
    description: Seconds the node may take to answer C(/health/<wait_for>) with 200.
    type: int
    default: 30
author: bluegreen
"""

EXAMPLES = r"""
- name: Run release 1.2.0 on an idle node, restarted without the drain grace when it runs anything else
  bluegreen_service:
    supervisor_root: /opt/bluegreen/supervisor
    url: http://127.0.0.1:9201
    config_path: /opt/logplatform/etc/logplatform.toml
    release_dir: /opt/logplatform/releases/1.2.0
    version: 1.2.0
    node: green-1
    drain: false
    wait_for: live
"""

RETURN = r"""
started:
  description: The service was stopped and has been started.
  returned: always
  type: bool
restarted:
  description: The service ran another version or configuration (or did not answer) and has been restarted.
  returned: always
  type: bool
drained:
  description: Whether the restart drained the node first (false when stopped with the quick-stop signal).
  returned: when restarted
  type: bool
reason:
  description: Why the node was restarted, for example C(runs 1.1.0, not 1.2.0).
  returned: when restarted
  type: str
config_digest:
  description: sha256 of the rendered file's effective configuration.
  returned: always
  type: str
running:
  description: C(/version) of the node at the end (version, color, node, config_digest, started_at...).
  returned: unless check mode
  type: dict
"""

import configparser
import http.client
import os
import socket
import time
import xmlrpc.client
from collections.abc import Callable

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.bluegreen_checks import (
    CheckError,
    check_config_file,
    get_json,
    http_get,
    join_url,
    short,
)


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over supervisord's unix socket (its XML-RPC interface, what supervisorctl talks to)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


class UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__()
        self.socket_path, self.timeout = path, timeout

    def make_connection(self, host: object) -> http.client.HTTPConnection:
        return UnixHTTPConnection(self.socket_path, self.timeout)


def supervisor_socket(root: str) -> str:
    """The unix socket supervisorctl uses: [supervisorctl] serverurl of <root>/supervisord.conf."""
    conf = configparser.ConfigParser(interpolation=None)
    conf.read(os.path.join(root, "supervisord.conf"))
    url = conf.get("supervisorctl", "serverurl", fallback="")
    return url[len("unix://") :] if url.startswith("unix://") else os.path.join(root, "supervisor.sock")


class Supervisor:
    """start / restart / quick restart of one supervisor program, through supervisord's XML-RPC API:
    one call a step instead of one supervisorctl process a step, and no wait for startsecs (the module
    waits for the node's own health endpoint; a program that cannot start is reported from its state)."""

    def __init__(self, module: AnsibleModule) -> None:
        root = module.params["supervisor_root"]
        self.module, self.name = module, module.params["name"]
        self.socket = supervisor_socket(root)
        proxy = xmlrpc.client.ServerProxy("http://localhost", transport=UnixTransport(self.socket, 30.0))
        self.api = proxy.supervisor
        self.pid: int | None = None  # the process trouble() first saw running: another one means a restart

    def call(self, what: str, *args: object) -> object:
        try:
            return getattr(self.api, what)(*args)
        except xmlrpc.client.Fault as exc:
            raise SupervisorFault(exc.faultString) from exc
        except OSError as exc:
            self.module.fail_json(msg=f"supervisord at {self.socket} does not answer ({exc}): is it running?")
        return None

    def state(self) -> dict:
        return self.call("getProcessInfo", self.name)

    def start(self) -> bool:
        """Start when stopped (without waiting for startsecs); True when it was stopped."""
        try:
            self.call("startProcess", self.name, False)
        except SupervisorFault as exc:
            if str(exc).startswith("ALREADY_STARTED"):
                return False
            self.module.fail_json(msg=f"supervisord could not start {self.name}: {exc}")
        return True

    def stop(self) -> None:
        try:
            self.call("stopProcess", self.name, True)
        except SupervisorFault as exc:
            if not str(exc).startswith("NOT_RUNNING"):
                self.module.fail_json(msg=f"supervisord could not stop {self.name}: {exc}")

    def restart(self) -> None:
        self.stop()
        self.start()

    def quick_restart(self, signal_name: str, timeout: float) -> bool:
        """Stop with the quick-stop signal, then start; False when the program is not running."""
        try:
            self.call("signalProcess", self.name, signal_name)
        except SupervisorFault:
            return False  # not running after all: a plain restart says why
        deadline = time.monotonic() + timeout
        while self.state()["statename"] in ("RUNNING", "STOPPING"):
            if time.monotonic() > deadline:
                self.module.fail_json(msg=f"{self.name} did not stop within {timeout:.0f}s of {signal_name}")
            time.sleep(0.02)
        self.start()
        return True

    def trouble(self) -> str | None:
        """Why the program will not come up: supervisord gave up on it (FATAL), or it exited while the
        module waits for its health. The second matters under load: a node that crashes after more than
        startsecs counts as started each time, and supervisord restarts it forever, never FATAL."""
        info = self.state()
        if info["statename"] == "FATAL":
            return f"supervisord gave up on {self.name} (FATAL {info.get('spawnerr') or 'it kept exiting'})"
        state, pid = info["statename"], info.get("pid") or None
        if state == "EXITED":  # supervisord's exit status is only that exit's in this state
            return f"{self.name} exited while starting (EXITED, exit status {info.get('exitstatus')})"
        if state == "BACKOFF":
            why = info.get("description") or "exited too quickly"
            return f"{self.name} exited while starting (BACKOFF: {why})"
        if pid and self.pid and pid != self.pid:
            return f"{self.name} exited while starting (supervisord restarted it: pid {self.pid}, then {pid})"
        self.pid = self.pid or pid
        return None


class SupervisorFault(Exception):
    pass


class Systemd:
    """start / restart of one systemd unit through systemctl (a restart always drains)."""

    def __init__(self, module: AnsibleModule) -> None:
        self.module, self.name = module, module.params["name"]

    def run(self, *args: str) -> tuple[int, str]:
        rc, out, err = self.module.run_command(["systemctl", *args, self.name])
        return rc, (out + err).strip()

    def start(self) -> bool:
        if self.run("is-active")[1] == "active":
            return False
        rc, out = self.run("start")
        if rc != 0:
            self.module.fail_json(msg=f"systemctl start {self.name} failed: {out}")
        return True

    def restart(self) -> None:
        rc, out = self.run("restart")
        if rc != 0:
            self.module.fail_json(msg=f"systemctl restart {self.name} failed: {out}")

    def quick_restart(self, signal_name: str, timeout: float) -> bool:
        return False

    def trouble(self) -> str | None:
        return f"systemd reports {self.name} failed" if self.run("is-failed")[0] == 0 else None


def poll(what: Callable[[], dict | None], timeout: float) -> dict | None:
    """what() until it returns something, at most timeout seconds (at least once)."""
    deadline = time.monotonic() + timeout
    while True:
        found = what()
        if found is not None or time.monotonic() >= deadline:
            return found
        time.sleep(0.2)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "manager": {"type": "str", "choices": ["supervisor", "systemd"], "default": "supervisor"},
            "supervisor_root": {"type": "path"},
            "name": {"type": "str", "default": "logplatform"},
            "url": {"type": "str", "required": True},
            "config_path": {"type": "path", "required": True},
            "release_dir": {"type": "path", "required": True},
            "version": {"type": "str", "required": True},
            "node": {"type": "str", "required": True},
            "drain": {"type": "bool", "default": True},
            "answer_timeout": {"type": "int", "default": 10},
            "wait_for": {"type": "str", "choices": ["live", "ready"], "default": "ready"},
            "ready_timeout": {"type": "int", "default": 30},
        },
        required_if=[("manager", "supervisor", ["supervisor_root"])],
        supports_check_mode=True,
    )
    p = module.params
    node, url = p["node"], p["url"]
    manager = Supervisor(module) if p["manager"] == "supervisor" else Systemd(module)

    def version() -> dict | None:
        try:
            return get_json(join_url(url, "/version"), timeout=2.0)
        except CheckError:
            return None

    binary = f"{p['release_dir']}/venv/bin/logplatform"
    try:
        digest = check_config_file(module.run_command, binary, p["config_path"])["config_digest"]
    except CheckError as exc:
        if module.check_mode:  # the release is not installed yet: it would be, and the node restarted
            module.exit_json(changed=True, started=False, restarted=True, config_digest=None, reason=str(exc))
        module.fail_json(msg=f"node {node}: {exc}")

    result: dict = {"changed": False, "started": False, "restarted": False, "config_digest": digest}
    if module.check_mode:
        running = version()
        reason = reason_to_restart(running, p["version"], digest)
        result.update(restarted=reason is not None, changed=reason is not None, reason=reason)
        module.exit_json(**result)

    result["started"] = manager.start()
    running = poll(version, p["answer_timeout"])
    reason = reason_to_restart(running, p["version"], digest)
    if reason:
        quick = not p["drain"] and running is not None and running.get("quick_stop")
        drained = not (quick and manager.quick_restart(running["quick_stop"], p["ready_timeout"]))
        if drained:
            manager.restart()
        result.update(restarted=True, drained=drained, reason=reason)
    result["changed"] = result["started"] or result["restarted"]

    health = join_url(url, f"/health/{p['wait_for']}")
    deadline = time.monotonic() + p["ready_timeout"]
    observed = "no answer"
    while True:
        try:
            status, body = http_get(health, timeout=2.0)
            if status == 200:
                break
            observed = f"{status} {short(body)}"
        except CheckError as exc:
            observed = str(exc)
        trouble = manager.trouble()
        if trouble:
            module.fail_json(msg=f"node {node} does not come up: {trouble}; see its log", **result)
        if time.monotonic() >= deadline:
            module.fail_json(
                msg=f"node {node} did not answer {health} with 200 within {p['ready_timeout']}s: {observed}",
                **result,
            )
        time.sleep(0.1)
    result["running"] = version()
    module.exit_json(**result)


def reason_to_restart(running: dict | None, version: str, digest: str) -> str | None:
    """Why the node must restart, or None when it runs this version with this configuration."""
    if running is None:
        return "does not answer /version"
    if running.get("version") != version:
        return f"runs {running.get('version')}, not {version}"
    if running.get("config_digest") != digest:
        return "runs another configuration than the rendered file"
    return None


if __name__ == "__main__":
    main()
