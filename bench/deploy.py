"""Throughput and latency during a full deploy.yml (validation included), against the steady state before it.

Steady open-loop traffic runs through the live frontend: first `--steady` seconds with nothing
happening, then a real `ansible-playbook playbooks/deploy.yml` to the idle color (provision, validate,
switch, watch, finish), then a few seconds more. Compares acked entries/s and p50/p99 latency during
the deploy with the steady state, reports the deploy's wall time per stage (from history.jsonl), and
the verifier's verdict. Prints a table, writes bench/results/deploy.json and deploy.png.

    .venv/bin/python bench/deploy.py [--rate 500] [--batch 10] [--steady 15]

Assumes the lab is up (`make lab`). Deploys whichever of --versions the idle color does not run yet
(so the idle nodes really install a release), building it if the store lacks it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import (
    BIN,
    LAB,
    RESULTS,
    ROOT,
    load_requests,
    plot_timeline,
    start_load,
    stop_load,
    window,
    write_results,
)

from bluegreen import release, verify


def print_table(result: dict) -> None:
    print(f"{'window':<14} {'seconds':>8} {'acked entries/s':>16} {'failed':>7} {'p50 ms':>8} {'p99 ms':>8}")
    for name, w in (("steady", result["steady"]), ("during deploy", result["during_deploy"])):
        lat = w["latency_ms"]
        print(
            f"{name:<14} {w['seconds']:>8.1f} {w['acked_entries_per_s']:>16.1f} {w['failed']:>7} "
            f"{lat['p50'] or 0:>8.2f} {lat['p99'] or 0:>8.2f}"
        )
    print(
        f"throughput during deploy / steady: {result['throughput_ratio']:.2%}   "
        f"p99 ratio: {result['p99_ratio']}"
    )
    print("stage seconds: " + ", ".join(f"{k} {v}" for k, v in result["stage_seconds"].items()))
    print(f"verify: {result['verify']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=500, help="batches per second")
    parser.add_argument("--batch", type=int, default=10, help="entries per batch")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--steady", type=float, default=15, help="seconds of steady state before the deploy")
    parser.add_argument("--versions", default="1.0.0,1.1.0", help="two releases to alternate between")
    parser.add_argument("--out", type=Path, default=RESULTS / "deploy.json")
    args = parser.parse_args(argv)
    state_file = LAB / "lb/state/state.json"
    if not state_file.exists():
        print("bench/deploy.py: the lab is not up (no state.json); run `make lab` first", file=sys.stderr)
        return 2
    state = json.loads(state_file.read_text())
    idle = "green" if state["live"] == "blue" else "blue"
    candidates = [v for v in args.versions.split(",") if v != state["versions"].get(idle)]
    version = candidates[0]
    release.build(version)

    run_dir = LAB / "bench" / time.strftime("deploy-%Y%m%dT%H%M%S")
    load = start_load(run_dir, args.rate, args.batch, args.connections, "bench-deploy")
    try:
        time.sleep(2)  # connections open, schedule settled
        steady_start = time.time()
        time.sleep(args.steady)
        deploy_start = time.time()
        print(f"== deploying {version} to {idle} under {args.rate:g} batches/s", file=sys.stderr, flush=True)
        proc = subprocess.run(
            [str(BIN / "ansible-playbook"), "playbooks/deploy.yml", "-e", f"bluegreen_version={version}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        deploy_end = time.time()
        time.sleep(3)
    finally:
        stop_load(load)
    if proc.returncode != 0:
        print(proc.stdout[-3000:], file=sys.stderr)
        print("bench/deploy.py: the deploy failed; figures not written", file=sys.stderr)
        return 1

    requests = load_requests(run_dir)
    steady = window(requests, steady_start, deploy_start)
    during = window(requests, deploy_start, deploy_end)
    history = [
        json.loads(line) for line in (LAB / "lb/state/history.jsonl").read_text().splitlines() if line.strip()
    ]
    last = history[-1]
    marks = sorted((float(t), stage) for stage, t in last.get("marks", {}).items())
    report = verify.verify([run_dir])
    ratio = round(during["acked_entries_per_s"] / steady["acked_entries_per_s"], 4)
    p99_ratio = (
        round(during["latency_ms"]["p99"] / steady["latency_ms"]["p99"], 2)
        if steady["latency_ms"]["p99"]
        else None
    )
    result = {
        "steady": steady,
        "during_deploy": during,
        "throughput_ratio": ratio,
        "p99_ratio": p99_ratio,
        "deploy_seconds": round(deploy_end - deploy_start, 3),
        "stage_seconds": last.get("durations_s", {}),
        "verify": {k: report[k] for k in ("acked_entries", "failed_requests_total", "lost", "duplicates")},
    }
    print_table(result)
    # from: the color that was live before the deploy (live_color() now answers the new one)
    write_results(args, result, version=version, to=idle, **{"from": state["live"]})
    plot_timeline(
        requests,
        [(at, stage) for at, stage in marks],
        f"deploy {version} to {idle} under {args.rate:g} batches/s x {args.batch}: stages marked",
        args.out.with_suffix(".png"),
    )
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0 if report["failed_requests_total"] == 0 and report["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
