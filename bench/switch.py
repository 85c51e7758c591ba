"""Switching live traffic under steady load: bluegreen's atomic switch vs an HAProxy reload vs a restart.

For each method, one `bluegreen loadgen` run sends steady open-loop traffic through the live frontend
while K cycles switch to the idle color and back:

  atomic   bluegreen's switch: the real `bluegreen_switch` module, run by `ansible` on the lb
           (map file and state.json first, then one runtime-API `set map`)
  reload   what operators usually do: write the new color into the map file, reload HAProxy
           (SIGUSR2 to the master: new workers read the changed config)
  restart  the common baseline: write the map file, stop and start HAProxy

Per switch: failed requests by kind, time from the command to the first request served by the new
color, time to the last request served by the old color, p50/p99/max latency of the requests sent
in the second around the switch. Per method: lost entries (the verifier). Figures compare methods
measured in the same run. Prints a table, writes bench/results/switch.json and switch-<method>.png.

    .venv/bin/python bench/switch.py [--cycles 20] [--rate 1000] [--batch 1] [--methods atomic,reload,restart]

Assumes the lab is up (`make lab`) with both colors healthy; leaves the live color as it found it.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    BIN,
    LAB,
    RESULTS,
    ROOT,
    live_color,
    load_requests,
    percentile,
    plot_timeline,
    start_load,
    stop_load,
    write_results,
)

from bluegreen import verify

HAPROXY_DIR = LAB / "lb" / "haproxy"
SUPERVISORCTL = [
    str(LAB / "lb/supervisor/venv/bin/supervisorctl"),
    "-c",
    str(LAB / "lb/supervisor/supervisord.conf"),
]
METHODS = ("atomic", "reload", "restart")


def other(color: str) -> str:
    return "green" if color == "blue" else "blue"


def write_map(color: str) -> None:
    path = HAPROXY_DIR / "live.map"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"live {color}\n")
    tmp.replace(path)


def wait_for_socket(timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.connect(str(HAPROXY_DIR / "admin.sock"))
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("HAProxy's runtime socket did not come back")


def switch(method: str, color: str) -> dict[str, Any]:
    """Make `color` live with `method`; returns command timing (and the module's own switch time)."""
    started = time.time()
    result: dict[str, Any] = {}
    if method == "atomic":
        args = (
            f"socket={HAPROXY_DIR / 'admin.sock'} map={HAPROXY_DIR / 'live.map'} "
            f"state_dir={LAB / 'lb/state'} color={color}"
        )
        # the module's result as JSON, one file per host (ansible --tree), not parsed out of stdout
        with tempfile.TemporaryDirectory() as tree:
            subprocess.run(
                [str(BIN / "ansible"), "lb", "-m", "bluegreen_switch", "-a", args, "--tree", tree],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            )
            (host_result,) = Path(tree).iterdir()
            out = json.loads(host_result.read_text())
        result["runtime_ms"] = out["runtime_ms"]
    elif method == "reload":
        write_map(color)
        subprocess.run([*SUPERVISORCTL, "signal", "USR2", "haproxy"], check=True, capture_output=True)
    elif method == "restart":
        write_map(color)
        subprocess.run([*SUPERVISORCTL, "restart", "haproxy"], check=True, capture_output=True)
        wait_for_socket()
    result.update(started=started, ended=time.time())
    return result


def color_of(request: dict) -> str | None:
    node = request.get("served_by") or ""
    return node.split("-", 1)[0] if node.split("-", 1)[0] in ("blue", "green") else None


def analyse_switch(event: dict, requests: list[dict], window_end: float) -> dict[str, Any]:
    t0, new, old = event["started"], event["to"], event["from"]
    after = [r for r in requests if t0 <= r["t_start"] < window_end]
    served_new = [r["t_start"] for r in after if color_of(r) == new]
    served_old = [r["t_start"] for r in requests if color_of(r) == old and r["t_start"] < window_end]
    around = sorted(
        r["latency_s"] for r in requests if abs(r["t_start"] - t0) <= 0.5 and r["latency_s"] is not None
    )
    failed: dict[str, int] = {}
    for r in requests:
        if t0 - 0.5 <= r["t_start"] < window_end and r["kind"] != "ok":
            failed[r["kind"]] = failed.get(r["kind"], 0) + 1
    ms = lambda v: None if v is None else round(v * 1000, 3)  # noqa: E731
    return {
        **event,
        "failed": failed,
        "failed_total": sum(failed.values()),
        "to_first_new_ms": ms(min(served_new) - t0) if served_new else None,
        "to_last_old_ms": ms(max(served_old) - t0) if served_old else None,
        "command_ms": ms(event["ended"] - t0),
        "latency_around_ms": {
            "p50": ms(percentile(around, 0.5)),
            "p99": ms(percentile(around, 0.99)),
            "max": ms(around[-1]) if around else None,
        },
    }


def run_method(method: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    run_dir = workdir / method
    start_color = live_color()
    load = start_load(run_dir, args.rate, args.batch, args.connections, f"bench-switch-{method}")
    events = []
    try:
        time.sleep(args.settle)
        current = start_color
        for cycle in range(args.cycles):
            for target in (other(current), current):
                before = current if target != current else other(current)
                event = switch(method, target)
                events.append({"cycle": cycle, "from": before, "to": target, **event})
                time.sleep(args.settle)
            print(f"  {method:<8} cycle {cycle + 1}/{args.cycles}", file=sys.stderr, flush=True)
    finally:
        stop_load(load)
        if method != "atomic" and live_color() != start_color:
            write_map(start_color)
    requests = load_requests(run_dir)
    switches = [
        analyse_switch(e, requests, events[i + 1]["started"] if i + 1 < len(events) else float("inf"))
        for i, e in enumerate(events)
    ]
    report = verify.verify([run_dir])
    return {
        "method": method,
        "switches": switches,
        "requests": len(requests),
        "failed_requests": report["failed_requests"],
        "failed_requests_total": report["failed_requests_total"],
        "acked_entries": report["acked_entries"],
        "lost": report["lost"],
        "duplicates": report["duplicates"],
        "requests_list": requests,
    }


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    def dist(key: str, direction: str | None = None) -> dict[str, float | None]:
        values = sorted(
            s[key]
            for s in result["switches"]
            if s[key] is not None and (direction is None or s["to"] == direction)
        )
        return {"p50": percentile(values, 0.5), "max": values[-1] if values else None}

    failed_per_switch = [s["failed_total"] for s in result["switches"]]
    return {
        "switches": len(result["switches"]),
        "failed_requests_total": result["failed_requests_total"],
        "failed_per_switch_mean": round(sum(failed_per_switch) / len(failed_per_switch), 2)
        if failed_per_switch
        else 0,
        "lost": result["lost"],
        "to_first_new_ms": {color: dist("to_first_new_ms", color) for color in ("blue", "green")},
        "to_last_old_ms": dist("to_last_old_ms"),
        "command_ms": dist("command_ms"),
        "p99_around_switch_ms_max": max(
            (s["latency_around_ms"]["p99"] or 0 for s in result["switches"]), default=None
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cycles", type=int, default=20, help="switch-and-back cycles per method")
    parser.add_argument("--rate", type=float, default=1000, help="batches per second")
    parser.add_argument("--batch", type=int, default=1, help="entries per batch")
    parser.add_argument("--connections", type=int, default=16, help="keep-alive connections")
    parser.add_argument("--settle", type=float, default=1.5, help="seconds of load between switches")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--out", type=Path, default=RESULTS / "switch.json")
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    unknown = set(methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown method(s) {sorted(unknown)}; choose from {', '.join(METHODS)}")
    if not (HAPROXY_DIR / "admin.sock").exists():
        print(
            "bench/switch.py: the lab is not up (no HAProxy runtime socket); run `make lab` first",
            file=sys.stderr,
        )
        return 2

    workdir = LAB / "bench" / time.strftime("switch-%Y%m%dT%H%M%S")
    results = {}
    for method in methods:
        print(f"== {method}: {args.cycles} cycles at {args.rate:g} batches/s", file=sys.stderr, flush=True)
        result = run_method(method, args, workdir)
        plot_timeline(
            result.pop("requests_list"),
            [(s["started"], "") for s in result["switches"]],
            f"{method}: {len(result['switches'])} switches (gray lines) under steady load",
            args.out.parent / f"switch-{method}.png",
        )
        results[method] = {"summary": summarize(result), **result}

    header = (
        f"{'method':<8} {'switches':>8} {'failed':>7} {'fail/sw':>7} {'lost':>5} "
        f"{'first new p50/max ms':>21} {'last old max ms':>16} {'p99 around max ms':>18}"
    )
    print(header)
    for method, r in results.items():
        s = r["summary"]
        first = s["to_first_new_ms"]
        p50 = [first[c]["p50"] for c in first if first[c]["p50"] is not None]
        mx = [first[c]["max"] for c in first if first[c]["max"] is not None]
        print(
            f"{method:<8} {s['switches']:>8} {s['failed_requests_total']:>7} "
            f"{s['failed_per_switch_mean']:>7} "
            f"{s['lost']:>5} {(max(p50) if p50 else 0):>10.1f}/{(max(mx) if mx else 0):<10.1f} "
            f"{(s['to_last_old_ms']['max'] or 0):>16.1f} {(s['p99_around_switch_ms_max'] or 0):>18.1f}"
        )
    write_results(args, {"results": results})
    print("and switch-<method>.png beside it")
    atomic = results.get("atomic", {}).get("summary", {})
    return 0 if not atomic or (atomic["failed_requests_total"] == 0 and atomic["lost"] == 0) else 1


if __name__ == "__main__":
    sys.exit(main())
