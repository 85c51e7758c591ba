"""`make demo`: a full blue/green upgrade of the one-machine lab under live log traffic.

Builds releases, brings up a fresh lab (blue live), starts steady sequence-numbered traffic through
the live frontend, deploys a new release to green, rolls back, deploys again, stops the traffic and
lets the verifier check every acked entry. Exit 0 only with every step ok, 0 failed and 0 lost.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bluegreen import release, verify
from bluegreen.progress import BIN, REPO, describe, run_playbook

LOGS = REPO / ".lab" / "demo" / "logs"


@dataclass
class Step:
    name: str
    seconds: float
    ok: bool


def say(text: str = "") -> None:
    print(text, flush=True)


def show(event: dict, elapsed: float) -> None:
    text = describe(event)
    if text:
        say(f"  {elapsed:6.1f}s  {text}")


def playbook(name: str, *args: str, title: str) -> Step:
    """Run a playbook, printing its progress events (stages, failed checks, outcome) as they happen."""
    say(f"\n== {title}")
    result = run_playbook(name, *args, log_dir=LOGS, on_event=show)
    say(f"  {result.seconds:6.1f}s  {'done' if result.ok else 'FAILED'}")
    if not result.ok:
        say(f"  {result.failure_text()}\n  Ansible's output: {result.log}")
    return Step(title, result.seconds, result.ok)


def start_load(out: Path, rate: int, batch: int) -> subprocess.Popen:
    return subprocess.Popen(
        [
            str(BIN / "bluegreen"),
            "loadgen",
            "--rate",
            str(rate),
            "--batch",
            str(batch),
            "--out",
            str(out),
            "--quiet",
        ],
        cwd=REPO,
    )


def summary(steps: list[Step], report: dict, load_seconds: float, live: str) -> list[str]:
    lines = ["", "== Summary", "  step                                         seconds  result"]
    lines += [f"  {s.name:<44} {s.seconds:7.1f}  {'ok' if s.ok else 'FAILED'}" for s in steps]
    failed_kinds = ", ".join(f"{k} {v['requests']}" for k, v in report["failed_requests"].items()) or "none"
    lines += [
        "",
        f"  live traffic          {load_seconds:.0f} s through 127.0.0.1:8080, across every step above",
        f"  entries sent          {report['sent_entries']}",
        f"  entries acked (200)   {report['acked_entries']}",
        f"  failed requests       {report['failed_requests_total']}  ({failed_kinds})",
        f"  lost entries          {report['lost']}",
        f"  duplicate entries     {report['duplicates']}",
        "  entries by color      " + ", ".join(f"{k} {v}" for k, v in sorted(report["by_color"].items())),
        "  entries by version    " + ", ".join(f"{k} {v}" for k, v in sorted(report["by_version"].items())),
        f"  live color now        {live}",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bluegreen.demo", description=__doc__)
    parser.add_argument("--from-version", default="1.0.0")
    parser.add_argument("--to-version", default="1.1.0")
    parser.add_argument("--rate", type=int, default=200, help="batches per second of live traffic")
    parser.add_argument("--batch", type=int, default=10, help="entries per batch")
    args = parser.parse_args(argv)

    say("bluegreen demo: a blue/green upgrade of logplatform under live log traffic, on this machine")
    say(f"\n== Build releases {args.from_version} and {args.to_version} into .lab/releases")
    for version in (args.from_version, args.to_version):
        release.build(version)
        say(f"  release {version} ready")

    steps = [playbook("teardown.yml", "-e", "bluegreen_purge=true", title="Clear any earlier lab")]
    steps.append(
        playbook(
            "site.yml", "-e", f"bluegreen_initial_version={args.from_version}", title="Fresh lab: blue live"
        )
    )
    if not steps[-1].ok:
        return 1

    out = REPO / ".lab" / "demo" / time.strftime("%Y%m%dT%H%M%S")
    out.mkdir(parents=True)
    say(f"\n== Live traffic: {args.rate} batches/s x {args.batch} entries through 127.0.0.1:8080 ({out})")
    load = start_load(out / "load", args.rate, args.batch)
    load_started = time.monotonic()
    try:
        time.sleep(5)
        deploy = ["-e", f"bluegreen_version={args.to_version}"]
        steps.append(playbook("deploy.yml", *deploy, title=f"Deploy {args.to_version} to green"))
        steps.append(playbook("rollback.yml", title="Roll back to blue"))
        steps.append(playbook("deploy.yml", *deploy, title=f"Deploy {args.to_version} to green again"))
        time.sleep(5)
    finally:
        load.send_signal(signal.SIGINT)
        load.wait(timeout=60)
    load_seconds = time.monotonic() - load_started
    say("\n== Verify: every acked entry must be in a node's sink")
    report = verify.verify([out / "load"])
    live = json.loads((REPO / ".lab" / "lb" / "state" / "state.json").read_text())["live"]
    for line in summary(steps, report, load_seconds, live):
        say(line)
    good = all(s.ok for s in steps) and report["failed_requests_total"] == 0 and report["lost"] == 0
    say(f"\n{'PASS' if good else 'FAIL'}: zero-downtime upgrade {'held' if good else 'did not hold'}.")
    say("The lab keeps running: `make status`, `make teardown` to stop it.")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
