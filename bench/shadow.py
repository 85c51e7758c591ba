"""What shadow traffic costs the live path: live latency and throughput with the mirror off vs on.

One `bluegreen loadgen` run sends steady open-loop traffic through the live frontend for the whole
benchmark, while phases alternate: off, on (--percent % of live batches mirrored to the idle color by
HAProxy's Lua mirror, switched with the real `bluegreen_shadow` module, run by `ansible` on the lb),
off, on, ... for --rounds rounds. Each phase is judged on the requests sent in it, leaving out
--settle seconds after each change (an `ansible` process starting beside the load is not the mirror's
cost). Per mode, pooled over its phases: live p50/p99/max latency, requests/s, acked entries/s, failed
requests; per round, the on/off p99 ratio; per on phase, what the mirror did (mirrored, dropped,
errors, mismatches). Lost entries come from the verifier. Figures compare modes measured in one run.
Prints a table, writes bench/results/shadow.json.

    .venv/bin/python bench/shadow.py [--rounds 3] [--phase 10] [--rate 500] [--batch 10] [--percent 10]

Assumes the lab is up (`make lab`) with both colors healthy; leaves shadowing off.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import BIN, LAB, RESULTS, ROOT, load_requests, machine, pooled, start_load, stop_load

from bluegreen import verify

HAPROXY_DIR = LAB / "lb" / "haproxy"
TARGET_P99_RATIO = 1.10


def shadow(state: str, percent: int = 0) -> dict[str, Any]:
    """Run the bluegreen_shadow module on the lb; its result."""
    args = f"socket={HAPROXY_DIR / 'admin.sock'} map={HAPROXY_DIR / 'shadow.map'} state={state}"
    if state == "started":
        args += f" percent={percent}"
    proc = subprocess.run(
        [str(BIN / "ansible"), "lb", "-m", "bluegreen_shadow", "-a", args, "-o"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0 or "=>" not in proc.stdout:
        raise RuntimeError(
            f"bluegreen_shadow state={state} failed: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    return json.loads(proc.stdout.split("=>", 1)[1])


def run(args: argparse.Namespace, run_dir: Path) -> dict[str, Any]:
    shadow("stopped")
    load = start_load(run_dir, args.rate, args.batch, args.connections, "bench-shadow")
    phases: list[dict[str, Any]] = []
    try:
        time.sleep(args.settle)
        for round_no in range(args.rounds):
            for mode in ("off", "on"):
                began = time.time()
                result = shadow("started", args.percent) if mode == "on" else shadow("stopped")
                changed = time.time()
                time.sleep(args.settle + args.phase)
                ended = time.time()
                phase = {"round": round_no, "mode": mode, "command_s": round(changed - began, 3)}
                phase["window"] = (changed + args.settle, ended)
                if mode == "off" and phases:
                    phases[-1]["mirror"] = result["shadow"]  # the counters of the on phase just ended
                phases.append(phase)
                print(f"  round {round_no + 1}/{args.rounds} {mode}", file=sys.stderr, flush=True)
        phases[-1]["mirror"] = shadow("stopped")["shadow"]
    finally:
        stop_load(load)
        shadow("stopped")
    requests = load_requests(run_dir)
    for phase in phases:
        phase["figures"] = pooled(requests, [phase["window"]])
    modes = {
        mode: pooled(requests, [p["window"] for p in phases if p["mode"] == mode]) for mode in ("off", "on")
    }
    rounds = []
    for round_no in range(args.rounds):
        off, on = (
            next(p for p in phases if p["round"] == round_no and p["mode"] == m) for m in ("off", "on")
        )
        p99_off, p99_on = off["figures"]["latency_ms"]["p99"], on["figures"]["latency_ms"]["p99"]
        rounds.append(
            {
                "round": round_no,
                "p99_off_ms": p99_off,
                "p99_on_ms": p99_on,
                "p99_ratio": round(p99_on / p99_off, 3) if p99_off and p99_on else None,
                "mirror": {
                    k: on.get("mirror", {}).get(k)
                    for k in (
                        "sampled",
                        "mirrored",
                        "dropped_full",
                        "skipped_incomplete",
                        "errors",
                        "mismatched",
                    )
                },
            }
        )
    report = verify.verify([run_dir])
    p99 = {m: modes[m]["latency_ms"]["p99"] for m in modes}
    return {
        "modes": modes,
        "p99_ratio_on_off": round(p99["on"] / p99["off"], 3) if p99["off"] and p99["on"] else None,
        "rounds": rounds,
        "phases": phases,
        "failed_requests_total": report["failed_requests_total"],
        "lost": report["lost"],
        "duplicates": report["duplicates"],
        "acked_entries": report["acked_entries"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3, help="off/on rounds")
    parser.add_argument("--phase", type=float, default=10, help="seconds judged per phase")
    parser.add_argument("--settle", type=float, default=1.5, help="seconds left out after each change")
    parser.add_argument("--rate", type=float, default=500, help="batches per second")
    parser.add_argument("--batch", type=int, default=10, help="entries per batch")
    parser.add_argument("--connections", type=int, default=16, help="keep-alive connections")
    parser.add_argument("--percent", type=int, default=10, help="shadow percentage while on")
    parser.add_argument("--out", type=Path, default=RESULTS / "shadow.json")
    args = parser.parse_args(argv)
    if not (HAPROXY_DIR / "shadow.map").exists():
        print(
            "bench/shadow.py: the lab is not up with the shadow mirror; run `make lab` first", file=sys.stderr
        )
        return 2

    run_dir = LAB / "bench" / time.strftime("shadow-%Y%m%dT%H%M%S")
    print(
        f"== shadow off vs on ({args.percent} %): {args.rounds} rounds of {args.phase:g} s each, "
        f"{args.rate:g} batches/s of {args.batch}",
        file=sys.stderr,
        flush=True,
    )
    result = run(args, run_dir)

    print(
        f"{'mode':<5} {'req/s':>7} {'entries/s':>10} {'failed':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
    )
    for mode, f in result["modes"].items():
        lat = f["latency_ms"]
        print(
            f"{mode:<5} {f['requests_per_s']:>7} {f['acked_entries_per_s']:>10} {f['failed']:>7} "
            f"{lat['p50'] or 0:>8.2f} {lat['p99'] or 0:>8.2f} {lat['max'] or 0:>8.2f}"
        )
    print(
        f"{'round':<5} {'p99 off':>8} {'p99 on':>8} {'ratio':>6} {'mirrored':>9} {'dropped':>8} {'errors':>7}"
    )
    for r in result["rounds"]:
        m = r["mirror"]
        print(
            f"{r['round'] + 1:<5} {r['p99_off_ms'] or 0:>8.2f} {r['p99_on_ms'] or 0:>8.2f} "
            f"{r['p99_ratio'] or 0:>6.3f} {m['mirrored'] or 0:>9} {m['dropped_full'] or 0:>8} "
            f"{m['errors'] or 0:>7}"
        )
    ratio = result["p99_ratio_on_off"]
    met = ratio is not None and ratio <= TARGET_P99_RATIO
    print(
        f"live p99 on/off: {ratio} (target <= {TARGET_P99_RATIO}: {'met' if met else 'NOT met'}); "
        f"failed {result['failed_requests_total']}, lost {result['lost']}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "parameters": vars(args) | {"out": str(args.out)},
                "machine": machine(),
                "target_p99_ratio": TARGET_P99_RATIO,
                "target_met": met,
                "results": result,
            },
            indent=2,
            default=str,
        )
    )
    print(f"wrote {args.out}")
    return 0 if result["failed_requests_total"] == 0 and result["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
