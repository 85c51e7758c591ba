"""Shadow traffic under live load on the one-machine lab (whichever color is live): the controller's
shadow_start.yml / shadow_stop.yml turn HAProxy's mirror on and off while `bluegreen loadgen` sends
steady traffic through the live frontend."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import orjson

from tests.conftest import LAB, PlaybookRun, run_playbook
from tests.integration.lab import HAPROXY_DIR, Loadgen, runtime, sink_lines, state

PERCENT = 10
SHADOW_SECONDS = 12
RATE, BATCH = 200, 10


def colors() -> tuple[str, str]:
    """(live, idle) as state.json has them."""
    live = state()["live"]
    return live, "green" if live == "blue" else "blue"


def drive(action: str, out: Path | None = None) -> PlaybookRun:
    """tests/integration/playbooks/shadow.yml: the task files, run on the idle hosts like validate does."""
    extra = ["-e", f"bluegreen_shadow_action={action}", "-e", f"bluegreen_shadow_hosts={colors()[1]}"]
    # the lab's folder is found from playbook_dir; this playbook is not in playbooks/
    extra += ["-e", f"bluegreen_shadow_percent={PERCENT}", "-e", f"bluegreen_lab_dir={LAB}"]
    if out is not None:
        extra += ["-e", f"bluegreen_shadow_out={out}"]
    return run_playbook("tests/integration/playbooks/shadow.yml", *extra, timeout=120)


def shadow_lines(color: str | None = None) -> list[dict]:
    color = color or colors()[1]
    lines = []
    for path in sorted(LAB.glob(f"nodes/{color}-*/shadow/*.ndjson")):
        lines += [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    return lines


def counters() -> dict:
    """The mirror's counters, read straight from HAProxy (not through the code under test)."""
    return json.loads(runtime("bluegreen shadow"))


def shadow_percent() -> str:
    return runtime(f"show map {HAPROXY_DIR / 'shadow.map'}").split()[-1]


def test_shadow_traffic_mirrors_the_configured_fraction_and_never_touches_live(lab, tmp_path):
    live, idle = colors()
    assert shadow_percent() == "0"
    load = Loadgen(tmp_path / "run", rate=RATE, batch=BATCH)
    try:
        time.sleep(1)
        started = drive("start")
        assert started.returncode == 0, started.tail()
        assert shadow_percent() == str(PERCENT)
        time.sleep(SHADOW_SECONDS)
        stopped = drive("stop", tmp_path / "records.json")
        assert stopped.returncode == 0, stopped.tail()
        assert shadow_percent() == "0"
        after_stop = counters()
        mirrored_lines = len(shadow_lines())  # the queue was drained by shadow_stop
        # after stopped no more batches are mirrored, though live traffic goes on
        time.sleep(2)
        assert counters()["sampled"] == after_stop["sampled"]
        assert len(shadow_lines()) == mirrored_lines
    finally:
        code = load.stop()
        drive("stop")  # whatever happened, shadowing is off when the test ends
    assert code == 0

    # live clients saw no error and lost nothing
    report = load.verify()
    assert report["failed_requests_total"] == 0, report
    assert report["lost"] == 0, report
    assert report["duplicates"] == 0, report

    result = json.loads((tmp_path / "records.json").read_text())
    records = {r["name"]: r for r in result["records"]}
    assert {name: r["verdict"] for name, r in records.items()} == {
        "shadow_mirrored": "pass",
        "shadow_mismatches": "pass",
        "shadow_errors": "pass",
    }, records
    shadow = result["results"][0]["shadow"]
    assert shadow["mismatched"] == 0 and shadow["errors"] == 0

    # the idle color's shadow sinks got the configured fraction of the live batches (+-20 %)
    assert report["ok"], report["reasons"]
    run_id = report["runs"][0]["run_id"]
    lines = [line for line in shadow_lines() if line.get("id", "").startswith(run_id + "-")]
    assert lines, "no shadow entry reached the idle color"
    assert all(line["_shadow"] is True and line["_color"] == idle for line in lines)
    batches = len(lines) / BATCH
    expected = shadow["live_requests"] * PERCENT / 100
    assert 0.8 * expected <= batches <= 1.2 * expected, (batches, expected, shadow)
    assert batches == shadow["mirrored"]
    assert shadow["dropped_full"] == shadow["skipped_incomplete"] == 0

    # no shadow entry in any production sink: no _shadow mark, and every mirrored id is there once,
    # written by the live color, never by the idle color's production sink
    production = sink_lines()
    assert not any("_shadow" in line for line in production)
    shadow_ids = {line["id"] for line in lines}
    seen = Counter(line["id"] for line in production if line.get("id") in shadow_ids)
    assert set(seen) == shadow_ids
    assert set(seen.values()) == {1}
    writers = {line["_color"] for line in production if line.get("id") in shadow_ids}
    assert writers == {live}
