"""The run page's progress bar names the stages the controller's runs enter (their progress events
carry these names), and the allow-list points at real playbooks."""

from __future__ import annotations

import yaml
from ansible.module_utils.bluegreen_state import FIRST_STAGE

from tests.conftest import REPO
from webui.actions import ACTIONS, DEPLOY_STAGES, Catalog


def stage_vars(node: object) -> set[str]:
    """Every value of `bluegreen_stage` set in a task file's vars, at any depth."""
    found: set[str] = set()
    if isinstance(node, dict):
        value = (
            (node.get("vars") or {}).get("bluegreen_stage") if isinstance(node.get("vars"), dict) else None
        )
        if isinstance(value, str):
            found.add(value)
        for child in node.values():
            found |= stage_vars(child)
    elif isinstance(node, list):
        for child in node:
            found |= stage_vars(child)
    return found


def test_the_progress_bar_names_the_stages_deploy_enters():
    """Each deploy stage has its task file, which enters the stage under its own name; a run begins in
    the first one."""
    assert FIRST_STAGE["deploy"] == DEPLOY_STAGES[0]
    # the role's entry points, grouped: stage 3 is validate/gates, the others deploy/<stage>
    task_files = {s: f"deploy/{s}.yml" for s in DEPLOY_STAGES} | {"validate": "validate/gates.yml"}
    for stage in DEPLOY_STAGES:
        tasks = yaml.safe_load((REPO / "roles" / "bluegreen" / "tasks" / task_files[stage]).read_text())
        assert stage_vars(tasks) == {stage}, stage


def test_allow_list_points_at_the_projects_playbooks():
    catalog = Catalog(REPO, REPO / ".lab" / "releases")
    for action in ACTIONS:
        playbook = REPO / action.playbook
        assert catalog.available(action) == playbook.is_file()
    assert {a.playbook for a in ACTIONS if catalog.available(a)} >= {
        "playbooks/deploy.yml",
        "playbooks/switch.yml",
        "playbooks/rollback.yml",
    }
