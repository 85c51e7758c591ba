"""bluegreen_checks and bluegreen_load, directly: records, percentiles, ratios, config diffs, digests, the
report file, HTTP reads against a real server, and the pacer that caps the load."""

from __future__ import annotations

import itertools
import json
import math
import time

import pytest
from ansible.module_utils import bluegreen_checks as checks
from ansible.module_utils import bluegreen_load as load

from logplatform import config as lp_config
from tests.ansible_modules import run_module
from tests.unit.logplatform_node import free_port
from tests.unit.node_fixture import running_nodes


# --- statistics ---------------------------------------------------------------------------------------
def test_percentile_is_nearest_rank_and_always_an_observed_value():
    values = list(range(100, 0, -1))  # 1..100, unsorted
    assert checks.percentile(values, 50) == 50
    assert checks.percentile(values, 99) == 99
    assert checks.percentile(values, 100) == 100
    assert checks.percentile([7.0], 99) == 7.0
    assert checks.percentile([1, 2, 3], 50) == 2
    assert checks.percentile([1, 2, 3, 4], 99) == 4  # ceil(0.99 * 4) = 4th value
    assert checks.percentile([], 99) is None
    with pytest.raises(ValueError, match="percentile"):
        checks.percentile([1], 0)


def test_ratio_raises_tiny_figures_to_the_floor():
    assert checks.ratio(30.0, 10.0) == 3.0
    assert checks.ratio(2.0, 1.0, floor=5.0) == 1.0  # jitter on tiny latencies is no regression
    assert checks.ratio(20.0, 1.0, floor=5.0) == 4.0
    assert checks.ratio(0.0, 0.0) == 1.0
    assert checks.ratio(1.0, 0.0) == math.inf


# --- records --------------------------------------------------------------------------------------------
def test_records_carry_name_node_observed_threshold_verdict_and_a_message_naming_them():
    rec = checks.at_most("perf_p99_ms", "green-1", 312.4, 250.0, "ms")
    assert {k: rec[k] for k in checks.RECORD_KEYS} == {
        "name": "perf_p99_ms",
        "node": "green-1",
        "observed": 312.4,
        "threshold": 250.0,
        "verdict": "fail",
    }
    assert rec["message"] == "check perf_p99_ms on green-1: observed 312.4 ms, threshold <= 250 ms"
    assert checks.at_most("x", "n", 250.0, 250.0)["verdict"] == "pass"
    assert checks.at_most("x", "n", 1.0, None)["verdict"] == "skip"
    assert checks.at_least("t", "n", 17.5, 18.0, "batches/s")["verdict"] == "fail"
    assert checks.at_least("t", "n", 18.0, 18.0)["verdict"] == "pass"
    assert checks.check_record_shape(rec) is None
    assert "lacks observed" in checks.check_record_shape(
        {"name": "x", "node": "n", "threshold": 1, "verdict": "pass"}
    )
    assert "verdict 'ok'" in checks.check_record_shape({**rec, "verdict": "ok"})


def test_failure_message_names_every_failed_check():
    records = [
        checks.at_most("perf_error_rate", "green-1", 0.0, 0.01),
        checks.at_most("perf_p99_ms", "green-1", 312.4, 250.0, "ms"),
        checks.record("health_version", "green-2", "1.0.0", "1.1.0", False, op="=="),
    ]
    assert checks.failure_message(records, "validate") == (
        "validate: 2 of 3 checks failed: "
        "check perf_p99_ms on green-1: observed 312.4 ms, threshold <= 250 ms; "
        "check health_version on green-2: observed 1.0.0, threshold == 1.1.0"
    )
    assert checks.summarize(records) == {"total": 3, "passed": 1, "failed": 2, "skipped": 0}


# --- configuration -----------------------------------------------------------------------------------------
def effective(**changes) -> dict:
    raw = {"node": "green-1", "color": "green", "listen_port": 9101, "sink_dir": "/srv/sink", **changes}
    return lp_config.effective_config(lp_config.parse_config(raw))


def test_node_specific_keys_and_digests_are_logplatform_s():
    assert checks.NODE_SPECIFIC_KEYS == lp_config.NODE_SPECIFIC_KEYS
    cfg = lp_config.parse_config(
        {"node": "a", "color": "blue", "listen_port": 1, "sink_dir": "/s", "fsync": False}
    )
    data = lp_config.effective_config(cfg)
    assert checks.canonical_digest(data) == lp_config.config_digest(cfg)
    assert checks.shared_digest(data) == lp_config.shared_config_digest(cfg)


def test_config_diff_names_shared_keys_only_with_both_values():
    ours = effective(node="green-2", listen_port=9102, max_batch_entries=500, fault={"error_rate": 0.5})
    ref = effective()
    assert checks.config_diff(ours, ref) == {
        "fault.error_rate": [0.5, 0.0],
        "max_batch_entries": [500, 10000],
    }
    assert checks.config_diff(ours, ref, ["fault"]) == {"max_batch_entries": [500, 10000]}
    assert checks.config_diff(ours, ref, ["fault.error_rate", "max_batch_entries"]) == {}
    assert checks.config_diff({**ours, "new_key": 1}, ref, ["fault"]) == {
        "max_batch_entries": [500, 10000],
        "new_key": [1, None],
    }
    assert checks.describe_diff({"max_batch_entries": [500, 10000]}, "green-2", "green-1") == (
        "max_batch_entries = 500 on green-2, 10000 on green-1"
    )


# --- report ---------------------------------------------------------------------------------------------
def test_report_is_written_atomically_and_replaces_the_previous_one(tmp_path):
    path = tmp_path / "reports" / "d42.json"
    ok = checks.record("health_ready", "green-1", 200, 200, True, op="==")
    bad = checks.at_most("perf_p99_ms", "green-1", 312.4, 250.0, "ms")
    checks.write_report(str(path), [ok], {"id": "d41"})
    report = checks.write_report(str(path), [ok, bad], {"id": "d42"})
    on_disk = json.loads(path.read_text())
    assert on_disk == json.loads(json.dumps(report))
    assert on_disk["deployment"] == {"id": "d42"}
    assert on_disk["result"] == "fail"
    assert on_disk["summary"] == {"total": 2, "passed": 1, "failed": 1, "skipped": 0}
    assert on_disk["failed"] == [bad["message"]]
    assert [c["name"] for c in on_disk["checks"]] == ["health_ready", "perf_p99_ms"]
    assert [p.name for p in path.parent.iterdir()] == ["d42.json"]  # no temporary file left behind
    assert oct(path.stat().st_mode & 0o777) == "0o640"
    # something that is not a check record is refused, and the previous report stays whole
    with pytest.raises(ValueError, match="lacks"):
        checks.write_report(str(path), [{"name": "half"}])
    assert json.loads(path.read_text())["deployment"] == {"id": "d42"}


def test_report_module_writes_the_file_and_reports_the_result(tmp_path):
    path = tmp_path / "r" / "d7.json"
    records = [
        checks.record("health_ready", "green-1", 200, 200, True, op="=="),
        checks.record("perf_p50_ms", "preview green", 4.2, None, None),
    ]
    failed, result = run_module("bluegreen_report", {"path": str(path), "records": records}, check_mode=True)
    assert not failed and result["written"] is False and not path.exists()
    failed, result = run_module(
        "bluegreen_report", {"path": str(path), "records": records, "deployment": {"id": "d7"}}
    )
    assert not failed, result
    assert (result["changed"], result["result"], result["failed_checks"]) == (True, "pass", [])
    assert result["summary"] == {"total": 2, "passed": 1, "failed": 0, "skipped": 1}
    assert json.loads(path.read_text())["checks"] == records
    failed, result = run_module("bluegreen_report", {"path": str(path), "records": [{"name": "x"}]})
    assert failed and "lacks node, observed, threshold, verdict" in result["msg"]


# --- HTTP ---------------------------------------------------------------------------------------------------
def test_get_json_reads_a_real_server_and_names_the_url_when_it_cannot():
    with running_nodes(green=["1.2.3"]) as nodes:
        node = nodes["green"][0]
        base = f"http://{node.address}"
        assert checks.get_json(checks.join_url(base + "/", "/version")) == {"version": "1.2.3"}
        node.ready = False
        assert checks.http_get(base + "/health/ready") == (503, b"not ready")
        with pytest.raises(checks.CheckError, match=r"GET http://.*/health/ready answered 503 not ready"):
            checks.get_json(base + "/health/ready")
        with pytest.raises(checks.CheckError, match="invalid JSON"):
            checks.get_json(base + "/other")  # answers its color as text
    url = f"http://127.0.0.1:{free_port()}/version"
    with pytest.raises(checks.CheckError, match=f"GET {url} failed: .*Connection refused"):
        checks.get_json(url, timeout=1)
    with pytest.raises(checks.CheckError, match="not an http"):
        checks.http_get("ftp://example/x")


# --- load --------------------------------------------------------------------------------------------------
def test_pacer_slots_are_never_closer_than_one_over_rate_and_never_made_up():
    pacer = load.Pacer(rate=100, seconds=0.3)
    assert pacer.planned == 30
    slots = []
    while (slot := pacer.take()) is not None:  # one sender that waits for its slot, as a worker does
        slots.append(slot)
        time.sleep(max(0.0, slot[1] - time.monotonic()))
        if slot[0] == 5:
            time.sleep(0.1)  # the connection is busy for 10 slots: they are dropped, not sent in a burst
    times = [at for _, at in slots]
    assert min(b - a for a, b in itertools.pairwise(times)) >= 0.01 - 1e-9
    assert [seq for seq, _ in slots] == list(range(len(slots)))
    assert len(slots) <= 22  # 30 planned, ~10 missed
    assert times[-1] < pacer.end


def test_log_batch_is_valid_logplatform_input_with_unique_ids():
    body = json.loads(load.log_batch("run1", 7, 3))
    assert [e["id"] for e in body] == ["run1-7-0", "run1-7-1", "run1-7-2"]
    assert {(e["level"], e["service"]) for e in body} == {("info", "bluegreen-perf")}
    assert body[0]["ts"].endswith("Z")


def test_figures_count_no_answer_as_an_error_without_a_latency():
    f = load.figures(
        statuses={"200": 7, "500": 2, "error:ConnectionResetError": 1},
        latencies_s=[0.001 * n for n in range(1, 10)],
        elapsed=1.2,
        planned=12,
        sent=10,
        rate=12,
        seconds=1.0,
        batch_size=5,
        concurrency=2,
    )
    assert (f["ok"], f["answered"], f["errors"], f["error_rate"], f["missed_slots"]) == (7, 9, 3, 0.3, 2)
    assert (f["throughput_batches_per_s"], f["throughput_entries_per_s"]) == (7.0, 35.0)
    assert (f["p50_ms"], f["p99_ms"], f["max_ms"]) == (5.0, 9.0, 9.0)
