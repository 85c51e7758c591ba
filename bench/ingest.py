"""Ingest throughput and latency, straight at one node and through the load balancer, in one run.

For each batch size, a closed-loop run of `bluegreen loadgen` (the same code that produces the
zero-loss evidence: --concurrency workers, each sends its next batch when the previous one is
answered) goes first straight at one node, then through the lb frontend. Figures: acked entries/s,
requests/s and latency p50/p90/p99/max; then the lb/direct ratios, measured in the same run.

Prints a table and writes bench/results/ingest.json (figures, parameters, machine). Assumes the lab is
up (`make lab`); if a URL does not answer it says so and exits 2. Exit 1 when a run had failed
requests (the figures are then suspect), else 0.

    .venv/bin/python bench/ingest.py [--batches 100,1000] [--concurrency 16] [--duration 10]
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bluegreen.evidence import write_atomic
from bluegreen.loadgen import LoadgenConfig, LoadgenSummary, run_loadgen

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIRECT = "http://127.0.0.1:9101/v1/logs"
DEFAULT_LB = "http://127.0.0.1:8080/v1/logs"
DEFAULT_OUT = ROOT / "bench" / "results" / "ingest.json"


def probe(url: str, timeout: float = 3.0) -> str | None:
    """None when `url` accepts a one-entry batch with 200; otherwise what went wrong."""
    entry = {
        "ts": time.time(),
        "level": "info",
        "service": "bench",
        "message": "bench/ingest.py probe",
        "id": f"bench-probe-{secrets.token_hex(4)}",
    }
    req = urllib.request.Request(  # noqa: S310 - the URL is the operator's http(s) endpoint
        url, data=orjson.dumps([entry]), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            if resp.status == 200:
                return None
            return f"answered HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return f"answered HTTP {exc.code} ({exc.read()[:120].decode('utf-8', 'replace').strip()!r})"
    except (urllib.error.URLError, OSError) as exc:
        return f"does not answer ({getattr(exc, 'reason', exc)})"


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "aiohttp": aiohttp.__version__,
        "orjson": orjson.__version__,
    }
    try:
        import uvloop  # noqa: PLC0415

        info["uvloop"] = uvloop.__version__
    except ImportError:
        info["uvloop"] = None
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["mem_total_mib"] = int(line.split()[1]) // 1024
                break
    git = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    )
    info["git_commit"] = git.stdout.strip() or None
    return info


def measure(target: str, url: str, batch: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    tag = secrets.token_hex(3)
    cfg = LoadgenConfig(
        out=work / f"{target}-b{batch}-{tag}",
        urls=(url,),
        batch=batch,
        closed_loop=True,
        concurrency=args.concurrency,
        connections=args.connections or args.concurrency,
        duration=args.duration,
        timeout=args.timeout,
        run_id=f"bench-{target}-b{batch}-{tag}",
        quiet=True,
    )
    s: LoadgenSummary = run_loadgen(cfg)
    lat = s.latency_s
    return {
        "target": target,
        "url": url,
        "batch": batch,
        "concurrency": args.concurrency,
        "duration_s": round(s.elapsed_s, 3),
        "requests": s.requests,
        "acked_entries": s.acked_entries,
        "entries_per_s": round(s.throughput["acked_entries_per_s"], 1),
        "requests_per_s": round(s.throughput["requests_per_s"], 1),
        "latency_ms": {
            k: None if lat[k] is None else round(lat[k] * 1000, 3) for k in ("p50", "p90", "p99", "max")
        },
        "failed_requests": s.failed_requests,
        "served_by": s.served_by,
        "run_dir": str(cfg.out) if args.keep_runs else None,
        "run_id": s.run_id,
    }


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def print_table(results: list[dict[str, Any]], ratios: list[dict[str, Any]]) -> None:
    head = f"{'target':<8}{'batch':>7}{'conc':>6}{'entries/s':>12}{'req/s':>9}"
    head += f"{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}  failed"
    print(head)
    print("-" * len(head))
    for r in results:
        lat = r["latency_ms"]
        failed = sum(v["requests"] for v in r["failed_requests"].values())
        print(
            f"{r['target']:<8}{r['batch']:>7}{r['concurrency']:>6}{r['entries_per_s']:>12.0f}{r['requests_per_s']:>9.0f}"
            f"{lat['p50'] or 0:>9.2f}{lat['p99'] or 0:>9.2f}{lat['max'] or 0:>9.2f}  {failed}"
        )
    print()
    for q in ratios:
        print(
            f"batch {q['batch']}: lb/direct throughput x{q['lb_over_direct_throughput']}, "
            f"p50 x{q['lb_over_direct_p50']}, p99 x{q['lb_over_direct_p99']}"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--direct-url", default=DEFAULT_DIRECT, help="one node (default: %(default)s)")
    p.add_argument("--lb-url", default=DEFAULT_LB, help="the lb frontend (default: %(default)s)")
    p.add_argument(
        "--batches", default="100,1000", help="entries per batch, comma-separated (default: %(default)s)"
    )
    p.add_argument("--concurrency", type=int, default=16, help="closed-loop workers (default: %(default)s)")
    p.add_argument(
        "--connections", type=int, default=0, help="keep-alive connections (default: = concurrency)"
    )
    p.add_argument(
        "--duration", type=float, default=10.0, help="seconds per measurement (default: %(default)s)"
    )
    p.add_argument(
        "--warmup", type=float, default=2.0, help="unmeasured seconds per target first (default: %(default)s)"
    )
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per request (default: %(default)s)")
    p.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="JSON results (default: bench/results/ingest.json)"
    )
    p.add_argument("--keep-runs", type=Path, default=None, help="keep the loadgen run directories here")
    args = p.parse_args(argv)
    try:
        batches = [int(b) for b in args.batches.split(",") if b.strip()]
    except ValueError:
        p.error(f"--batches {args.batches!r}: expected comma-separated integers")
    targets = {"direct": args.direct_url, "lb": args.lb_url}

    down = {name: problem for name, url in targets.items() if (problem := probe(url))}
    if down:
        for name, problem in down.items():
            print(f"bench/ingest.py: {name} URL {targets[name]} {problem}", file=sys.stderr)
        print(
            "The lab does not seem to be up: run `make lab` first (or pass --direct-url/--lb-url).",
            file=sys.stderr,
        )
        return 2

    started = time.time()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        work = args.keep_runs or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.warmup > 0:
            warm = argparse.Namespace(**{**vars(args), "duration": args.warmup, "keep_runs": None})
            for name, url in targets.items():
                measure(name, url, batches[0], warm, Path(tmp) / "warmup")
        for batch in batches:  # direct and lb back to back per batch size, so drift hits both alike
            for name, url in targets.items():
                print(
                    f"measuring {name} batch {batch} for {args.duration:g}s ...", file=sys.stderr, flush=True
                )
                results.append(measure(name, url, batch, args, work))

    ratios = []
    for batch in batches:
        d, lb = (
            next(r for r in results if r["target"] == t and r["batch"] == batch) for t in ("direct", "lb")
        )
        ratios.append(
            {
                "batch": batch,
                "lb_over_direct_throughput": ratio(lb["entries_per_s"], d["entries_per_s"]),
                "lb_over_direct_p50": ratio(lb["latency_ms"]["p50"], d["latency_ms"]["p50"]),
                "lb_over_direct_p99": ratio(lb["latency_ms"]["p99"], d["latency_ms"]["p99"]),
            }
        )
    print_table(results, ratios)
    doc = {
        "benchmark": "ingest",
        "started": started,
        "ended": time.time(),
        "parameters": {
            "direct_url": args.direct_url,
            "lb_url": args.lb_url,
            "batches": batches,
            "concurrency": args.concurrency,
            "connections": args.connections or args.concurrency,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "timeout_s": args.timeout,
            "mode": "closed-loop (bluegreen loadgen --closed-loop)",
        },
        "machine": machine_info(),
        "note": "the load generator, the lb and the nodes share this machine's CPUs: compare ratios",
        "results": results,
        "ratios": ratios,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out, orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
    print(f"\nwritten {args.out}")
    failed = sum(v["requests"] for r in results for v in r["failed_requests"].values())
    if failed:
        print(f"bench/ingest.py: {failed} requests failed during the measurements", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
