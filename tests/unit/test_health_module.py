"""bluegreen_health against real logplatform nodes: a good one, one that never gets ready, one that lies
about its version (the TEST-ONLY [fault] table), and an address where nothing listens."""

from __future__ import annotations

import time

import pytest
from logplatform._version import __version__ as VERSION

from tests.ansible_modules import run_module
from tests.unit.logplatform_node import fleet, free_port


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    with fleet(tmp_path_factory.mktemp("health")) as start:
        started = {
            "good": start("green-1"),
            "never_ready": start("green-2", fault={"never_ready": True}),
            "wrong_version": start("green-3", fault={"report_version": "9.9.9"}),
        }
        started["good"].wait_ready()
        started["never_ready"].wait_listening()
        started["wrong_version"].wait_ready()
        yield started


def health(url: str, check_mode: bool = False, **params):
    return run_module("bluegreen_health", {"url": url, **params}, check_mode=check_mode)


@pytest.mark.parametrize("check_mode", [False, True])
def test_ready_node_on_the_expected_version_passes_with_two_records(nodes, check_mode):
    failed, result = health(nodes["good"].url, check_mode=check_mode, version=VERSION, timeout=5)
    assert not failed, result
    assert result["changed"] is False
    assert result["ready"] is True
    assert result["node"] == "green-1"  # as the service reports it in /version
    assert result["reported"]["color"] == "green"
    ready, version = result["records"]
    assert (ready["name"], ready["node"], ready["observed"], ready["threshold"], ready["verdict"]) == (
        "health_ready",
        "green-1",
        200,
        200,
        "pass",
    )
    assert ready["detail"]["attempts"] == 1
    assert (version["name"], version["observed"], version["threshold"], version["verdict"]) == (
        "health_version",
        VERSION,
        VERSION,
        "pass",
    )


def test_never_ready_fails_after_the_timeout_naming_check_node_observed_and_threshold(nodes):
    started = time.monotonic()
    failed, result = health(
        nodes["never_ready"].url, version=VERSION, node="idle-b", timeout=1.0, interval=0.2
    )
    elapsed = time.monotonic() - started
    assert failed
    assert 1.0 <= elapsed < 3.0
    assert result["ready"] is False
    ready, version = result["records"]
    assert ready["verdict"] == "fail" and ready["observed"] == 503
    assert ready["detail"]["attempts"] >= 5
    assert "not-ready" in ready["detail"]["answer"]
    assert version["verdict"] == "pass"  # the version is still read and reported
    msg = result["msg"]
    assert "check health_ready on idle-b: observed 503" in msg
    assert "not-ready" in msg
    assert "threshold 200 within 1s" in msg


def test_wrong_version_fails_naming_observed_and_expected_version(nodes):
    failed, result = health(nodes["wrong_version"].url, version=VERSION, timeout=2)
    assert failed
    ready, version = result["records"]
    assert ready["verdict"] == "pass"
    assert (version["observed"], version["threshold"], version["verdict"]) == ("9.9.9", VERSION, "fail")
    assert result["msg"] == (
        "bluegreen_health on green-3: 1 of 2 checks failed: "
        f"check health_version on green-3: observed 9.9.9, threshold == {VERSION}"
    )


def test_without_an_expected_version_the_version_is_recorded_not_judged(nodes):
    failed, result = health(nodes["wrong_version"].url, timeout=2)
    assert not failed, result
    assert result["records"][1]["observed"] == "9.9.9"
    assert result["records"][1]["verdict"] == "skip"


def test_a_node_that_becomes_ready_while_waiting_passes(tmp_path):
    with fleet(tmp_path) as start:
        node = start("green-9")  # just spawned: not even listening yet
        failed, result = health(node.url, version=VERSION, timeout=15, interval=0.1)
    assert not failed, result
    assert result["records"][0]["detail"]["attempts"] > 1


def test_nothing_listening_fails_both_checks():
    url = f"http://127.0.0.1:{free_port()}"
    failed, result = health(url, version="1.0.0", node="green-7", timeout=0.3, interval=0.1)
    assert failed
    assert [r["verdict"] for r in result["records"]] == ["fail", "fail"]
    assert result["reported"] is None
    assert "check health_ready on green-7: observed no answer" in result["msg"]
    assert "Connection refused" in result["msg"]
    assert "check health_version on green-7: observed no version" in result["msg"]
