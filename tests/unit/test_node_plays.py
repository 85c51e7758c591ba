"""The deploy's plays on every node of a color (provision, validate) pay nothing per node for a task that
runs once: no dynamic include on their success path.

`include_tasks` is a task of its own on every host of the play (a worker process per host, then the
controller loads the file for each of them) before the tasks it brings, which are mostly `run_once`
(a stage mark, a gate's judge). bench/scale.py measured those includes at 9 s of a deploy with 2 nodes a
color and 42 s with 16 (docs/benchmarks.md). `import_tasks` brings the same tasks, with the same `vars`
and `when`, when the play is parsed. A rescue's include runs only after a failure and stays dynamic."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import yaml

from tests.conftest import REPO

TASKS = REPO / "roles" / "bluegreen" / "tasks"
# what deploy.yml's provision/validate play and validate.yml run on every node of the target color
NODE_PLAY_ENTRIES = ("deploy/provision.yml", "validate/gates.yml")
INCLUDE, IMPORT = "ansible.builtin.include_tasks", "ansible.builtin.import_tasks"


def success_path(tasks: list[dict]) -> Iterator[dict]:
    """Every task of a task list, inside blocks too, but not inside a rescue."""
    for task in tasks or []:
        yield task
        yield from success_path(task.get("block") or [])
        yield from success_path(task.get("always") or [])


def reached(entry: str) -> dict[str, list[dict]]:
    """The task files the entry point brings in on its success path (itself included), by file."""
    files: dict[str, list[dict]] = {}
    todo = [entry]
    while todo:
        name = todo.pop()
        if name in files:
            continue
        files[name] = list(success_path(yaml.safe_load((TASKS / name).read_text())))
        todo += [t[key] for t in files[name] for key in (INCLUDE, IMPORT) if isinstance(t.get(key), str)]
    return files


def test_the_plays_on_every_node_have_no_dynamic_include_outside_a_rescue():
    dynamic = [
        f"{name}: {task.get('name')!r} includes {task[INCLUDE]}"
        for entry in NODE_PLAY_ENTRIES
        for name, tasks in reached(entry).items()
        for task in tasks
        if INCLUDE in task
    ]
    assert dynamic == []


def test_the_imports_keep_every_gate_of_the_validation():
    """The gates are still all there: each judge, the canary, the performance and the shadow traffic."""
    files = reached("validate/gates.yml")
    assert {
        "validate/judge.yml",
        "validate/canary.yml",
        "validate/perf_start.yml",
        "validate/perf.yml",
    } <= set(files)
    assert {"validate/shadow_start.yml", "validate/shadow_stop.yml", "run/mark_stage.yml"} <= set(files)
    gates = [t for t in files["validate/gates.yml"] if t.get(IMPORT) == "validate/judge.yml"]
    assert [t["name"] for t in gates] == [
        "[3/6 validate] Readiness and version",
        "[3/6 validate] Configuration",
        "[3/6 validate] Shadow traffic",
    ]
    assert all(Path(TASKS / name).is_file() for name in files)
