"""The controller's own speed: wall time of each operator command on the local lab, and how long after
the command traffic really moved.

From one run, in this order:

  release      `bluegreen release` of the new version (rebuilt: the controller's one build per release)
  fresh site   `playbooks/site.yml` on a purged lab (the release store is kept)
  no-op        an `ansible-playbook` that only pings the lb: the floor any playbook pays on this box
  deploy new   `playbooks/deploy.yml` of a release the idle nodes never had
  deploy again `playbooks/deploy.yml` of a release already on the idle nodes (the one they run)
  switch       `playbooks/switch.yml` to the idle color
  rollback     `playbooks/rollback.yml`
  auto rollback `playbooks/deploy.yml` of a release that starts answering 500 after the switch (TEST-ONLY
               fault): from its first 5xx on the live frontend to the first answer of the old color

Per command: wall time, the stage durations the run recorded in history.jsonl, and "command ->
traffic moved": a probe on the live frontend (127.0.0.1:8080) reads the X-Bluegreen-Color header of
an answer every few milliseconds; the figure is the first answer from the new color, counted from
the start of the command. Prints a table, writes bench/results/control.json.

    .venv/bin/python bench/control.py [--versions 1.0.0,1.1.0] [--watch-seconds 10]

Tears the lab down (purge) first and leaves it up, live color as the rollback left it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from common import BIN, LAB, RESULTS, ROOT, live_color, write_results

from bluegreen import release

NOOP_PLAYBOOK = """\
- name: Nothing but a ping of the lb
  hosts: lb
  gather_facts: false
  tasks:
    - name: Ping
      ansible.builtin.ping:
"""


class ColorProbe:
    """GET /health/live through the live frontend in a loop; remembers when each color answered."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8080, interval: float = 0.005) -> None:
        self.host, self.port, self.interval = host, port, interval
        self.samples: list[tuple[float, str | None]] = []
        self.statuses: list[tuple[float, int | None, str | None]] = []  # (sent at, status, color)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ColorProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def request(self, conn: http.client.HTTPConnection) -> http.client.HTTPResponse:
        conn.request("GET", "/health/live")
        return conn.getresponse()

    def _run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            color, status, sent = None, None, time.time()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(self.host, self.port, timeout=2)
                response = self.request(conn)
                response.read()
                color, status = response.getheader("X-Bluegreen-Color"), response.status
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                conn = None
            self.samples.append((sent, color))
            self.statuses.append((sent, status, color))
            time.sleep(self.interval)

    def first(self, color: str, since: float) -> float | None:
        """Seconds from `since` to the first answer from `color` sent after it."""
        for at, seen in list(self.samples):
            if at >= since and seen == color:
                return round(at - since, 3)
        return None


class IngestProbe(ColorProbe):
    """POSTs one log entry through the live frontend in a loop: sees the 5xx a failing release answers."""

    def request(self, conn: http.client.HTTPConnection) -> http.client.HTTPResponse:
        entry = {"ts": time.time(), "level": "info", "service": "bench-control", "message": "probe"}
        conn.request(
            "POST", "/v1/logs", body=json.dumps([entry]), headers={"Content-Type": "application/json"}
        )
        return conn.getresponse()

    def errors_until_back(self, old: str, since: float) -> dict[str, Any]:
        """From the first 5xx after `since` to the first 200 of the old color after it."""
        answers = [a for a in list(self.statuses) if a[0] >= since]
        first_error = next((a for a in answers if a[1] is not None and a[1] >= 500), None)
        if first_error is None:
            return {"errors": 0, "first_5xx_to_old_color_s": None}
        back = next((a for a in answers if a[0] > first_error[0] and a[1] == 200 and a[2] == old), None)
        errors = sum(1 for a in answers if a[1] is not None and a[1] >= 500)
        return {
            "errors": errors,
            "first_5xx_to_old_color_s": None if back is None else round(back[0] - first_error[0], 3),
        }


def state() -> dict[str, Any]:
    return json.loads((LAB / "lb/state/state.json").read_text())


def idle_color() -> str:
    return "green" if live_color() == "blue" else "blue"


def last_history() -> dict[str, Any]:
    lines = (LAB / "lb/state/history.jsonl").read_text().splitlines()
    return json.loads(lines[-1]) if lines else {}


def playbook(name: str, *extra: str) -> tuple[float, subprocess.CompletedProcess]:
    started = time.time()
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), name, *extra], cwd=ROOT, capture_output=True, text=True, check=False
    )
    return started, proc


def timed(
    label: str,
    name: str,
    *extra: str,
    probe: ColorProbe | None = None,
    to: str | None = None,
    expect_failure: bool = False,
) -> dict:
    print(f"== {label}: ansible-playbook {name} {' '.join(extra)}", file=sys.stderr, flush=True)
    history = LAB / "lb/state/history.jsonl"
    history_before = history.stat().st_size if history.exists() else 0
    started, proc = playbook(name, *extra)
    wall = round(time.time() - started, 3)
    if (proc.returncode != 0) != expect_failure:
        print(proc.stdout[-4000:] + proc.stderr[-2000:], file=sys.stderr)
        raise SystemExit(f"bench/control.py: {label} failed (exit {proc.returncode}); figures not written")
    result: dict[str, Any] = {"command": f"ansible-playbook {name} {' '.join(extra)}".strip(), "wall_s": wall}
    if history.exists() and history.stat().st_size > history_before:
        result["stage_s"] = last_history().get("durations_s", {})
    if probe is not None and to is not None:
        result["to"] = to
        result["traffic_moved_s"] = probe.first(to, started)
    return result


def print_table(results: dict[str, dict]) -> None:
    print(f"{'command':<14} {'wall s':>8} {'-> traffic moved s':>19}  stages (s)")
    for label, r in results.items():
        moved = r.get("first_5xx_to_old_color_s", r.get("traffic_moved_s"))
        stages = ", ".join(f"{k} {v}" for k, v in r.get("stage_s", {}).items())
        print(f"{label:<14} {r['wall_s']:>8.1f} {'' if moved is None else f'{moved:.2f}':>19}  {stages}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--versions", default="1.0.0,1.1.0", help="the lab's initial release, then the one to deploy"
    )
    parser.add_argument("--watch-seconds", type=int, default=10, help="the deploy's watch window (the lab's)")
    parser.add_argument("--out", type=Path, default=RESULTS / "control.json")
    args = parser.parse_args(argv)
    initial, new = args.versions.split(",")
    results: dict[str, dict] = {}
    watch = ["-e", f"bluegreen_watch_seconds={args.watch_seconds}"]

    print("== tearing the lab down (purge)", file=sys.stderr, flush=True)
    subprocess.run(
        [str(BIN / "ansible-playbook"), "playbooks/teardown.yml", "-e", "bluegreen_purge=true"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    release.build(initial)
    started = time.time()
    release.build(new, force=True)
    results["release"] = {
        "command": f"bluegreen release {new} --force",
        "wall_s": round(time.time() - started, 3),
    }

    results["fresh site"] = timed(
        "fresh site", "playbooks/site.yml", "-e", f"bluegreen_initial_version={initial}"
    )
    noop = LAB / "bench" / "noop.yml"
    noop.parent.mkdir(parents=True, exist_ok=True)
    noop.write_text(NOOP_PLAYBOOK)
    results["no-op"] = timed("no-op", str(noop), "-i", "inventories/local")

    with ColorProbe() as probe:
        time.sleep(0.5)

        def deploy(label: str, version: str) -> dict:
            to = idle_color()
            extra = ("-e", f"bluegreen_version={version}", *watch)
            return timed(label, "playbooks/deploy.yml", *extra, probe=probe, to=to)

        results["deploy new"] = deploy("deploy new", new)
        # the idle color now runs `initial`, which it has had since the site: nothing to install
        results["deploy again"] = deploy("deploy again", state()["versions"][idle_color()])
        to = idle_color()
        results["switch"] = timed(
            "switch", "playbooks/switch.yml", "-e", f"bluegreen_color={to}", probe=probe, to=to
        )
        previous = state()["previous"]
        results["rollback"] = timed("rollback", "playbooks/rollback.yml", probe=probe, to=previous)
        probe_samples = len(probe.samples)
        probe_failed = sum(1 for _, color in probe.samples if color is None)

    # a release that fails after the switch: its 5xx end when traffic is back on the old color
    with IngestProbe(interval=0.02) as ingest:
        old = live_color()
        fault = json.dumps({"logplatform_fault": {"error_rate": 1.0, "error_after_requests": 400}})
        started = time.time()
        extra = ("-e", f"bluegreen_version={new}", "-e", fault, "-e", "bluegreen_watch_seconds=20")
        results["auto rollback"] = timed(
            "auto rollback", "playbooks/deploy.yml", *extra, probe=ingest, to=old, expect_failure=True
        )
        results["auto rollback"].update(ingest.errors_until_back(old, started))

    print_table(results)
    print(f"probe: {probe_samples} answers, {probe_failed} without a color (failed)")
    write_results(
        args,
        {"commands": results, "probe": {"answers": probe_samples, "failed": probe_failed}},
        initial=initial,
        new=new,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
