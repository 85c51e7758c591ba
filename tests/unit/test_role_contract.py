"""roles/bluegreen's entry points: every `tasks_from` a playbook names is a task file of the role, grouped
as docs/architecture.md says (deploy/, validate/, operations/, run/), and every include inside the role
names a file that exists."""

from __future__ import annotations

import re
from collections.abc import Iterator

import yaml

from tests.conftest import REPO

ROLE = REPO / "roles" / "bluegreen"
TASKS = ROLE / "tasks"
GROUPS = {"deploy", "validate", "operations", "run"}


def walk(node: object) -> Iterator[dict]:
    """Every mapping in a loaded YAML document (tasks, blocks, rescues, plays)."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def bluegreen_entry_points() -> dict[str, list[str]]:
    """tasks_from of every include_role/import_role of role bluegreen -> the files that name it."""
    found: dict[str, list[str]] = {}
    drivers = [REPO / "tests/integration/playbooks/shadow.yml"]
    for path in [*sorted((REPO / "playbooks").glob("*.yml")), *drivers]:
        for node in walk(yaml.safe_load(path.read_text())):
            for key in ("ansible.builtin.include_role", "ansible.builtin.import_role"):
                args = node.get(key)
                if isinstance(args, dict) and args.get("name") == "bluegreen":
                    found.setdefault(args["tasks_from"], []).append(path.name)
    return found


def test_every_tasks_from_names_a_task_file_of_its_group():
    entry_points = bluegreen_entry_points()
    assert len(entry_points) >= 18, entry_points
    for name, users in entry_points.items():
        # the test driver of shadow traffic picks start or stop with a variable
        names = (
            [name.replace("{{ bluegreen_shadow_action }}", a) for a in ("start", "stop")]
            if "{{" in name
            else [name]
        )
        for entry in names:
            assert not entry.endswith(".yml"), f"{users}: name the entry point without .yml: {entry}"
            assert entry.split("/")[0] in GROUPS - {"run"}, (
                f"{users}: {entry} is not in deploy/, validate/, operations/"
            )
            assert (TASKS / f"{entry}.yml").is_file(), f"{users}: no task file for {entry}"


def test_every_include_inside_the_role_names_a_file_from_the_tasks_folder():
    includes = 0
    for path in TASKS.rglob("*.yml"):
        for node in walk(yaml.safe_load(path.read_text())):
            target = node.get("ansible.builtin.include_tasks") or node.get("ansible.builtin.import_tasks")
            if isinstance(target, str):
                includes += 1
                assert re.fullmatch(r"(deploy|validate|operations|run)/\w+\.yml", target), (path, target)
                assert (TASKS / target).is_file(), (path, target)
    assert includes > 20
    assert {p.parent.name for p in TASKS.rglob("*.yml") if p.parent != TASKS} == GROUPS
