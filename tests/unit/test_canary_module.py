"""bluegreen_canary against real logplatform nodes behind a real HAProxy (live: blue, preview: green):
each green node takes a canary through preview and writes it to its sink; a frontend that serves the
other color, a node that answers without writing (the TEST-ONLY fault lose_writes) and a wrong version
each fail with a record naming the node and what was observed."""

from __future__ import annotations

import threading
import time

import pytest
from logplatform._version import __version__ as VERSION

from tests.ansible_modules import run_module
from tests.unit import haproxy_fixture
from tests.unit.logplatform_node import fleet

GREEN = ["green-1", "green-2"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """green-1, green-2 (preview), blue-1 (live) and green-lossy, alone behind a second HAProxy."""
    directory = tmp_path_factory.mktemp("canary")
    with fleet(directory / "nodes") as start:
        nodes = {name: start(name) for name in GREEN}
        nodes["blue-1"] = start("blue-1", color="blue")
        lossy = start("green-1-lossy", fault={"lose_writes": True})
        for node in [*nodes.values(), lossy]:
            node.wait_ready()
        addresses = {
            "green": [f"127.0.0.1:{nodes[name].port}" for name in GREEN],
            "blue": [f"127.0.0.1:{nodes['blue-1'].port}"],
        }
        (directory / "lb").mkdir()
        (directory / "lossy-lb").mkdir()
        with (
            haproxy_fixture.running(directory / "lb", live="blue", nodes=addresses) as lb,
            haproxy_fixture.running(
                directory / "lossy-lb", live="blue", nodes={"green": [f"127.0.0.1:{lossy.port}"]}
            ) as lossy_lb,
        ):
            yield {"lb": lb, "nodes": nodes, "lossy": lossy, "lossy_lb": lossy_lb}


def url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def canary(check_mode: bool = False, **params):
    return run_module("bluegreen_canary", params, check_mode=check_mode)


def sink_has(node, prefix: str) -> list[str]:
    return [i for i in node.sink_ids() if i and i.startswith(prefix)]


def test_each_node_takes_a_canary_through_preview_and_has_it_in_its_sink(lab):
    failed, sent = canary(url=url(lab["lb"].preview_port), nodes=GREEN, color="green", id="canary-ok")
    assert not failed, sent
    assert sent["changed"] is False
    assert set(sent["sent"]) == set(GREEN)
    for rec in sent["records"]:
        assert (rec["name"], rec["verdict"], rec["op"]) == ("canary_routed", "pass", "==")
        assert rec["observed"] == f"200 from green {rec['node']}"
        assert rec["threshold"] == f"200 from {rec['node']} of green"
    assert [r["node"] for r in sent["records"]] == GREEN
    assert len(sent["answers"]) <= 4 * len(GREEN)
    for name in GREEN:
        node = lab["nodes"][name]
        failed, found = canary(
            sink_dir=str(node.sink_dir), node=name, id=sent["sent"][name], version=VERSION, timeout=10
        )
        assert not failed, found
        (rec,) = found["records"]
        assert (rec["name"], rec["node"], rec["observed"], rec["verdict"]) == (
            "canary_in_sink",
            name,
            "in sink",
            "pass",
        )
        assert rec["threshold"] == f"in sink with _version {VERSION} within 10s"
        assert found["found"] is True
        assert sent["sent"][name] in node.sink_ids()


def test_one_call_sends_and_finds_for_one_node(lab):
    node = lab["nodes"]["green-2"]
    failed, result = canary(
        url=url(lab["lb"].preview_port),
        color="green",
        sink_dir=str(node.sink_dir),
        node="green-2",
        id="canary-one",
        version=VERSION,
        timeout=10,
    )
    assert not failed, result
    assert [(r["name"], r["node"], r["verdict"]) for r in result["records"]] == [
        ("canary_routed", "green-2", "pass"),
        ("canary_in_sink", "green-2", "pass"),
    ]


def test_a_node_haproxy_sees_up_only_later_still_gets_its_canary_within_the_timeout(lab):
    """Right after provision, HAProxy may not yet count a restarted node up (rise x inter): the canary
    waits for it instead of giving up after a burst of entries all answered by the other node."""
    lb = lab["lb"]
    lb.command("disable server bg_green/green-2")
    enable = threading.Timer(1.5, lb.command, ("enable server bg_green/green-2",))
    enable.start()
    try:
        failed, result = canary(
            url=url(lab["lb"].preview_port), nodes=GREEN, color="green", id="canary-late", timeout=15
        )
    finally:
        enable.cancel()
        lb.command("enable server bg_green/green-2")
    assert not failed, result
    assert set(result["sent"]) == set(GREEN)
    late = next(r for r in result["records"] if r["node"] == "green-2")
    assert late["detail"]["attempts"] > 2  # green-1 answered the entries sent meanwhile


def test_a_frontend_that_serves_the_other_color_fails_naming_the_node_and_who_answered(lab):
    failed, result = canary(
        url=url(lab["lb"].live_port), nodes=["green-1"], color="green", id="canary-live", timeout=1
    )
    assert failed
    (rec,) = result["records"]
    sent = len(result["answers"])
    assert sent >= 2
    assert (rec["name"], rec["node"], rec["verdict"]) == ("canary_routed", "green-1", "fail")
    assert f"never answered by green-1 in {sent} entries" in rec["observed"]
    assert f"200 from blue blue-1 x{sent}" in rec["observed"]
    assert result["sent"] == {}
    assert "check canary_routed on green-1: observed never answered by green-1" in result["msg"]
    assert "threshold == 200 from green-1 of green" in result["msg"]
    # the entries the live color took are in its sink, like any client's
    assert len(sink_has(lab["nodes"]["blue-1"], "canary-live-")) == sent


def test_an_entry_that_never_reaches_the_sink_fails_naming_the_node_and_what_was_observed(lab):
    lossy = lab["lossy"]
    started = time.monotonic()
    failed, result = canary(
        url=url(lab["lossy_lb"].preview_port),
        color="green",
        sink_dir=str(lossy.sink_dir),
        node="green-1",  # HAProxy's name for it
        id="canary-lost",
        version=VERSION,
        timeout=1.5,
    )
    waited = time.monotonic() - started
    assert failed
    routed, in_sink = result["records"]
    assert routed["verdict"] == "pass"  # it answered 200 ...
    assert (in_sink["name"], in_sink["node"], in_sink["observed"], in_sink["verdict"]) == (
        "canary_in_sink",
        "green-1",
        "not in sink",
        "fail",
    )  # ... and wrote nothing
    entry_id = result["sent"]["green-1"]
    assert in_sink["message"] == (
        f"check canary_in_sink on green-1: observed canary {entry_id} NOT in the sink {lossy.sink_dir}, "
        f"threshold == in sink with _version {VERSION} within 1.5s"
    )
    assert in_sink["message"] in result["msg"]
    assert result["found"] is False
    assert 1.5 <= waited < 30


def test_an_entry_processed_by_another_version_fails_naming_the_version_seen(lab):
    node = lab["nodes"]["green-1"]
    failed, sent = canary(url=url(lab["lb"].preview_port), nodes=["green-1"], color="green", id="canary-v")
    assert not failed, sent
    failed, found = canary(
        sink_dir=str(node.sink_dir), node="green-1", id=sent["sent"]["green-1"], version="9.9.9", timeout=5
    )
    assert failed
    (rec,) = found["records"]
    assert rec["observed"] == f"in sink with _version {VERSION}"
    assert rec["verdict"] == "fail"
    assert f"with _version {VERSION}, threshold == in sink with _version 9.9.9 within 5s" in found["msg"]


def test_check_mode_sends_nothing_and_skips(lab):
    failed, result = canary(
        check_mode=True, url=url(lab["lb"].preview_port), nodes=GREEN, color="green", id="canary-check"
    )
    assert not failed, result
    assert [(r["node"], r["verdict"]) for r in result["records"]] == [(n, "skip") for n in GREEN]
    assert result["sent"] == {}
    for name in GREEN:
        assert not sink_has(lab["nodes"][name], "canary-check")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"id": "x"}, "one of the following is required: url, sink_dir"),
        ({"id": "x", "sink_dir": "/tmp"}, "missing parameter(s) required by 'sink_dir': node, version"),
        ({"id": "x", "url": "http://127.0.0.1:1"}, "sending through url needs nodes (or node)"),
        ({"id": "", "sink_dir": "/tmp", "node": "n", "version": "1.0.0"}, "id must not be empty"),
    ],
)
def test_bad_arguments_are_refused_naming_the_problem(params, message):
    failed, result = canary(**params)
    assert failed
    assert message in result["msg"]
