"""The one-machine lab through the lb: routing, processing, refusals, idempotence, config validation."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import uuid

import pytest

from tests.conftest import LAB
from tests.integration.http import post_entries, request
from tests.integration.lab import (
    HAPROXY_DIR,
    LIVE_URL,
    NODES,
    PREVIEW_URL,
    run_playbook,
    sink_ids,
    sink_lines,
    state,
)
from tests.unit.haproxy_fixture import process_uids


def entries(n: int, prefix: str | None = None) -> list[dict]:
    prefix = prefix or uuid.uuid4().hex[:12]
    return [
        {
            "ts": "2026-11-24T10:00:00+01:00",
            "level": "INFO",
            "service": "checkout",
            "message": f"m{i}",
            "id": f"{prefix}-{i}",
        }
        for i in range(n)
    ]


def test_second_site_run_changes_nothing(lab):
    second = run_playbook("site.yml")
    assert second.returncode == 0, second.tail(3000)
    stats = second.stats
    assert {"lb-1", *NODES} <= set(stats)
    assert {host: c["changed"] for host, c in stats.items() if c["changed"]} == {}


def test_live_goes_to_the_live_color_and_preview_to_the_other(lab):
    current = state()
    idle = "green" if current["live"] == "blue" else "blue"
    live = post_entries(f"{LIVE_URL}/v1/logs", entries(1))
    preview = post_entries(f"{PREVIEW_URL}/v1/logs", entries(1))
    assert live.status == preview.status == 200
    assert live.headers["x-bluegreen-color"] == current["live"]
    assert preview.headers["x-bluegreen-color"] == idle
    for node, port in NODES.items():
        reported = request(f"http://127.0.0.1:{port}/version").json()
        assert reported["version"] == current["versions"][reported["color"]], node


@pytest.mark.parametrize("ndjson", [False, True], ids=["json-array", "ndjson"])
def test_valid_batch_is_durable_and_enriched(lab, ndjson):
    batch = entries(50)
    resp = post_entries(f"{LIVE_URL}/v1/logs", batch, ndjson=ndjson)
    assert resp.status == 200, resp.body
    assert resp.json() == {"accepted": 50}
    wanted = {e["id"] for e in batch}
    written = [line for line in sink_lines() if line.get("id") in wanted]
    assert sorted(line["id"] for line in written) == sorted(wanted)
    live = state()["live"]
    for line in written:
        assert line["_color"] == live
        assert line["_version"] == state()["versions"][live]
        assert line["_node"] in {f"{live}-1", f"{live}-2"}
        assert line["ts"] == "2026-11-24T09:00:00.000000Z"
        assert line["level"] == "info"
        assert line["_ingested_at"].endswith("Z")


def _bad_batches() -> dict[str, tuple[bytes, str]]:
    good = entries(3)
    ids = [e["id"] for e in good]
    missing = [*good, {"ts": 1732442400, "level": "info", "service": "x", "id": "no-message"}]
    wrong_type = [*good, {"ts": 1732442400, "level": "info", "service": "x", "message": 42}]
    oversized = json.dumps([*good, {**good[0], "message": "x" * (9 * 1024 * 1024)}]).encode()
    too_many = json.dumps(entries(10001, prefix=ids[0] + "-many")).encode()
    return {
        "malformed-json": (json.dumps(good).encode()[:-2] + b"{", "json"),
        "missing-field": (json.dumps(missing).encode(), "message"),
        "wrong-type": (json.dumps(wrong_type).encode(), "message"),
        "oversized-body": (oversized, "large"),
        "too-many-entries": (too_many, "entries"),
    }, ids


BAD, BAD_IDS = _bad_batches()


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_batch_is_refused_with_reason_and_nothing_written(lab, case):
    body, reason_word = BAD[case]
    resp = request(f"{LIVE_URL}/v1/logs", body)
    assert 400 <= resp.status < 500, (resp.status, resp.body[:200])
    assert reason_word in resp.json()["error"].lower()
    ids = set(sink_ids())
    assert not ids & set(BAD_IDS)
    assert not any(i.startswith(BAD_IDS[0] + "-many") for i in ids)


def test_invalid_haproxy_config_is_rejected_and_traffic_keeps_flowing(lab):
    config = HAPROXY_DIR / "haproxy.cfg"
    before = hashlib.sha256(config.read_bytes()).hexdigest()
    master_pid = (HAPROXY_DIR / "haproxy.pid").read_text().split()[0]
    results: list[int] = []
    stop = threading.Event()

    def send() -> None:
        prefix = uuid.uuid4().hex[:12]
        n = 0
        while not stop.is_set():
            results.append(post_entries(f"{LIVE_URL}/v1/logs", entries(5, prefix=f"{prefix}-{n}")).status)
            n += 1
            time.sleep(0.01)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        bad_value = '{"haproxy_defaults_extra": ["timeout client notatime"]}'
        run = run_playbook("site.yml", "--limit", "lb", "-e", bad_value)
    finally:
        stop.set()
        sender.join()
    assert run.returncode != 0
    failed = run.of_type("task_failed")
    assert any("failed to validate" in e["message"] for e in failed), failed
    assert any("timeout client" in e["stderr"] for e in failed), failed  # haproxy -c names the offending line
    assert hashlib.sha256(config.read_bytes()).hexdigest() == before
    assert (HAPROXY_DIR / "haproxy.pid").read_text().split()[0] == master_pid
    assert len(results) > 10
    assert set(results) == {200}


def shadow_sink_sizes() -> dict[str, int]:
    """Every file of every node's shadow sink and its size."""
    return {str(path): path.stat().st_size for path in LAB.glob("nodes/*/shadow/*.ndjson")}


@pytest.mark.parametrize("url", [LIVE_URL, PREVIEW_URL], ids=["live", "preview"])
@pytest.mark.parametrize("name", ["X-Bluegreen-Shadow", "x-bluegreen-SHADOW"])
def test_a_client_cannot_write_into_a_shadow_sink(lab, url, name):
    """The mirror's marker is internal: every frontend removes it from clients' requests, so the
    batch is an ordinary one (production sink) and no shadow sink grows."""
    before = shadow_sink_sizes()
    batch = entries(2)
    resp = request(f"{url}/v1/logs", json.dumps(batch).encode(), headers={name: "1"})
    assert resp.status == 200, resp.body
    assert {e["id"] for e in batch} <= set(sink_ids())
    assert shadow_sink_sizes() == before


def test_haproxy_runs_as_the_current_user_on_the_lab(lab):
    """Under supervisor HAProxy drops to no other user: no `user`/`group` in the lab's config."""
    master = int((HAPROXY_DIR / "haproxy.pid").read_text().split()[0])
    uids = process_uids(master)
    assert len(uids) >= 2, uids  # the master and at least one worker
    assert set(uids.values()) == {os.getuid()}
    config = (HAPROXY_DIR / "haproxy.cfg").read_text().splitlines()
    assert not [line for line in config if line.strip().startswith(("user ", "group "))]
