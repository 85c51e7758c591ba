"""roles/bluegreen's entry points: every `tasks_from` a playbook names is a task file of the role, grouped
as docs/architecture.md says (deploy/, validate/, operations/, run/), and every include inside the role
names a file that exists."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator

import yaml

from tests.conftest import REPO
from tests.integration.lab import run_playbook

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


# --- the argument specs (meta/argument_specs.yml) ------------------------------------------------------
SPECS = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]
DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())


def test_every_entry_point_a_playbook_calls_has_an_argument_spec_and_a_task_file():
    called = {name for name, users in bluegreen_entry_points().items() if "shadow.yml" not in users}
    assert called <= set(SPECS), called - set(SPECS)
    for name in set(SPECS) - {"main"}:
        assert (TASKS / f"{name}.yml").is_file(), name


def test_every_option_is_typed_described_and_defaults_like_defaults_main():
    for entry, spec in SPECS.items():
        assert spec.get("short_description"), entry
        for option, definition in spec["options"].items():
            assert option.startswith("bluegreen_"), (entry, option)
            assert definition.get("type") and definition.get("description"), (entry, option)
            if "default" in definition and option in DEFAULTS:
                assert definition["default"] == DEFAULTS[option], (entry, option)


def test_the_entry_points_that_begin_a_run_check_every_input_of_the_later_stages():
    """A refusal after the lock is taken would stop the playbook holding it: the first entry point of
    a playbook checks what the later ones read."""
    first = {
        "deploy/preflight": [
            "deploy/provision",
            "deploy/switch",
            "deploy/watch",
            "deploy/finish",
            "validate/gates",
        ],
        "validate/plan": ["validate/gates", "validate/finish"],
        "operations/retire_plan": ["operations/retire_stop", "operations/retire_finish"],
    }
    for begins, later in first.items():
        for entry in later:
            missing = set(SPECS[entry]["options"]) - set(SPECS[begins]["options"]) - {"bluegreen_version"}
            assert not missing, (begins, entry, missing)


def test_main_refuses_to_run_and_names_every_entry_point():
    (task,) = yaml.safe_load((TASKS / "main.yml").read_text())
    message = task["ansible.builtin.fail"]["msg"]
    for entry in set(SPECS) - {"main"}:
        assert entry in message, entry


def test_a_bad_choice_is_refused_by_argument_validation_before_the_entry_point_runs(tmp_path):
    """status.yml -e bluegreen_status_format=xml against an lb with nothing on it: refused by the spec
    of operations/status, naming the variable, before its first task (no lab needed: it never gets there)."""
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "all": {
                    "vars": {
                        "bluegreen_state_dir": str(tmp_path / "state"),
                        "haproxy_root": str(tmp_path / "lb"),
                    },
                    "children": {
                        "lb": {
                            "hosts": {
                                "lb-1": {
                                    "ansible_connection": "local",
                                    "ansible_python_interpreter": sys.executable,
                                }
                            }
                        }
                    },
                }
            }
        )
    )
    run = run_playbook("status.yml", "-i", str(inventory), "-e", "bluegreen_status_format=xml")
    assert run.returncode != 0, run.tail(2000)
    (refused,) = run.of_type("task_failed")  # the spec's check of operations/status, and nothing else ran
    assert refused["action"] in ("validate_argument_spec", "ansible.builtin.validate_argument_spec"), refused
    assert "value of bluegreen_status_format must be one of: text, json, got: xml" in refused["message"]
    # only the play's include of the entry point counts as ok: the entry point's first task never ran
    assert run.stats["lb-1"]["ok"] == 1, run.stats
    assert not (tmp_path / "state").exists()
