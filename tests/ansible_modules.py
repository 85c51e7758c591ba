"""Run our Ansible modules in-process, the usual way: patched args, exit_json/fail_json captured."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any
from unittest import mock

from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args

from tests.conftest import REPO


class AnsibleExitJson(Exception):
    def __init__(self, result: dict) -> None:
        super().__init__(result)
        self.result = result


class AnsibleFailJson(Exception):
    def __init__(self, result: dict) -> None:
        super().__init__(result)
        self.result = result


def _exit_json(self: basic.AnsibleModule, **kwargs: Any) -> None:
    raise AnsibleExitJson(kwargs)


def _fail_json(self: basic.AnsibleModule, **kwargs: Any) -> None:
    raise AnsibleFailJson(kwargs)


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "plugins" / "modules" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_module(name: str, args: dict, check_mode: bool = False) -> tuple[bool, dict]:
    """(failed, result) of one module run; the run's `module.warn()`s in the result's `warnings`, as
    Ansible shows them (not ansible's process-wide warning list: other tests in the worker share it)."""
    module = load(name)
    if check_mode:
        args = {**args, "_ansible_check_mode": True}
    warnings: list[str] = []
    with (
        patch_module_args(args),
        mock.patch.multiple(
            basic.AnsibleModule,
            exit_json=_exit_json,
            fail_json=_fail_json,
            warn=lambda _self, warning: warnings.append(warning),
        ),
    ):
        try:
            module.main()
        except AnsibleExitJson as done:
            return False, {**done.result, "warnings": warnings}
        except AnsibleFailJson as failed:
            return True, {**failed.result, "warnings": warnings}
    raise AssertionError(f"module {name} returned without exit_json or fail_json")


def dead_run(state_dir: Path, failure: dict, version: str = "1.2.0") -> tuple[dict, int]:
    """What a killed ansible-playbook leaves: a deploy begun (bluegreen_state action=begin) by a controller
    whose process is gone, stopped in stage validate after action=fail stored `failure`. (run, dead pid)"""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    controller = {"pid": dead.pid, "user": "alice", "host": socket.gethostname()}
    params = {"dir": str(state_dir), "action": "begin", "run_action": "deploy", "version": version}
    failed, begun = run_module("bluegreen_state", {**params, "controller": controller})
    assert not failed, begun
    run = begun["run"]
    for action, extra in (("stage", {"stage": "validate"}), ("fail", {"failure": failure})):
        failed, result = run_module(
            "bluegreen_state", {"dir": str(state_dir), "action": action, "run": run, **extra}
        )
        assert not failed, result
    return run, dead.pid
