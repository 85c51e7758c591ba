"""bluegreen_watch against a real HAProxy: real requests through the live frontend during the watch."""

from __future__ import annotations

import json
import threading
import time

import pytest

from tests.ansible_modules import run_module
from tests.unit import haproxy_fixture
from tests.unit.node_fixture import running_nodes


@pytest.fixture
def nodes():
    with running_nodes(blue=["1.0.0", "1.0.0"]) as running:
        yield running["blue"]


@pytest.fixture
def haproxy(tmp_path, nodes):
    with haproxy_fixture.running(tmp_path, nodes={"blue": [n.address for n in nodes]}) as lb:
        yield lb


class Traffic:
    """POSTs through the live frontend from a thread: `count` of them after `delay`, or until stopped."""

    def __init__(self, haproxy, count: int | None = None, delay: float = 0.0) -> None:
        self.haproxy, self.count, self.delay = haproxy, count, delay
        self.statuses: list[int] = []
        self.started: list[float] = []  # when each request was sent (time.monotonic), in step with statuses
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        if self._stop.wait(self.delay):
            return
        while not self._stop.is_set() and (self.count is None or len(self.statuses) < self.count):
            sent = time.monotonic()
            self.statuses.append(self.haproxy.request(self.haproxy.live_port, "POST"))
            self.started.append(sent)
            self._stop.wait(0.005)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def watch(haproxy, **params):
    return run_module("bluegreen_watch", {"socket": haproxy.socket, "color": "blue", **params})


def test_clean_traffic_passes_and_every_request_is_counted(haproxy):
    # 40 requests, starting once the watch has taken its first sample
    with Traffic(haproxy, count=40, delay=0.2) as traffic:
        failed, result = watch(haproxy, seconds=1.2, interval=0.3)
    assert not failed, result
    assert traffic.statuses == [200] * 40
    assert result["changed"] is False
    assert (result["requests"], result["errors"]) == (40, 0)
    assert 4 <= len(result["samples"]) <= 5
    assert all(s["error_rate"] == 0.0 and s["queue"] == 0 for s in result["samples"])
    assert sum(s["seconds"] for s in result["samples"]) == pytest.approx(1.2, abs=0.15)


def test_5xx_fails_within_one_interval_naming_color_rate_and_threshold(haproxy, nodes):
    interval = 0.3
    turned_bad = []

    def turn_bad() -> None:
        for node in nodes:
            node.status = 500
        turned_bad.append(time.monotonic())

    timer = threading.Timer(1.0, turn_bad)
    with Traffic(haproxy):
        timer.start()
        try:
            failed, result = watch(haproxy, seconds=10, interval=interval)  # default threshold 1%
            returned = time.monotonic()
        finally:
            timer.cancel()
    assert failed
    # the rest of the interval in which the errors began, plus one sample (slack for a loaded machine)
    assert returned - turned_bad[0] < 2 * interval
    last = result["samples"][-1]
    assert last["errors"] > 0
    assert last["requests"] >= 5
    assert "blue error rate" in result["msg"]
    assert f"{last['error_rate']:.2%} ({last['errors']} of {last['requests']} requests)" in result["msg"]
    assert "over the threshold 1.00%" in result["msg"]
    assert "lb " in result["msg"]
    # the intervals before the nodes turned bad were clean and were judged
    assert all(s["errors"] == 0 and s["requests"] >= 5 for s in result["samples"][:-1])
    assert len(result["samples"]) >= 2


def test_intervals_with_fewer_than_min_requests_are_not_judged(haproxy, nodes):
    for node in nodes:
        node.status = 500
    with Traffic(haproxy, count=3, delay=0.2) as traffic:
        failed, result = watch(haproxy, seconds=0.8, interval=0.4, min_requests=5)
    assert traffic.statuses == [500] * 3
    assert not failed, result["msg"]
    assert (result["requests"], result["errors"]) == (3, 3)
    # the same three errors in one interval are judged once the interval is big enough to count
    with Traffic(haproxy, count=3, delay=0.2):
        failed, result = watch(haproxy, seconds=0.8, interval=0.4, min_requests=3)
    assert failed
    assert "error rate 100.00% (3 of 3 requests)" in result["msg"]


def test_unreachable_haproxy_fails_naming_the_socket(tmp_path):
    failed, result = run_module(
        "bluegreen_watch", {"socket": str(tmp_path / "missing.sock"), "color": "green", "seconds": 1}
    )
    assert failed
    assert "watch on lb " in result["msg"]
    assert "missing.sock" in result["msg"]
    assert result["samples"] == []


def test_rollback_to_puts_traffic_back_at_once_when_the_new_color_fails(tmp_path):
    """green is live and starts failing: the watch itself moves traffic back to blue (files first)."""
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    state = {"live": "green", "previous": "blue", "versions": {"blue": "1.0.0", "green": "1.1.0"}}
    (state_dir / "state.json").write_text(json.dumps(state))
    (tmp_path / "lb").mkdir()
    with running_nodes(blue=["1.0.0"], green=["1.1.0", "1.1.0"]) as nodes:
        addresses = {color: [n.address for n in group] for color, group in nodes.items()}
        with haproxy_fixture.running(tmp_path / "lb", live="green", nodes=addresses) as haproxy:
            turned_bad = []

            def turn_bad() -> None:
                for node in nodes["green"]:
                    node.status = 500
                turned_bad.append(time.monotonic())

            timer = threading.Timer(1.0, turn_bad)
            with Traffic(haproxy) as traffic:
                timer.start()
                try:
                    failed, result = run_module(
                        "bluegreen_watch",
                        {
                            "socket": haproxy.socket,
                            "map": haproxy.live_map,
                            "state_dir": str(state_dir),
                            "color": "green",
                            "seconds": 20,
                            "interval": 0.3,
                            "rollback_to": "blue",
                        },
                    )
                    returned = time.monotonic()
                    time.sleep(0.5)
                finally:
                    timer.cancel()
            assert failed
            assert "green error rate" in result["msg"]
            assert "traffic put back on blue on this lb at once" in result["msg"]
            assert result["rolled_back"]["to"] == "blue"
            assert result["rolled_back"]["error"] is None
            # within about one interval of the first error (the bound leaves room for a busy machine)
            assert returned - turned_bad[0] < 3.0
            assert haproxy.color_at(haproxy.live_port) == "blue"
            assert (haproxy.dir / "live.map").read_text() == "live blue\n"
            assert json.loads((state_dir / "state.json").read_text())["live"] == "blue"
            # every request sent after the watch returned was served by blue (one sent before may still
            # have been answered by green)
            after = [
                status
                for sent, status in zip(traffic.started, traffic.statuses, strict=True)
                if sent > returned
            ]
            assert after
            assert set(after) == {200}
