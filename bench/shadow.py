"""What shadow traffic costs the live path: live latency and throughput with the mirror off vs on.

One `bluegreen loadgen` run sends steady open-loop traffic through the live frontend for the whole
benchmark while short phases take turns, in a new random order every round:

  off      shadowing off (percent 0)
  control  shadowing off again: the A/A control, whose difference from `off` is this machine's noise
  on       --percent % of live batches mirrored to the idle color by HAProxy's Lua mirror

The mirror is switched on HAProxy's runtime API with the functions of the `bluegreen_shadow` module
itself (`set map` and `bluegreen shadow`, a millisecond each), so that many short rounds fit in a run
and nothing but the mirror changes between phases (an `ansible` process per switch would itself be a
CPU cost beside the load). Each phase is judged on the requests sent in it, leaving out --settle
seconds after each change. Per mode, pooled over its phases: live p50/p99/max latency, requests/s,
acked entries/s, failed requests, CPU cores used by the lb, each color's nodes and the load generator;
what the mirror did. The judged figure is the on p99 over the round's shadowing-off p99s (off and
control), paired by round (geometric mean over rounds, 95 % bootstrap interval), beside on/off and the
A/A control/off, which shows this machine's noise; lost entries come from the verifier.
Prints a table, writes bench/results/shadow.json (or --out).

On one machine the idle color's nodes share the cores with the live path, which hosts of their own
would not: --idle-hosts runs them at SCHED_IDLE, so what remains on the live path is the lb's share.

    .venv/bin/python bench/shadow.py [--rounds 20] [--phase 4] [--rate 500] [--batch 10] [--percent 10]
                                     [--idle-hosts] [--seed 1] [--out PATH]

Assumes the lab is up (`make lab`) with both colors healthy; leaves shadowing off.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common import (
    LAB,
    RESULTS,
    live_color,
    load_requests,
    pooled,
    start_load,
    stop_load,
    write_results,
)

from bluegreen import verify
from tests.ansible_modules import load as load_module  # common put the repository on sys.path

HAPROXY_DIR = LAB / "lb" / "haproxy"
MAP = str(HAPROXY_DIR / "shadow.map")
TARGET_P99_RATIO = 1.10
MODES = ("off", "control", "on")
BOOTSTRAP = 10_000
MIRROR_KEYS = ("sampled", "mirrored", "dropped_full", "skipped_incomplete", "errors", "mismatched")

shadow_module = load_module("bluegreen_shadow")
runtime = shadow_module.HAProxyRuntime(str(HAPROXY_DIR / "admin.sock"))


def lab_processes(idle: str) -> Iterator[tuple[str, Path]]:
    """(group, /proc/<pid>) of the lab's processes: lb (HAProxy), live_nodes, idle_nodes, loadgen."""
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # not a process, or gone
        if str(HAPROXY_DIR / "haproxy.cfg") in cmdline:
            yield "lb", proc
        elif "/bluegreen" in cmdline and " loadgen " in cmdline:
            yield "loadgen", proc
        elif "/bin/logplatform " in cmdline and "/.lab/nodes/" in cmdline:
            yield ("idle_nodes" if f"/.lab/nodes/{idle}-" in cmdline else "live_nodes"), proc


def cpu_seconds(idle: str) -> dict[str, float]:
    """CPU seconds used so far: the machine, HAProxy, each color's nodes, the load generator."""
    tick = os.sysconf("SC_CLK_TCK")
    # the whole machine: user + nice + system + irq + softirq + steal of the first /proc/stat line
    cpu = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    busy = sum(int(cpu[i]) for i in (0, 1, 2, 5, 6, 7)) / tick
    groups = {"machine": busy, "lb": 0.0, "live_nodes": 0.0, "idle_nodes": 0.0, "loadgen": 0.0}
    for group, proc in lab_processes(idle):
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone
        groups[group] += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return groups


def idle_policy(idle: str, policy: int) -> None:
    """Every thread of the idle color's nodes under scheduling `policy` (threads they start inherit it).

    SCHED_IDLE models the idle color on hosts of its own, as in production: its nodes get a CPU only
    when no live-path process wants it, so what stays on the live path is the lb's share of the mirror.
    """
    for group, proc in lab_processes(idle):
        if group == "idle_nodes":
            for task in (proc / "task").iterdir():
                with contextlib.suppress(OSError):  # a thread that just ended
                    os.sched_setscheduler(int(task.name), policy, os.sched_param(0))


def paired_ratio(
    phases: list[dict[str, Any]], mode: str, baseline: tuple[str, ...], seed: int
) -> dict[str, Any]:
    """`mode`'s live p99 over the baseline's in the same round (the geometric mean of the `baseline` modes'
    p99s): the geometric mean over rounds, with a 95 % bootstrap interval (rounds resampled). Pairing within
    a round cancels the machine's slow drift, which a ratio of pooled p99s does not: one noisy minute in the
    on phases alone moves a pooled p99 by far more than 10 %.
    """
    p99 = {(p["round"], p["mode"]): p["p99_ms"] for p in phases}
    logs = [
        math.log(p99[r, mode]) - statistics.fmean(math.log(p99[r, b]) for b in baseline)
        for r in sorted({p["round"] for p in phases})
        if p99.get((r, mode)) and all(p99.get((r, b)) for b in baseline)
    ]
    if not logs:
        return {"geomean": None, "ci95": None, "rounds": 0}
    rng = random.Random(seed)  # noqa: S311 - resampling, not a secret
    means = sorted(statistics.fmean(rng.choices(logs, k=len(logs))) for _ in range(BOOTSTRAP))
    low, high = means[int(BOOTSTRAP * 0.025)], means[int(BOOTSTRAP * 0.975) - 1]
    return {
        "geomean": round(math.exp(statistics.fmean(logs)), 3),
        "ci95": [round(math.exp(low), 3), round(math.exp(high), 3)],
        "median": round(math.exp(statistics.median(logs)), 3),
        "rounds": len(logs),
    }


def set_mode(mode: str, percent: int) -> None:
    """`on`: counters reset, then the percentage (as state=started does); otherwise percent 0."""
    before = shadow_module.read_percent(runtime, MAP)
    if mode == "on":
        shadow_module.start(runtime, MAP, percent, before, reset=True)
    elif before:
        shadow_module.set_percent(runtime, MAP, 0, present=True)


def run(args: argparse.Namespace, run_dir: Path) -> dict[str, Any]:
    set_mode("off", 0)
    rng = random.Random(args.seed)  # noqa: S311 - the order of phases, not a secret
    idle = "green" if live_color() == "blue" else "blue"
    if args.idle_hosts:
        idle_policy(idle, os.SCHED_IDLE)
    load = start_load(run_dir, args.rate, args.batch, args.connections, "bench-shadow")
    phases: list[dict[str, Any]] = []
    try:
        time.sleep(args.settle * 2)
        for round_no in range(args.rounds):
            order = list(MODES)
            rng.shuffle(order)
            for mode in order:
                set_mode(mode, args.percent)
                changed = time.time()
                time.sleep(args.settle)
                cpu_before = cpu_seconds(idle)
                time.sleep(args.phase)
                cpu = {k: v - cpu_before[k] for k, v in cpu_seconds(idle).items()}
                phase = {"round": round_no, "mode": mode, "window": (changed + args.settle, time.time())}
                phase["cpu_s"] = cpu
                if mode == "on":
                    phase["mirror"] = shadow_module.counters(runtime)  # read before the next phase resets
                phases.append(phase)
            print(f"  round {round_no + 1}/{args.rounds}: {' '.join(order)}", file=sys.stderr, flush=True)
    finally:
        set_mode("off", 0)
        stop_load(load)
        if args.idle_hosts:
            idle_policy(idle, os.SCHED_OTHER)
        drained, _ = shadow_module.stop_and_drain(runtime, MAP, 0, 10.0)
    requests = load_requests(run_dir)
    for phase in phases:
        phase["p99_ms"] = pooled(requests, [phase["window"]])["latency_ms"]["p99"]
    modes = {m: pooled(requests, [p["window"] for p in phases if p["mode"] == m]) for m in MODES}
    mirror = {k: sum(p["mirror"].get(k, 0) for p in phases if p["mode"] == "on") for k in MIRROR_KEYS}
    p99 = {m: modes[m]["latency_ms"]["p99"] for m in MODES}
    for m in MODES:
        mine = [p for p in phases if p["mode"] == m]
        seconds = sum(p["window"][1] - p["window"][0] for p in mine)
        modes[m]["cpu_cores"] = {
            group: round(sum(p["cpu_s"][group] for p in mine) / seconds, 3) for group in mine[0]["cpu_s"]
        }

    def ratio(mode: str) -> float | None:
        return round(p99[mode] / p99["off"], 3) if p99["off"] and p99[mode] else None

    report = verify.verify([run_dir])
    return {
        "idle_nodes_policy": "SCHED_IDLE" if args.idle_hosts else "SCHED_OTHER",
        "modes": modes,
        # judged: on against both shadowing-off phases of its round (off and control are the same
        # condition; two of them halve the baseline's own noise); the A/A control/off says how large
        # that noise is
        "p99_ratio_on_baseline": paired_ratio(phases, "on", ("off", "control"), args.seed),
        "p99_ratio_on_off": paired_ratio(phases, "on", ("off",), args.seed),
        "p99_ratio_control_off": paired_ratio(phases, "control", ("off",), args.seed),
        "pooled_p99_ratio_on_off": ratio("on"),
        "pooled_p99_ratio_control_off": ratio("control"),
        "mirror": mirror,
        "phases": phases,
        "queued_after_stop": drained.get("queued", 0),
        "failed_requests_total": report["failed_requests_total"],
        "lost": report["lost"],
        "duplicates": report["duplicates"],
        "acked_entries": report["acked_entries"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=20, help="rounds of one phase per mode")
    parser.add_argument("--phase", type=float, default=4, help="seconds judged per phase")
    parser.add_argument("--settle", type=float, default=0.5, help="seconds left out after each change")
    parser.add_argument("--rate", type=float, default=500, help="batches per second")
    parser.add_argument("--batch", type=int, default=10, help="entries per batch")
    parser.add_argument("--connections", type=int, default=16, help="keep-alive connections")
    parser.add_argument("--percent", type=int, default=10, help="shadow percentage while on")
    parser.add_argument(
        "--idle-hosts",
        action="store_true",
        help="run the idle color's nodes at SCHED_IDLE, as if on hosts of their own (the production layout)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the phase order")
    parser.add_argument("--out", type=Path, default=RESULTS / "shadow.json")
    args = parser.parse_args(argv)
    if not (HAPROXY_DIR / "shadow.map").exists():
        print(
            "bench/shadow.py: the lab is not up with the shadow mirror; run `make lab` first", file=sys.stderr
        )
        return 2

    run_dir = LAB / "bench" / time.strftime("shadow-%Y%m%dT%H%M%S")
    print(
        f"== shadow off vs on ({args.percent} %) vs control: {args.rounds} rounds of {args.phase:g} s "
        f"phases, {args.rate:g} batches/s of {args.batch}",
        file=sys.stderr,
        flush=True,
    )
    result = run(args, run_dir)

    print(
        f"{'mode':<8} {'req/s':>7} {'entries/s':>10} {'failed':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
    )
    for mode, f in result["modes"].items():
        lat = f["latency_ms"]
        print(
            f"{mode:<8} {f['requests_per_s']:>7} {f['acked_entries_per_s']:>10} {f['failed']:>7} "
            f"{lat['p50'] or 0:>8.2f} {lat['p99'] or 0:>8.2f} {lat['max'] or 0:>8.2f}"
        )
    print(f"{'CPU cores':<8} " + " ".join(f"{group:>10}" for group in result["modes"]["off"]["cpu_cores"]))
    for mode, f in result["modes"].items():
        print(f"{mode:<8} " + " ".join(f"{v:>10.3f}" for v in f["cpu_cores"].values()))
    print("mirror while on: " + ", ".join(f"{k} {v}" for k, v in result["mirror"].items()))
    on, control = result["p99_ratio_on_baseline"], result["p99_ratio_control_off"]
    met = on["geomean"] is not None and on["geomean"] <= TARGET_P99_RATIO
    print(
        f"live p99 on/(off, control), paired by round: {on['geomean']} (95 % CI {on['ci95']}; target <= "
        f"{TARGET_P99_RATIO}: {'met' if met else 'NOT met'}); "
        f"on/off {result['p99_ratio_on_off']['geomean']}; "
        f"control/off (this machine's noise): {control['geomean']} (95 % CI {control['ci95']}); "
        f"pooled on/off {result['pooled_p99_ratio_on_off']}; idle nodes {result['idle_nodes_policy']}; "
        f"failed {result['failed_requests_total']}, lost {result['lost']}"
    )
    write_results(args, {"target_p99_ratio": TARGET_P99_RATIO, "target_met": met, "results": result})
    return 0 if result["failed_requests_total"] == 0 and result["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
