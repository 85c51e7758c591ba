"""What the benchmarks share: the lab's paths, background load, its request records, timeline plots."""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from bluegreen.evidence import write_atomic
from bluegreen.loadgen import percentile

ROOT = Path(__file__).resolve().parents[1]
# the repository's tests/ package holds the one loader of our Ansible modules as Python modules
sys.path.insert(1, str(ROOT))

BIN = Path(sys.executable).parent
LAB = ROOT / ".lab"
RESULTS = ROOT / "bench" / "results"


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}


def write_results(args: argparse.Namespace, doc: dict[str, Any], **parameters: Any) -> None:
    """The benchmark's JSON at args.out: its parameters (args and `parameters`), the machine, then `doc`;
    written atomically."""
    out = {"parameters": vars(args) | {"out": str(args.out)} | parameters, "machine": machine(), **doc}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out, orjson.dumps(out, option=orjson.OPT_INDENT_2, default=str) + b"\n")
    print(f"wrote {args.out}")


def live_color() -> str:
    return json.loads((LAB / "lb/state/state.json").read_text())["live"]


# The generator's own cap on requests in flight: high enough that a latency spike on this small box
# (an ansible process starting beside 1000 req/s) shows up as latency, not as sends the client skipped.
MAX_INFLIGHT = 4096


def start_load(run_dir: Path, rate: float, batch: int, connections: int, service: str) -> subprocess.Popen:
    """`bluegreen loadgen` through the live frontend, open loop, in the background."""
    return subprocess.Popen(
        [
            *(str(BIN / "bluegreen"), "loadgen", "--rate", str(rate), "--batch", str(batch)),
            *("--connections", str(connections), "--out", str(run_dir), "--quiet", "--service", service),
            *("--max-inflight", str(MAX_INFLIGHT)),
        ],
        cwd=ROOT,
    )


def stop_load(load: subprocess.Popen) -> None:
    load.send_signal(signal.SIGINT)
    load.wait(timeout=120)


def load_requests(run_dir: Path) -> list[dict]:
    """The run's request records, in send order."""
    with (run_dir / "requests.ndjson").open() as fh:
        return sorted((json.loads(line) for line in fh if line.strip()), key=lambda r: r["t_start"])


def window(requests: list[dict], start: float, end: float) -> dict[str, Any]:
    """Acked entries/s, requests/s, failures and latency of the requests sent in [start, end)."""
    return pooled(requests, [(start, end)])


def pooled(requests: list[dict], windows: list[tuple[float, float]]) -> dict[str, Any]:
    """The same figures over the requests sent inside any of the windows, their lengths summed."""
    inside = [r for r in requests if any(start <= r["t_start"] < end for start, end in windows)]
    seconds = max(sum(end - start for start, end in windows), 1e-9)
    latencies = sorted(r["latency_s"] for r in inside if r["kind"] == "ok" and r["latency_s"] is not None)
    ms = lambda v: None if v is None else round(v * 1000, 3)  # noqa: E731
    return {
        "seconds": round(seconds, 3),
        "requests": len(inside),
        "requests_per_s": round(len(inside) / seconds, 1),
        "acked_entries_per_s": round(sum(r["count"] for r in inside if r["kind"] == "ok") / seconds, 1),
        "failed": sum(1 for r in inside if r["kind"] != "ok"),
        "latency_ms": {
            "p50": ms(percentile(latencies, 0.5)),
            "p99": ms(percentile(latencies, 0.99)),
            "max": ms(latencies[-1]) if latencies else None,
        },
    }


def plot_timeline(requests: list[dict], marks: list[tuple[float, str]], title: str, path: Path) -> None:
    """Request rate, failures and p99 latency in 100 ms bins, with vertical lines at `marks`."""
    import matplotlib  # noqa: PLC0415 - only the plots need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    if not requests:
        return
    t0 = requests[0]["t_start"]
    bins: dict[int, list[dict]] = {}
    for r in requests:
        bins.setdefault(int((r["t_start"] - t0) * 10), []).append(r)
    xs = sorted(bins)
    seconds = [x / 10 for x in xs]
    ok = [sum(1 for r in bins[x] if r["kind"] == "ok") * 10 for x in xs]
    failed = [sum(1 for r in bins[x] if r["kind"] != "ok") * 10 for x in xs]
    p99 = [
        (percentile(sorted(r["latency_s"] for r in bins[x] if r["latency_s"] is not None), 0.99) or 0) * 1000
        for x in xs
    ]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 6), sharex=True)
    top.plot(seconds, ok, label="answered 200 (req/s)", linewidth=0.8)
    top.plot(seconds, failed, label="failed (req/s)", color="red", linewidth=0.8)
    bottom.plot(seconds, p99, label="p99 latency (ms, 100 ms bins)", color="purple", linewidth=0.8)
    for at, label in marks:
        for ax in (top, bottom):
            ax.axvline(at - t0, color="gray", alpha=0.4, linewidth=0.6)
        if label:
            top.annotate(label, (at - t0, max(ok) if ok else 0), fontsize=7, rotation=90, va="top")
    top.set_title(title)
    top.legend(loc="lower right")
    bottom.legend(loc="upper right")
    bottom.set_xlabel("seconds")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
