"""The run page's 6-step progress bar follows the real pipeline: every "[n/6 stage]" task name in
roles/bluegreen names the stage the dashboard shows at step n, and the allow-list points at real
playbooks."""

from __future__ import annotations

import yaml

from tests.conftest import REPO
from webui.actions import ACTIONS, DEPLOY_STAGES, Catalog
from webui.jobs import parse_stage


def task_names(tasks: list) -> list[str]:
    names = []
    for task in tasks or []:
        if not isinstance(task, dict):
            continue
        if isinstance(task.get("name"), str):
            names.append(task["name"])
        for section in ("block", "rescue", "always"):
            names.extend(task_names(task.get(section)))
    return names


def test_stage_names_in_the_controller_match_the_progress_bar():
    seen = {}
    for stage in DEPLOY_STAGES:
        path = REPO / "roles" / "bluegreen" / "tasks" / f"{stage}.yml"
        for name in task_names(yaml.safe_load(path.read_text())):
            parsed = parse_stage(name)
            if parsed is None:
                continue
            assert parsed["total"] == len(DEPLOY_STAGES), name
            assert DEPLOY_STAGES[parsed["index"] - 1] == parsed["name"], name
            seen[parsed["name"]] = parsed["index"]
    assert seen == {name: index for index, name in enumerate(DEPLOY_STAGES, start=1)}


def test_parse_stage():
    stage = parse_stage("[3/6 validate] Check the node is ready")
    assert stage == {"index": 3, "total": 6, "name": "validate"}
    assert parse_stage("[2-3/6 provision, validate] Install the release") is None  # a play, not a stage
    assert parse_stage("[switch] Take the deploy lock") is None
    assert parse_stage(None) is None


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
