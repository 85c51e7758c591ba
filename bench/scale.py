"""How the deploy's wall time grows with the number of hosts: the SSH lab (bluegreen/sshlab.py) with
N = 1, 2, 4, 8, 16 nodes a color behind one lb, per stage.

For each N, in order: `bluegreen lab up` (1 lb, N blue, N green), `playbooks/site.yml`, a deploy of the
new release to green, a deploy of the same release to blue (the same work: the nodes never had the
release either; the faster of the two is the size's figure, since other load on the machine only
adds), `bluegreen lab down`. Each `ansible-playbook` runs with `--forks` = max(10, hosts) so that no
host waits for a worker.

Per run: wall time, the controller's CPU time (ansible-playbook and the processes it waited for; not
the hosts' modules, which run under their sshd), the load average, and each stage's duration from the
progress events (plugins/callback/bluegreen_events.py, BLUEGREEN_EVENTS_FILE: stage_end), the start-up
before the first stage and the tail after the last. A deploy's wall time includes the lab's fixed
windows (inventories/lab/group_vars/all.yml: the 10 s watch, the 3 s performance measurement): they
are reported apart, as `windows_s`, and `rest_s` = wall - windows is what scales with the hosts.
Where the time goes inside a run: each task's share of it (bench/callback/bench_task_times.py), the
ten largest per run in the JSON. Prints a table, writes bench/results/scale.json and scale.png.

Needs root, run inside a private network namespace (the lab's bridge and addresses are fixed, one lab
per namespace), with the releases built beforehand outside it (they need pip):

    .venv/bin/bluegreen release 1.0.0 && .venv/bin/bluegreen release 1.1.0
    .venv/bin/bluegreen release --package supervisor 4.3.0
    unshare -n bash -c 'ip link set lo up; .venv/bin/python bench/scale.py [--nodes 1,2,4,8,16]'

The lab is brought down after each N, also when a run fails or on Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml
from common import BIN, LAB, RESULTS, ROOT, write_results

from bluegreen import sshlab

DEFAULT_NODES = "1,2,4,8,16"
LAB_ROOT = LAB / "scale"
LAB_VARS = ROOT / "inventories" / "lab" / "group_vars" / "all.yml"
BENCH_CALLBACKS = Path(__file__).resolve().parent / "callback"
STAGES = ("preflight", "provision", "validate", "switch", "watch", "finish")


class BenchError(Exception):
    """The bench cannot run or a run failed; the message says why."""


def setting(path: Path, name: str) -> Any:
    return yaml.safe_load(path.read_text())[name]


def missing_builds(versions: list[str]) -> list[str]:
    """The `bluegreen release` commands still to run (outside the namespace: they need pip)."""
    commands = [
        f".venv/bin/bluegreen release {version}"
        for version in versions
        if not (LAB / "releases" / version / "release.tar.gz").is_file()
    ]
    supervisor = setting(ROOT / "roles/supervisor/defaults/main.yml", "supervisor_version")
    if not (LAB / "tools" / "supervisor" / supervisor / "release.tar.gz").is_file():
        commands.append(f".venv/bin/bluegreen release --package supervisor {supervisor}")
    return commands


def check_can_run(versions: list[str]) -> None:
    reason = sshlab.unavailable()
    if reason:
        raise BenchError(f"the SSH lab cannot run here: {reason}")
    others = [name for name in network_interfaces() if name != "lo"]
    if others:
        raise BenchError(
            f"run it inside a private network namespace (this one has {', '.join(others)}; the lab's "
            "bridge and addresses are fixed, one lab per namespace): "
            "unshare -n bash -c 'ip link set lo up; .venv/bin/python bench/scale.py ...'"
        )
    missing = missing_builds(versions)
    if missing:
        raise BenchError(
            "releases missing in .lab/ (a private namespace has no network for pip): build them first, "
            "outside it: " + " && ".join(missing)
        )


def network_interfaces() -> list[str]:
    """The interfaces of this process's network namespace (a private one, before the lab: only lo)."""
    lines = Path("/proc/self/net/dev").read_text().splitlines()[2:]
    return [line.split(":", 1)[0].strip() for line in lines]


def meminfo() -> dict[str, int]:
    """MemTotal and MemAvailable in MiB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return {k: int(fields[k].split()[0]) // 1024 for k in ("MemTotal", "MemAvailable")}


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def hosts_cpu(hosts: list[sshlab.Host]) -> float:
    """CPU seconds (user + system) the lab's hosts used so far: every process in a host's PID namespace,
    with what its reaped children used (sshd reaps each session, sudo its command, supervisord its
    programs, PID 1 the orphans)."""
    namespaces = set()
    for host in hosts:
        with contextlib.suppress(OSError):
            namespaces.add(Path(f"/proc/{host.init_pid}/ns/pid").readlink())
    ticks = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            if (proc / "ns/pid").readlink() in namespaces:
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                ticks += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def read_lines(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def task_shares(lines: list[dict], end: float, top: int = 10) -> list[dict]:
    """Each task's wall time (to the next task or play start, or `end`), summed by play and task name,
    the `top` largest first."""
    marks = [line for line in lines if line["type"] in ("task", "play", "end")]
    totals: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0])
    for this, after in zip(marks, [*marks[1:], {"time": end}], strict=True):
        if this["type"] != "task":
            continue
        key = (this.get("play") or "", this["name"])
        totals[key][0] += after["time"] - this["time"]
        totals[key][1] += 1
    ranked = sorted(totals.items(), key=lambda item: -item[1][0])[:top]
    return [{"play": play, "task": name, "s": round(s, 2), "runs": n} for (play, name), (s, n) in ranked]


def playbook(
    label: str,
    lab: list[sshlab.Host],
    inventory: Path,
    forks: int,
    work: Path,
    *args: str,
    may_fail: bool = False,
) -> dict[str, Any]:
    """One ansible-playbook run: wall and controller CPU time, load average, stages (from the events),
    the largest tasks. When it fails: BenchError, or with `may_fail` the result says `failed` and why
    (the run's failure event)."""
    events, tasks = work / f"{label}.events.ndjson", work / f"{label}.tasks.ndjson"
    env = os.environ | {
        "BLUEGREEN_EVENTS_FILE": str(events),
        "BENCH_TASK_TIMES_FILE": str(tasks),
        "ANSIBLE_CALLBACK_PLUGINS": f"{ROOT / 'plugins/callback'}:{BENCH_CALLBACKS}",
        "ANSIBLE_CALLBACKS_ENABLED": "bluegreen_events,bench_task_times",
    }
    command = [str(BIN / "ansible-playbook"), "-i", str(inventory), "--forks", str(forks), *args]
    print(f"== {label}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
    load_before, cpu_before, lab_before = os.getloadavg()[0], children_cpu(), hosts_cpu(lab)
    started = time.time()
    with (work / f"{label}.log").open("w") as log:
        done = subprocess.run(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    ended = time.time()
    lines = read_lines(events)
    if done.returncode != 0:
        failures = [
            event.get("message") or event.get("observed") for event in lines if event["type"] == "failure"
        ]
        if may_fail and failures:
            print(f"   {label} FAILED: {str(failures[0])[:300]}", file=sys.stderr, flush=True)
            return {"failed": True, "failure": str(failures[0])[:2000], "wall_s": round(ended - started, 3)}
        tail = (work / f"{label}.log").read_text(errors="replace")[-3000:]
        raise BenchError(f"{label} failed (exit {done.returncode}), log {work / f'{label}.log'}:\n{tail}")
    stage_s: dict[str, float] = {}
    first_start = last_end = None
    result: dict[str, Any] = {}
    for event in lines:
        if event["type"] == "run_start" and "to" in event:
            result["to"] = event["to"]
        if event["type"] == "stage_start" and first_start is None:
            first_start = event["time"]
        if event["type"] == "stage_end":
            stage_s[event["stage"]] = round(stage_s.get(event["stage"], 0) + event["duration_s"], 3)
            last_end = event["time"]
    result |= {
        "command": " ".join(["ansible-playbook", *command[1:]]),
        "wall_s": round(ended - started, 3),
        "controller_cpu_s": round(children_cpu() - cpu_before, 2),
        "hosts_cpu_s": round(hosts_cpu(lab) - lab_before, 2),
        "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    if stage_s:
        result["before_first_stage_s"] = round(first_start - started, 3)
        result["stage_s"] = stage_s
        result["after_last_stage_s"] = round(ended - last_end, 3)
    result["top_tasks"] = task_shares(read_lines(tasks), ended)
    return result


def with_windows(result: dict[str, Any], watch: float, perf: float) -> dict[str, Any]:
    """A deploy's fixed windows apart from the rest, and each of those two stages beyond its window."""
    if result.get("failed"):
        return result
    stages = result["stage_s"]
    missing = [stage for stage in STAGES if stage not in stages]
    if missing:
        raise BenchError(f"the deploy's events have no stage_end for {', '.join(missing)}")
    result["windows_s"] = watch + perf
    result["rest_s"] = round(result["wall_s"] - watch - perf, 3)
    result["watch_beyond_window_s"] = round(stages["watch"] - watch, 3)
    result["validate_beyond_perf_window_s"] = round(stages["validate"] - perf, 3)
    return result


def one_size(
    nodes: int, lbs: int, *, version: str, work: Path, watch: float, perf: float, forks: int | None
) -> dict[str, Any]:
    lab = sshlab.Lab(LAB_ROOT)
    inventory = LAB_ROOT / "inventory" / "hosts.yml"
    hosts = lbs + 2 * nodes
    forks = forks or max(10, hosts)
    run: dict[str, Any] = {"nodes": nodes, "lbs": lbs, "hosts": hosts, "forks": forks}
    run["memory_mib_before"] = meminfo()
    lab.down()  # what an interrupted run left
    started = time.monotonic()
    try:
        hosts_up = lab.up(lbs, nodes, inventory)
        run["lab_up_s"] = round(time.monotonic() - started, 3)
        run["site"] = playbook(f"n{nodes}-site", hosts_up, inventory, forks, work, "playbooks/site.yml")
        run["memory_mib_after_site"] = meminfo()
        extra = ("-e", f"bluegreen_version={version}")
        # a deploy that fails (a gate refused) is recorded as such; traffic stays where it was
        run["deploys"] = [
            with_windows(
                playbook(
                    f"n{nodes}-deploy-{i}",
                    hosts_up,
                    inventory,
                    forks,
                    work,
                    "playbooks/deploy.yml",
                    *extra,
                    may_fail=True,
                ),
                watch,
                perf,
            )
            for i in (1, 2)
        ]
        run["memory_mib_after_deploys"] = meminfo()
    finally:
        lab.down()
    return run


def ratio(runs: list[dict], big: int, small: int, pick) -> float | None:
    by = {run["nodes"]: run for run in measured(runs)}
    if big not in by or small not in by:
        return None
    return round(pick(by[big]) / pick(by[small]), 3)


def best(run: dict) -> dict:
    """The faster of the size's deploys that passed (the same work: other load on the machine only adds
    time)."""
    return min((d for d in run["deploys"] if not d.get("failed")), key=lambda deploy: deploy["wall_s"])


def measured(runs: list[dict]) -> list[dict]:
    """The sizes with at least one deploy that passed."""
    return [run for run in runs if any(not d.get("failed") for d in run["deploys"])]


def cpu(result: dict) -> float:
    return result["controller_cpu_s"] + result["hosts_cpu_s"]


def print_table(runs: list[dict]) -> None:
    head = (
        f"{'N':>3} {'hosts':>5} {'site s':>7} {'site cpu':>8} {'deploy s':>9} {'rest s':>7} {'cpu s':>6}  "
        "stages (s, the faster deploy)"
    )
    print(head)
    for run in runs:
        failed = sum(1 for d in run["deploys"] if d.get("failed"))
        if failed:
            print(f"{run['nodes']:>3} {run['hosts']:>5}  {failed} of {len(run['deploys'])} deploys FAILED")
        if failed == len(run["deploys"]):
            continue
        deploy = best(run)
        stages = ", ".join(f"{k} {v:.1f}" for k, v in deploy["stage_s"].items())
        print(
            f"{run['nodes']:>3} {run['hosts']:>5} {run['site']['wall_s']:>7.1f} {cpu(run['site']):>8.1f} "
            f"{deploy['wall_s']:>9.1f} {deploy['rest_s']:>7.1f} {cpu(deploy):>6.1f}  "
            f"start {deploy['before_first_stage_s']:.1f}, {stages}"
        )


def plot(runs: list[dict], path: Path, title: str) -> None:
    """Per N: the faster deploy's stages stacked; wall times; CPU seconds (controller and hosts)."""
    import matplotlib  # noqa: PLC0415 - only the plot needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    runs = sorted(measured(runs), key=lambda run: run["nodes"])
    if not runs:
        return
    fig, (stages, wall, used) = plt.subplots(1, 3, figsize=(16, 5))
    labels = [run["nodes"] for run in runs]  # a linear axis: linear growth reads as a straight line
    bottom = [0.0] * len(runs)
    for part in ("start-up", *STAGES, "tail"):
        values = []
        for run in runs:
            deploy = best(run)
            if part == "start-up":
                values.append(deploy["before_first_stage_s"])
            elif part == "tail":
                values.append(deploy["after_last_stage_s"])
            else:
                values.append(deploy["stage_s"][part])
        stages.bar(labels, values, bottom=bottom, label=part, width=0.6)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    stages.set_title("deploy per stage (the faster of two)")
    stages.set_ylabel("seconds")
    stages.legend(fontsize=8)
    wall.plot(labels, [run["site"]["wall_s"] for run in runs], marker="o", label="site.yml")
    passed = [(run["nodes"], d["wall_s"]) for run in runs for d in run["deploys"] if not d.get("failed")]
    wall.scatter(
        [x for x, _ in passed], [y for _, y in passed], marker="x", color="gray", label="each deploy"
    )
    wall.plot(labels, [best(run)["wall_s"] for run in runs], marker="o", label="faster deploy")
    wall.plot(labels, [best(run)["rest_s"] for run in runs], marker="o", label="faster deploy - windows")
    wall.set_title("wall time (s)")
    wall.legend(fontsize=8)
    used.plot(labels, [cpu(run["site"]) for run in runs], marker="o", label="site.yml")
    used.plot(labels, [cpu(best(run)) for run in runs], marker="o", label="deploy: controller + hosts")
    used.plot(labels, [best(run)["controller_cpu_s"] for run in runs], marker="x", label="deploy: controller")
    used.set_title("CPU seconds (user + system)")
    used.legend(fontsize=8)
    for ax in (stages, wall, used):
        ax.set_xlabel("nodes per color (hosts = 2 N + lbs)")
        ax.set_xticks(labels)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report(args: argparse.Namespace, runs: list[dict], **parameters: Any) -> None:
    """The JSON and the plot of the sizes measured so far (rewritten after each size)."""
    ratios = {
        "deploy_wall_16_over_2": ratio(runs, 16, 2, lambda run: best(run)["wall_s"]),
        "deploy_rest_16_over_2": ratio(runs, 16, 2, lambda run: best(run)["rest_s"]),
        "deploy_cpu_16_over_2": ratio(runs, 16, 2, lambda run: cpu(best(run))),
        "site_wall_16_over_2": ratio(runs, 16, 2, lambda run: run["site"]["wall_s"]),
    }
    if ratios["deploy_wall_16_over_2"] is not None:
        print("time(16) / time(2): " + ", ".join(f"{k} {v}" for k, v in ratios.items()))
    write_results(args, {"runs": runs, "ratios": ratios}, **parameters)
    title = f"deploy over SSH, {args.lbs} lb + 2 N nodes ({time.strftime('%Y-%m-%d')})"
    plot(runs, args.out.with_suffix(".png"), title)
    print(f"wrote {args.out.with_suffix('.png')}")


def interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", default=DEFAULT_NODES, help="nodes per color, comma-separated")
    parser.add_argument("--lbs", type=int, default=1, help="load balancers")
    parser.add_argument("--version", default="1.1.0", help="the release to deploy (site.yml runs the lab's)")
    parser.add_argument(
        "--forks", type=int, help="ansible-playbook --forks (default: max(10, hosts), a worker per host)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "scale.json")
    args = parser.parse_args(argv)
    try:
        sizes = [int(n) for n in args.nodes.split(",")]
        sshlab.plan(args.lbs, max(sizes))
    except ValueError as error:
        print(f"bench/scale.py: bad --nodes/--lbs: {error}", file=sys.stderr)
        return 2
    initial = str(setting(LAB_VARS, "bluegreen_initial_version"))
    watch, perf = (
        float(setting(LAB_VARS, "bluegreen_watch_seconds")),
        float(setting(LAB_VARS, "bluegreen_perf_seconds")),
    )
    signal.signal(signal.SIGTERM, interrupted)
    work = LAB / "bench" / time.strftime("scale-%Y%m%dT%H%M%S")
    runs: list[dict] = []
    try:
        check_can_run([initial, args.version])
        work.mkdir(parents=True, exist_ok=True)
        for nodes in sizes:
            runs.append(
                one_size(
                    nodes, args.lbs, version=args.version, work=work, watch=watch, perf=perf, forks=args.forks
                )
            )
            print_table(sorted(runs, key=lambda run: run["nodes"]))
            report(args, runs, initial=initial, watch=watch, perf=perf, work=work)
    except BenchError as error:
        print(f"bench/scale.py: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench/scale.py: interrupted; the lab is down", file=sys.stderr)
        return 130
    finally:
        if runs:
            print(
                f"figures of N = {', '.join(str(run['nodes']) for run in runs)} in {args.out}",
                file=sys.stderr,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
