"""bluegreen_perf against real logplatform nodes: a good one (the baseline), a slow one
(fault.extra_latency_ms) and an erroring one (fault.error_rate). Every batch the module says it sent is
counted by the node itself (/metrics) and every accepted entry is in its sink."""

from __future__ import annotations

import pytest

from tests.ansible_modules import load, run_module
from tests.unit.logplatform_node import fleet

BATCH = 10


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    with fleet(tmp_path_factory.mktemp("perf")) as start:
        started = {
            "good": start("green-1"),
            "slow": start("green-2", fault={"extra_latency_ms": 300.0}),
            "erroring": start("green-3", fault={"error_rate": 0.5}),
        }
        for node in started.values():
            node.wait_ready()
        yield started


def perf(node, check_mode: bool = False, **params):
    args = {"url": node.url, "node": node.name, "seconds": 1.0, "batch_size": BATCH, **params}
    return run_module("bluegreen_perf", args, check_mode=check_mode)


@pytest.fixture(scope="module")
def baseline(nodes):
    """The good node measured once: rate 40 for 1 s, like the live color's baseline."""
    node = nodes["good"]
    before = node.batches("ok")
    failed, result = perf(node, rate=40, concurrency=4, run_id="base")
    assert not failed, result
    return result, node.batches("ok") - before


def test_good_node_passes_and_the_rate_is_a_cap(nodes, baseline):
    result, counted_by_node = baseline
    f = result["figures"]
    assert result["changed"] is False and result["measured"] is True
    # 40 slots in 1 s, none made up: never more than the rate
    assert f["planned"] == 40 and f["sent"] <= 40
    assert f["sent"] >= 36  # a loaded 2-core test machine may miss a slot or two
    assert counted_by_node == f["sent"] == f["ok"]
    assert f["errors"] == 0 and f["error_rate"] == 0.0 and f["statuses"] == {"200": f["sent"]}
    assert f["throughput_batches_per_s"] == f["ok"] / 1.0 <= 40
    assert f["throughput_entries_per_s"] == f["ok"] * BATCH
    assert 0 < f["p50_ms"] <= f["p90_ms"] <= f["p99_ms"] <= f["max_ms"]
    assert f["connections"] <= 4  # keep-alive: one connection per thread
    ids = [i for i in nodes["good"].sink_ids() if i.startswith("base-")]
    assert len(ids) == len(set(ids)) == f["ok"] * BATCH
    names = [(r["name"], r["verdict"]) for r in result["records"]]
    assert names == [
        ("perf_error_rate", "pass"),
        ("perf_p99_ms", "pass"),
        ("perf_p50_ms", "skip"),  # no max_p50_ms: recorded, not judged
        ("perf_throughput", "pass"),
    ]
    assert all(r["node"] == "green-1" for r in result["records"])


def test_slow_release_fails_p99_absolute_and_relative_to_the_baseline(nodes, baseline):
    failed, result = perf(
        nodes["slow"], rate=10, concurrency=4, max_p99_ms=150, baseline=baseline[0], max_p99_ratio=2.0
    )
    assert failed
    f = result["figures"]
    assert f["p50_ms"] >= 300 and f["p99_ms"] >= 300
    by_name = {r["name"]: r for r in result["records"]}
    p99 = by_name["perf_p99_ms"]
    assert (p99["observed"], p99["threshold"], p99["verdict"]) == (f["p99_ms"], 150.0, "fail")
    ratio = by_name["perf_p99_ratio"]
    expected = f["p99_ms"] / max(baseline[0]["figures"]["p99_ms"], 5.0)
    assert ratio["verdict"] == "fail" and ratio["observed"] == pytest.approx(expected, rel=0.01)
    assert ratio["observed"] > 2.0
    assert by_name["perf_error_rate"]["verdict"] == "pass"
    msg = result["msg"]
    assert msg.startswith("bluegreen_perf against green-2: ")
    assert f"check perf_p99_ms on green-2: observed {p99['observed']:.1f}".rstrip("0").rstrip(".") in msg
    assert "threshold <= 150 ms" in msg
    assert "check perf_p99_ratio on green-2: observed" in msg and "threshold <= 2 x" in msg


def test_a_target_that_cannot_keep_up_gets_no_more_than_it_answers(nodes):
    node = nodes["slow"]
    before = node.batches("ok")
    # 2 connections to a 300 ms node: at most ~7 batches/s can be answered, 20/s are offered
    failed, result = perf(node, rate=20, concurrency=2, max_p99_ms=5000)
    f = result["figures"]
    assert node.batches("ok") - before == f["sent"] == f["ok"]
    assert f["sent"] <= 10 and f["missed_slots"] == 20 - f["sent"]
    assert failed
    (bad,) = [r for r in result["records"] if r["verdict"] == "fail"]
    assert (bad["name"], bad["observed"], bad["threshold"]) == ("perf_throughput", f["sent"] / 1.0, 18.0)
    assert (
        f"check perf_throughput on green-2: observed {f['sent']} batches/s, threshold >= 18 batches/s"
        in (result["msg"])
    )


def test_erroring_release_fails_on_its_error_rate(nodes):
    node = nodes["erroring"]
    failed, result = perf(node, rate=40, concurrency=4, max_error_rate=0.05, run_id="err")
    assert failed
    f = result["figures"]
    assert 0.2 <= f["error_rate"] <= 0.8
    assert f["statuses"] == {"200": f["ok"], "500": f["errors"]}
    assert f["error_rate"] == round(f["errors"] / f["sent"], 4)
    # nothing of a failed batch is written; every accepted one is
    assert len([i for i in node.sink_ids() if i.startswith("err-")]) == f["ok"] * BATCH
    (rec,) = [r for r in result["records"] if r["name"] == "perf_error_rate"]
    assert (rec["observed"], rec["threshold"], rec["verdict"]) == (f["error_rate"], 0.05, "fail")
    assert rec["detail"]["statuses"] == f["statuses"]
    assert (
        f"check perf_error_rate on green-3: observed {f['error_rate']:.4g}, threshold <= 0.05"
        in result["msg"]
    )


def test_check_mode_sends_nothing_and_says_so(nodes, baseline):
    node = nodes["good"]
    before = node.batches("ok") + node.batches("error")
    failed, result = perf(node, check_mode=True, rate=40, baseline=baseline[0])
    assert not failed
    assert node.batches("ok") + node.batches("error") == before
    assert result["measured"] is False and result["figures"] is None and result["changed"] is False
    assert result["msg"] == f"check mode: no load sent to {node.url}/v1/logs"
    assert len(result["records"]) == 7  # 4 absolute + 3 ratio checks, none judged
    assert {r["verdict"] for r in result["records"]} == {"skip"}


def test_same_figures_as_the_baseline_pass_the_ratio_checks(nodes, baseline):
    failed, result = perf(
        nodes["good"], rate=40, concurrency=4, baseline=baseline[0]["figures"], max_p99_ratio=20
    )
    assert not failed, result["msg"] if failed else ""
    ratios = [r for r in result["records"] if r["name"].endswith("_ratio")]
    assert [(r["name"], r["verdict"]) for r in ratios] == [
        ("perf_p99_ratio", "pass"),
        ("perf_p50_ratio", "skip"),
        ("perf_throughput_ratio", "pass"),
    ]


def test_a_baseline_without_figures_leaves_the_ratios_unjudged():
    perf_module = load("bluegreen_perf")
    params = {"max_p99_ratio": 2.0, "max_p50_ratio": None, "min_throughput_ratio": 0.9, "ratio_floor_ms": 5.0}
    figures = {"p99_ms": 40.0, "p50_ms": 3.0, "throughput_batches_per_s": 20.0}
    rec = perf_module.ratio_record("perf_p99_ratio", "preview green", figures, {"p99_ms": None}, params)
    assert (rec["verdict"], rec["message"]) == (
        "skip",
        "check perf_p99_ratio on preview green: not judged, the baseline has no p99_ms",
    )
    rec = perf_module.ratio_record("perf_p99_ratio", "preview green", figures, {"p99_ms": 2.0}, params)
    assert (rec["observed"], rec["threshold"], rec["verdict"]) == (8.0, 2.0, "fail")  # 40 / max(2, 5)
    rec = perf_module.ratio_record(
        "perf_throughput_ratio", "p", figures, {"throughput_batches_per_s": 20.0}, params
    )
    assert (rec["observed"], rec["op"], rec["verdict"]) == (1.0, ">=", "pass")


def test_given_figures_are_judged_without_sending_load(nodes, baseline):
    """Stage 3 measures idle and live concurrently, then judges the idle figures against the live ones."""
    slow = nodes["slow"]
    measured_failed, measured = perf(slow, rate=10, concurrency=4, max_p99_ms=150)
    assert measured_failed
    before = slow.batches("ok")
    failed, result = perf(
        slow, rate=10, figures=measured, baseline=baseline[0], max_p99_ms=150, max_p99_ratio=2.0
    )
    assert slow.batches("ok") == before  # nothing sent
    assert failed and result["measured"] is False
    assert result["figures"] == measured["figures"]
    by_name = {r["name"]: r for r in result["records"]}
    assert by_name["perf_p99_ms"]["observed"] == measured["figures"]["p99_ms"]
    assert by_name["perf_p99_ratio"]["verdict"] == "fail"
    # the same figures, judged with thresholds they meet, pass
    failed, result = perf(slow, rate=10, figures=measured["figures"], max_p99_ms=10_000, min_throughput=1)
    assert not failed, result["msg"] if failed else ""


def test_figures_without_a_measurement_are_refused(nodes):
    failed, result = perf(nodes["good"], rate=10, figures={"figures": None})
    assert failed and "figures hold no measurement to judge" in result["msg"]
