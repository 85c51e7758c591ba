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
  - Under C(supervisor) through C(supervisorctl); under C(systemd) through C(systemctl) (always drained).
  - In check mode nothing is started or restarted; the result says whether it would be.
options:
  manager:
    description: The process manager that runs the service.
    type: str
    choices: [supervisor, systemd]
    default: supervisor
  supervisor_root:
    description: The supervisor installation (C(venv/bin/supervisorctl), C(supervisord.conf)); for
      I(manager=supervisor).
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

import time
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

STOPPED = ("STOPPED", "EXITED", "FATAL", "BACKOFF")


class Manager:
    """start / restart / quick_stop of one service, through supervisorctl or systemctl."""

    def __init__(self, module: AnsibleModule) -> None:
        p = module.params
        self.module, self.name = module, p["name"]
        if p["manager"] == "supervisor":
            root = p["supervisor_root"]
            self.ctl = [f"{root}/venv/bin/supervisorctl", "-c", f"{root}/supervisord.conf"]
        else:
            self.ctl = None

    def run(self, *args: str) -> tuple[int, str]:
        argv = [*self.ctl, *args] if self.ctl else ["systemctl", *args]
        rc, out, err = self.module.run_command(argv)
        return rc, (out + err).strip()

    def fail(self, what: str, output: str) -> None:
        self.module.fail_json(msg=f"{what} {self.name} failed: {output or 'no output'}")

    def start(self) -> bool:
        """Start when stopped; True when it was."""
        if self.ctl is None:
            rc, active = self.run("is-active", self.name)
            if active == "active":
                return False
            rc, out = self.run("start", self.name)
            if rc != 0:
                self.fail("systemctl start", out)
            return True
        rc, out = self.run("start", self.name)
        if rc == 0 and ": started" in out:
            return True
        if "already started" in out:
            return False
        self.fail("supervisorctl start", out)
        return False

    def restart(self) -> None:
        rc, out = self.run("restart", self.name)
        if rc != 0:
            self.fail(f"{'supervisorctl' if self.ctl else 'systemctl'} restart", out)

    def quick_restart(self, signal_name: str, timeout: float) -> bool:
        """Stop with the quick-stop signal, then start; False when that is not possible here."""
        if self.ctl is None:
            return False
        rc, out = self.run("signal", signal_name, self.name)
        if rc != 0:
            return False  # not running after all: a plain restart says why
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rc, out = self.run("status", self.name)
            if any(state in out.split() for state in STOPPED):
                break
            time.sleep(0.05)
        else:
            self.module.fail_json(
                msg=f"{self.name} did not stop within {timeout:.0f}s of {signal_name}: {out}"
            )
        rc, out = self.run("start", self.name)
        if rc != 0 or ": started" not in out:
            self.fail("supervisorctl start", out)
        return True


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
    manager = Manager(module)

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
