"""plugins/module_utils/bluegreen_stats.py: summaries of `show stat`, unhealthy servers, interval rates."""

from __future__ import annotations

import time

import pytest
from ansible.module_utils.bluegreen_haproxy import HAProxyRuntime
from ansible.module_utils.bluegreen_stats import COUNTERS, interval_rates, summarize, unhealthy_servers

from tests.unit import haproxy_fixture
from tests.unit.node_fixture import running_nodes


def row(pxname: str, svname: str, **fields: str) -> dict[str, str]:
    """One `show stat` row as HAProxy's CSV gives it: every field a string, unset ones empty."""
    return {"pxname": pxname, "svname": svname, **dict.fromkeys(COUNTERS, ""), **fields}


def backend(qcur: int = 0, **counters: int) -> dict:
    return {"qcur": qcur, "counters": {key: counters.get(key, 0) for key in COUNTERS}}


ROWS = [
    row("live", "FRONTEND", status="OPEN", stot="40", hrsp_5xx="9"),
    row("stats", "BACKEND", status="UP", stot="3"),
    # "* " is how HAProxy's CSV marks a check in progress; the last result follows it
    row("bg_blue", "blue-2", status="DOWN", check_status="* L4CON", addr="127.0.0.1:2", scur="0", stot="7"),
    row("bg_blue", "blue-1", status="UP", check_status="L7OK", addr="127.0.0.1:1", scur="2", stot="30"),
    row("bg_blue", "BACKEND", status="UP", qcur="4", scur="2", stot="37", hrsp_2xx="35", hrsp_5xx="2"),
    row("bg_green", "green-1", status="MAINT", check_status="", addr="127.0.0.1:3", scur="", stot=""),
    row("bg_green", "BACKEND", status="DOWN", qcur="", scur="", stot="bogus"),
]


def test_summarize_keeps_color_backends_with_their_servers():
    backends = summarize(ROWS)
    assert set(backends) == {"bg_blue", "bg_green"}  # frontends and other proxies are not colors
    blue = backends["bg_blue"]
    assert (blue["status"], blue["qcur"], blue["scur"]) == ("UP", 4, 2)
    assert blue["counters"]["stot"] == 37
    assert blue["counters"]["hrsp_2xx"] == 35
    assert blue["counters"]["hrsp_5xx"] == 2
    assert blue["counters"]["econ"] == 0  # empty CSV field
    assert blue["servers"] == {
        "blue-1": {"status": "UP", "check_status": "L7OK", "address": "127.0.0.1:1", "scur": 2, "stot": 30},
        "blue-2": {"status": "DOWN", "check_status": "L4CON", "address": "127.0.0.1:2", "scur": 0, "stot": 7},
    }
    assert (blue["servers_up"], blue["servers_total"]) == (1, 2)
    green = backends["bg_green"]
    assert green["counters"]["stot"] == 0  # not a number
    assert (green["servers_up"], green["servers_total"]) == (0, 1)


def test_unhealthy_servers_names_each_with_status_and_check():
    backends = summarize(ROWS)
    assert unhealthy_servers(backends["bg_blue"]) == ["blue-2 (DOWN, check L4CON)"]
    assert unhealthy_servers(backends["bg_green"]) == ["green-1 (MAINT, check -)"]
    assert unhealthy_servers({"servers": {}}) == []


def test_interval_rates_are_deltas_over_the_interval():
    before = backend(stot=100, hrsp_2xx=90, hrsp_4xx=5, hrsp_5xx=5)
    after = backend(qcur=3, stot=300, hrsp_2xx=280, hrsp_3xx=2, hrsp_4xx=10, hrsp_5xx=8)
    rates = interval_rates(before, after, 2.0)
    assert rates["requests"] == 200
    assert rates["errors"] == 3  # 4xx are the clients' errors, not the color's
    assert rates["error_rate"] == 0.015
    assert rates["req_per_s"] == 100.0
    assert rates["queue"] == 3
    assert rates["seconds"] == 2.0
    assert rates["delta"]["hrsp_2xx"] == 190


def test_interval_rates_of_an_idle_interval_are_zero():
    idle = backend(stot=10, hrsp_2xx=10)
    assert interval_rates(idle, idle, 1.0)["error_rate"] == 0.0
    assert interval_rates(idle, idle, 0.0)["req_per_s"] == 0.0


@pytest.fixture
def lb_with_nodes(tmp_path):
    with (
        running_nodes(blue=["1.0.0", "1.0.0"]) as nodes,
        haproxy_fixture.running(tmp_path, nodes={"blue": [n.address for n in nodes["blue"]]}) as lb,
    ):
        yield lb, nodes["blue"]


def rates_of_ten_requests(lb) -> tuple[list[int], dict]:
    runtime = HAProxyRuntime(lb.socket)
    before = summarize(runtime.show_stat())["bg_blue"]
    statuses = [lb.request(lb.live_port) for _ in range(10)]
    after = summarize(runtime.show_stat())["bg_blue"]
    return statuses, interval_rates(before, after, 1.0)


def test_a_check_in_progress_still_shows_the_last_result(lb_with_nodes):
    lb, _ = lb_with_nodes
    runtime = HAProxyRuntime(lb.socket)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # a check every 200 ms: one read in ~100 catches one running
        rows = runtime.show_stat()
        raw = {r["svname"]: r["check_status"] for r in rows if r["pxname"] == "bg_blue"}
        if any(status.startswith("* ") for status in raw.values()):
            servers = summarize(rows)["bg_blue"]["servers"]
            assert {name: servers[name]["check_status"] for name in ("blue-1", "blue-2")} == {
                "blue-1": "L7OK",
                "blue-2": "L7OK",
            }, raw
            return
    pytest.fail("never caught HAProxy with a health check in progress")


def test_real_5xx_answers_count_once(lb_with_nodes):
    lb, (_, bad) = lb_with_nodes
    bad.status = 500
    statuses, rates = rates_of_ten_requests(lb)
    assert sorted(statuses) == [200] * 5 + [500] * 5  # round robin over one good and one bad node
    assert (rates["requests"], rates["errors"], rates["error_rate"]) == (10, 5, 0.5)


def test_broken_responses_count_once(lb_with_nodes):
    lb, (_, bad) = lb_with_nodes
    lb.command("disable health bg_blue/blue-2")  # HAProxy keeps routing to it, as before a check fails
    bad.status = 0  # accepts the request, hangs up without an answer
    statuses, rates = rates_of_ten_requests(lb)
    assert sorted(statuses) == [200] * 5 + [502] * 5
    assert rates["delta"]["eresp"] == 5
    assert (rates["requests"], rates["errors"], rates["error_rate"]) == (10, 5, 0.5)
