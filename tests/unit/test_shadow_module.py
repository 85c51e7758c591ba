"""bluegreen_shadow against a real HAProxy running the real Lua mirror, with real logplatform nodes:
blue is live, green idle (the mirror sends its batches to the servers of green's backend)."""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.ansible_modules import load, run_module
from tests.unit import haproxy_fixture
from tests.unit.logplatform_node import fleet

LOGS = "/v1/logs"


def batch(n: int = 2, prefix: str = "") -> list[dict]:
    run = prefix or uuid.uuid4().hex[:8]
    return [
        {"ts": "2026-11-24T10:00:00Z", "level": "info", "service": "api", "message": "m", "id": f"{run}-{i}"}
        for i in range(n)
    ]


class Client:
    """One keep-alive connection to a frontend, like a log shipper."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def post(self, entries: list[dict], headers: dict | None = None, body: bytes | None = None) -> int:
        self.conn.request(
            "POST",
            LOGS,
            body=body if body is not None else json.dumps(entries).encode(),
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        resp = self.conn.getresponse()
        resp.read()
        return resp.status

    def close(self) -> None:
        self.conn.close()


def lines(directory: Path) -> list[dict]:
    out = []
    for path in sorted(directory.glob("*.ndjson")):
        out += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return out


@pytest.fixture
def lab(tmp_path):
    """blue-1 live, green-1 idle, each with a shadow sink; HAProxy with the shadow mirror."""
    with fleet(tmp_path / "nodes") as start:
        nodes = {}
        for name, color in (("blue-1", "blue"), ("green-1", "green")):
            nodes[color] = start(name, color, shadow_sink_dir=str(tmp_path / "nodes" / name / "shadow"))
        for node in nodes.values():
            node.wait_ready()
        addresses = {color: [f"127.0.0.1:{node.port}"] for color, node in nodes.items()}
        haproxy_dir = tmp_path / "lb"
        haproxy_dir.mkdir()
        with haproxy_fixture.running(haproxy_dir, nodes=addresses, shadow=True) as lb:
            yield lb, nodes


@contextlib.contextmanager
def idle_lab(
    tmp_path,
    green_fault: dict | None = None,
    blue_shadow: bool = False,
    blue_fault: dict | None = None,
    **lb_args,
):
    """blue-1 live, green-1 idle (shadow sink tmp_path/g-shadow), each with a TEST-ONLY fault if given,
    HAProxy with the mirror; yields (lb, blue, green)."""
    with fleet(tmp_path / "nodes") as start:
        blue = start(
            "blue-1",
            "blue",
            **({"shadow_sink_dir": str(tmp_path / "b-shadow")} if blue_shadow else {}),
            **({"fault": blue_fault} if blue_fault else {}),
        )
        green = start(
            "green-1",
            "green",
            shadow_sink_dir=str(tmp_path / "g-shadow"),
            **({"fault": green_fault} if green_fault else {}),
        )
        blue.wait_ready()
        green.wait_ready()
        nodes = {"blue": [f"127.0.0.1:{blue.port}"], "green": [f"127.0.0.1:{green.port}"]}
        (tmp_path / "lb").mkdir()
        with haproxy_fixture.running(tmp_path / "lb", nodes=nodes, shadow=True, **lb_args) as lb:
            yield lb, blue, green


def shadow(lb, **args):
    return run_module("bluegreen_shadow", {"socket": lb.socket, "map": lb.shadow_map, "node": "lb-1", **args})


def wait_mirrored(lb, count: int, timeout: float = 10.0) -> dict:
    """The mirror's counters once `count` batches were answered (or the timeout passed)."""
    deadline = time.monotonic() + timeout
    while True:
        data = json.loads(lb.command("bluegreen shadow"))
        done = data["mirrored"] + data["errors"] + data["dropped_full"] + data["skipped_incomplete"]
        if done >= count or time.monotonic() > deadline:
            return data
        time.sleep(0.05)


def by_name(records: list[dict]) -> dict[str, dict]:
    return {r["name"]: r for r in records}


def test_stopped_and_read_before_any_start_change_nothing(lab):
    lb, _ = lab
    failed, result = shadow(lb, state="stopped")
    assert not failed, result
    assert (result["changed"], result["percent"], result["available"], result["drained"]) == (
        False,
        0,
        True,
        True,
    )
    assert {r["verdict"] for r in result["records"]} == {"skip"}
    assert all("not started" in r["message"] for r in result["records"])
    failed, result = shadow(lb)
    assert not failed and result["changed"] is False and result["percent"] == 0


def test_mirrors_live_batches_to_the_idle_shadow_sink_only_and_stops(lab):
    lb, nodes = lab
    failed, result = shadow(lb, state="started", percent=100)
    assert not failed, result
    assert (result["changed"], result["previous_percent"], result["percent"]) == (True, 0, 100)
    assert lb.command(f"show map {lb.shadow_map}").split()[1:] == ["percent", "100"]
    assert (lb.dir / "shadow.map").read_text() == "percent 0\n"  # the file never turns it on

    client = Client(lb.live_port)
    sent = [batch(3) for _ in range(20)]
    assert [client.post(b) for b in sent] == [200] * 20
    counters = wait_mirrored(lb, 20)
    assert (counters["sampled"], counters["mirrored"], counters["matched"]) == (20, 20, 20)

    ids = {e["id"] for b in sent for e in b}
    blue, green = nodes["blue"], nodes["green"]
    assert set(blue.sink_ids()) == ids  # live answered them all
    assert not any("_shadow" in line for line in lines(blue.sink_dir))
    assert lines(green.sink_dir) == []  # nothing in the idle color's production sink
    shadow_lines = lines(green.sink_dir.parent / "shadow")
    assert {line["id"] for line in shadow_lines} == ids
    assert all(line["_shadow"] is True and line["_color"] == "green" for line in shadow_lines)
    assert lines(blue.sink_dir.parent / "shadow") == []

    failed, result = shadow(lb, state="stopped")
    assert not failed, result
    assert (result["changed"], result["previous_percent"], result["percent"], result["drained"]) == (
        True,
        100,
        0,
        True,
    )
    assert result["shadow"]["mirrored"] == 20
    records = by_name(result["records"])
    assert {name: r["verdict"] for name, r in records.items()} == {
        "shadow_mirrored": "pass",
        "shadow_mismatches": "pass",
        "shadow_errors": "pass",
    }
    assert records["shadow_mirrored"]["observed"] == 20
    assert set(records["shadow_errors"]) >= {
        "name",
        "node",
        "observed",
        "threshold",
        "op",
        "verdict",
        "message",
    }

    # after stopped, no more batches are mirrored
    assert [client.post(batch(2)) for _ in range(10)] == [200] * 10
    time.sleep(0.3)
    assert json.loads(lb.command("bluegreen shadow"))["sampled"] == 20
    assert len(lines(green.sink_dir.parent / "shadow")) == len(shadow_lines)
    client.close()


def test_a_client_cannot_divert_its_batches_to_the_shadow_sink(lab):
    lb, nodes = lab
    client = Client(lb.live_port)
    sent = batch(2)
    assert client.post(sent, headers={"X-Bluegreen-Shadow": "1"}) == 200
    client.close()
    assert {e["id"] for e in sent} <= set(nodes["blue"].sink_ids())
    assert lines(nodes["blue"].sink_dir.parent / "shadow") == []


def test_samples_about_the_configured_fraction(lab):
    lb, nodes = lab
    shadow(lb, state="started", percent=25)
    client = Client(lb.live_port)
    total = 400
    assert all(client.post(batch(1)) == 200 for _ in range(total))
    client.close()
    counters = wait_mirrored(lb, 1)
    time.sleep(0.5)
    failed, result = shadow(lb, state="stopped")
    assert not failed
    sampled = result["shadow"]["sampled"]
    # binomial(400, 0.25): mean 100, sd 8.7; these bounds are more than 4 sd away
    assert 60 <= sampled <= 140, counters
    assert result["shadow"]["mirrored"] == sampled
    assert result["shadow"]["live_requests"] == total
    assert len(lines(nodes["green"].sink_dir.parent / "shadow")) == sampled


def test_different_answers_of_the_idle_color_are_mismatches(tmp_path):
    # the new release refuses what the live one accepts: here, every batch (TEST-ONLY fault)
    with idle_lab(tmp_path, green_fault={"error_rate": 1.0}, blue_shadow=True) as (lb, _, _):
        shadow(lb, state="started", percent=100)
        client = Client(lb.live_port)
        assert [client.post(batch(2)) for _ in range(5)] == [200] * 5
        client.close()
        wait_mirrored(lb, 5)
        failed, result = shadow(lb, state="stopped", fail_on_failed=True)
    assert failed
    assert "shadow_mismatches on lb-1: observed 5, threshold == 0" in result["msg"]
    assert '"live_status": 200' in result["msg"] and '"shadow_status": 500' in result["msg"]
    assert result["percent"] == 0  # turned off before failing
    records = by_name(result["records"])
    assert records["shadow_mismatches"]["verdict"] == "fail"
    assert records["shadow_mirrored"]["verdict"] == "pass"
    assert lines(tmp_path / "g-shadow") == []


def test_an_idle_color_that_is_down_counts_as_shadow_errors_never_live_errors(tmp_path):
    with idle_lab(tmp_path) as (lb, _, green):
        green.stop()
        lb.wait_status({"bg_green/green-1": "DOWN"})
        shadow(lb, state="started", percent=100)
        client = Client(lb.live_port)
        assert [client.post(batch(1)) for _ in range(5)] == [200] * 5
        client.close()
        wait_mirrored(lb, 5)
        failed, result = shadow(lb, state="stopped")
    assert not failed  # the caller judges
    records = by_name(result["records"])
    assert records["shadow_errors"]["verdict"] == "fail"
    assert records["shadow_errors"]["observed"] == 5
    assert "no server UP in backend bg_green (the idle color is down)" in records["shadow_errors"]["message"]
    assert records["shadow_mirrored"]["verdict"] == "fail"


def test_full_queue_drops_and_large_bodies_are_skipped_without_touching_live(tmp_path):
    with idle_lab(tmp_path, green_fault={"extra_latency_ms": 300}, shadow_queue=2) as (lb, blue, _):
        shadow(lb, state="started", percent=100)
        client = Client(lb.live_port)
        # 4 workers each busy 300 ms, 2 queue places: most of a quick burst is dropped
        assert [client.post(batch(1)) for _ in range(30)] == [200] * 30
        big = batch(300)
        for entry in big:
            entry["message"] = "x" * 100  # ~40 KB, more than HAProxy's 16 KB buffer
        assert client.post(big) == 200
        client.close()
        failed, result = shadow(lb, state="stopped")
    assert not failed
    counters = result["shadow"]
    assert counters["sampled"] == 31
    assert counters["skipped_incomplete"] == 1
    assert counters["dropped_full"] > 0
    assert counters["enqueued"] + counters["dropped_full"] + counters["skipped_incomplete"] == 31
    assert counters["mirrored"] == counters["enqueued"]
    assert set(blue.sink_ids()) >= {e["id"] for e in big}


def test_live_requests_stop_counting_when_sampling_stops(tmp_path):
    """The fraction's denominator is the sampling window: live traffic during the drain is not in it."""
    with idle_lab(tmp_path, green_fault={"extra_latency_ms": 200}) as (lb, _, _):
        shadow(lb, state="started", percent=100)
        client = Client(lb.live_port)
        # 4 workers at 200 ms a batch: 40 sampled batches take the drain about 2 s
        assert [client.post(batch(1)) for _ in range(40)] == [200] * 40
        sending = threading.Event()
        sending.set()
        during_drain: list[int] = []

        def keep_sending() -> None:
            other = Client(lb.live_port)
            while sending.is_set():
                during_drain.append(other.post(batch(1)))
            other.close()

        sender = threading.Thread(target=keep_sending)
        sender.start()
        try:
            failed, result = shadow(lb, state="stopped")
        finally:
            sending.clear()
            sender.join()
        client.close()
    assert not failed and result["drained"] is True
    counters = result["shadow"]
    assert counters["mirrored"] == counters["sampled"] >= 40
    assert len(during_drain) > 20 and set(during_drain) == {200}
    # every live request before the stop was sampled (100 %); the ones during the drain are not counted
    assert counters["sampled"] <= counters["live_requests"] <= counters["sampled"] + 3, counters


def test_a_batch_sampled_before_the_stop_and_answered_after_it_is_counted(tmp_path):
    """The mirror counts and queues a sampled batch when its LIVE answer comes back: a stop while that
    answer is on its way must still count it, or the shadow sink holds a batch the counters never saw."""
    with idle_lab(tmp_path, blue_fault={"extra_latency_ms": 150}) as (lb, _, _):
        shadow(lb, state="started", percent=100)
        answers: list[int] = []
        sender = threading.Thread(target=lambda: answers.append(Client(lb.live_port).post(batch(3, "late"))))
        sender.start()
        time.sleep(0.05)  # the batch is sampled and waits for the live node's answer
        failed, result = shadow(lb, state="stopped")
        sender.join()
        assert answers == [200]
        assert not failed and result["drained"] is True, result
        counters = result["shadow"]
        assert (counters["sampled"], counters["mirrored"]) == (1, 1), counters
        assert len([line for line in lines(tmp_path / "g-shadow") if line["id"].startswith("late")]) == 3


def test_check_mode_changes_nothing(lab):
    lb, _ = lab
    failed, result = shadow(lb, state="started", percent=10, _ansible_check_mode=True)
    assert not failed
    assert result["changed"] is True
    assert result["diff"]["after"] == "percent 10\n"
    assert lb.command(f"show map {lb.shadow_map}").split()[1:] == ["percent", "0"]


def test_started_again_without_reset_is_no_change(lab):
    lb, _ = lab
    assert shadow(lb, state="started", percent=10)[1]["changed"] is True
    failed, result = shadow(lb, state="started", percent=10, reset=False)
    assert not failed and result["changed"] is False
    shadow(lb, state="stopped")


def test_percent_is_checked(lab):
    lb, _ = lab
    failed, result = shadow(lb, state="started", percent=0)
    assert failed and "percent must be 1-100" in result["msg"]
    failed, result = shadow(lb, state="started")
    assert failed and "percent" in result["msg"]


def test_lb_without_the_mirror_stops_cleanly_and_refuses_to_start(tmp_path):
    with haproxy_fixture.running(tmp_path) as lb:
        failed, result = shadow(lb, state="stopped")
        assert not failed, result
        assert (result["available"], result["changed"]) == (False, False)
        assert {r["verdict"] for r in result["records"]} == {"skip"}
        failed, result = shadow(lb, state="started", percent=10)
        assert failed and "cannot start shadow traffic" in result["msg"]


@pytest.mark.parametrize(
    ("counters", "percent", "verdicts", "why"),
    [
        ({"live_requests": 0, "sampled": 0}, 10, ("skip", "skip", "skip"), "no live traffic"),
        ({"live_requests": 5, "sampled": 0, "mirrored": 0}, 10, ("skip", "pass", "pass"), "too few"),
        ({"live_requests": 500, "sampled": 0, "mirrored": 0}, 10, ("fail", "pass", "pass"), "threshold >= 1"),
        (
            {"live_requests": 500, "sampled": 50, "mirrored": 50},
            10,
            ("pass", "pass", "pass"),
            "of 50 sampled",
        ),
        ({"live_requests": 1, "sampled": 1, "mirrored": 0, "errors": 1}, 100, ("fail", "pass", "fail"), ""),
    ],
)
def test_records(counters, percent, verdicts, why):
    records = load("bluegreen_shadow").build_records("lb-1", counters, percent)
    assert tuple(r["verdict"] for r in records) == verdicts
    assert [r["name"] for r in records] == ["shadow_mirrored", "shadow_mismatches", "shadow_errors"]
    assert why in records[0]["message"]


def test_a_batch_both_colors_refuse_is_a_match_not_a_shadow_error(lab):
    """A client's batch nested hundreds of levels deep must not fail a deploy's validation: the live
    and the idle color both refuse it with 400 (and X-Logplatform-Accepted: 0), which the mirror counts
    as a match, not an error (it was a 500 without that header, a shadow error)."""
    lb, nodes = lab
    shadow(lb, state="started", percent=100)
    tree: object = 1
    for _ in range(300):
        tree = [tree]
    client = Client(lb.live_port)
    assert client.post([{**batch(1)[0], "tree": tree}]) == 400
    client.close()
    counters = wait_mirrored(lb, 1)
    failed, result = shadow(lb, state="stopped", fail_on_failed=True)
    assert not failed, result
    assert (counters["mirrored"], counters["errors"], counters["mismatched"]) == (1, 0, 0), counters
    assert lines(nodes["green"].sink_dir.parent / "shadow") == []
