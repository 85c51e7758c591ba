"""What the verify tests of every scenario (molecule/<role>/tests/, pytest-testinfra) share.

testinfra reaches each host through molecule's inventory (`--connection=ansible`): as Ansible does, over
SSH as the lab's user with sudo, through the control sockets converge left. What a test expects comes
from the role's own variables on that host, resolved by Ansible as converge resolved them (`role_vars`):
role defaults, the inventory (inventories/lab/group_vars), the converge play, role vars and the role's
parameters. A test never repeats a default (a path, a port, the user a service runs as).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import pytest
from ansible import context
from ansible.errors import AnsibleUndefinedVariable
from ansible.inventory.manager import InventoryManager
from ansible.module_utils.common.collections import ImmutableDict
from ansible.parsing.dataloader import DataLoader
from ansible.playbook import Playbook
from ansible.playbook.block import Block
from ansible.playbook.task import Task
from ansible.plugins.loader import init_plugin_loader
from ansible.template import Templar, trust_as_template
from ansible.vars.hostvars import HostVars
from ansible.vars.manager import VariableManager

_UNSET = object()


@functools.cache
def _converge() -> tuple[VariableManager, InventoryManager, Playbook]:
    """The scenario's inventory and converge playbook, loaded by Ansible (molecule's environment says
    where: its ansible.cfg, inventory and scenario directory)."""
    context.CLIARGS = ImmutableDict(tags=(), skip_tags=(), extra_vars=())
    init_plugin_loader([])
    loader = DataLoader()
    inventory = InventoryManager(
        loader=loader, sources=[str(Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent)]
    )
    variables = VariableManager(loader=loader, inventory=inventory)
    HostVars(inventory=inventory, variable_manager=variables, loader=loader)  # hostvars[...], as in a play
    converge = Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"], "converge.yml")
    return variables, inventory, Playbook.load(str(converge), variable_manager=variables, loader=loader)


def _first_task(blocks: list[Block]) -> Task:
    for block in blocks:
        for item in block.block:
            if isinstance(item, Block):
                return _first_task([item])
            return item
    raise LookupError("the role has no task")


class RoleVariables:
    """The variables as the tasks of a role saw them on a host in the converge playbook: call it with a
    name or a template (`"{{ a ~ b }}"`); `default` for a variable that is undefined."""

    def __init__(self, hostname: str, role: str) -> None:
        variables, inventory, converge = _converge()
        host = inventory.get_host(hostname)
        for play in converge.get_plays():
            for candidate in play.get_roles():
                if candidate.get_name() == role:
                    task = _first_task(candidate.compile(play=play))
                    self._templar = Templar(variables=variables.get_vars(play=play, host=host, task=task))
                    return
        raise LookupError(f"converge.yml does not run role {role} on {hostname}")

    def __call__(self, expression: str, default: Any = _UNSET) -> Any:
        template = expression if "{{" in expression else f"{{{{ {expression} }}}}"
        try:
            return self._templar.template(trust_as_template(template))
        except AnsibleUndefinedVariable:
            if default is _UNSET:
                raise
            return default


@pytest.fixture(scope="module")
def role_vars(host: Any, request: pytest.FixtureRequest) -> RoleVariables:
    """The variables of the role the test module verifies (its `ROLE`) on the host under test."""
    return RoleVariables(host.backend.host, request.module.ROLE)
