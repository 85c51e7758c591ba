"""bluegreen_config_check and bluegreen_config_drift against real logplatform nodes whose config files are
edited by hand after they started, as a drifted node's would be."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.ansible_modules import load, run_module
from tests.unit.logplatform_node import VENV_LOGPLATFORM, fleet


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    with fleet(tmp_path_factory.mktemp("config")) as start:
        started = {
            "green-1": start("green-1", max_batch_entries=5000),
            "green-2": start("green-2", max_batch_entries=5000),
            # the live color: same shared settings but for the TEST-ONLY fault table
            "blue-1": start("blue-1", color="blue", max_batch_entries=5000, fault={"extra_latency_ms": 1.0}),
        }
        for node in started.values():
            node.wait_ready()
        yield started


@pytest.fixture(scope="module")
def clean(nodes):
    """bluegreen_config_check's result on every node, files untouched (computed once)."""
    return {name: check(node)[1] for name, node in nodes.items()}


@pytest.fixture
def restore(nodes):
    """Put every node's file back after a test that edits one by hand."""
    yield
    for node in nodes.values():
        node.restore_config()


def check(node, check_mode: bool = False, **params):
    args = {"url": node.url, "config_path": str(node.config_path), "logplatform_bin": str(VENV_LOGPLATFORM)}
    return run_module("bluegreen_config_check", {**args, **params}, check_mode=check_mode)


def drift(results, **params):
    return run_module("bluegreen_config_drift", {"results": results, **params})


def test_a_node_running_its_rendered_file_passes_and_returns_the_effective_config(nodes):
    node = nodes["green-1"]
    failed, result = check(node, check_mode=True)
    assert not failed, result
    assert result["changed"] is False
    assert (result["node"], result["color"]) == ("green-1", "green")
    expected = json.loads(
        subprocess.run(
            [VENV_LOGPLATFORM, "--check-config", "--config", node.config_path],
            capture_output=True,
            check=True,
        ).stdout
    )
    assert result["config"] == expected["config"]
    assert result["config"]["max_batch_entries"] == 5000
    assert result["config"]["max_body_bytes"] == 8388608  # defaults applied
    (rec,) = result["records"]
    assert (rec["name"], rec["node"], rec["verdict"]) == ("config_rendered", "green-1", "pass")
    assert rec["observed"] == rec["threshold"] == expected["config_digest"]
    assert result["running"]["config_digest"] == expected["config_digest"]
    assert result["shared_config_digest"] == result["running"]["shared_config_digest"]


def test_release_dir_finds_the_release_binary(nodes, tmp_path):
    release = tmp_path / "releases" / "1.0.0"
    (release / "venv" / "bin").mkdir(parents=True)
    (release / "venv" / "bin" / "logplatform").symlink_to(VENV_LOGPLATFORM)
    node = nodes["green-2"]
    failed, result = run_module(
        "bluegreen_config_check",
        {
            "url": node.url,
            "config_path": str(node.config_path),
            "release_dir": str(release),
            "node": "idle-2",
        },
    )
    assert not failed, result
    assert result["records"][0]["node"] == "idle-2"


def test_idle_nodes_with_the_same_settings_and_the_live_color_pass(clean):
    failed, result = drift([clean["green-1"], clean["green-2"]], baseline=[clean["blue-1"]])
    assert not failed, result
    assert [(r["name"], r["node"], r["verdict"]) for r in result["records"]] == [
        ("config_consistent", "green-1", "pass"),
        ("config_matches_live", "green-1", "pass"),
        ("config_consistent", "green-2", "pass"),
        ("config_matches_live", "green-2", "pass"),
    ]
    assert [r["name"] for r in result["all_records"]][:2] == ["config_rendered", "config_rendered"]
    assert (result["reference"], result["baseline_reference"]) == ("green-1", "blue-1")
    assert result["drift"] == {} and result["baseline_drift"] == {}


def test_a_file_edited_by_hand_fails_naming_the_node_and_the_key(nodes, clean, restore):
    nodes["green-2"].edit_config(max_batch_entries=500)
    failed, one = check(nodes["green-2"])
    assert failed
    assert one["msg"].startswith("check config_rendered on green-2: observed running config_digest ")
    assert "the file changed after the node started; shared settings differ" in one["msg"]
    assert one["config"]["max_batch_entries"] == 500  # what the file says now
    assert one["records"][0]["observed"] == one["running"]["config_digest"] != one["config_digest"]

    # the drift check, fed the failed result too, names the key and both values
    failed, result = drift([clean["green-1"], one])
    assert failed
    assert result["reference"] == "green-1"  # the node that runs its file
    assert result["drift"] == {"green-2": {"max_batch_entries": [500, 5000]}}
    bad = [r for r in result["records"] if r["verdict"] == "fail"]
    assert [(r["name"], r["node"], r["observed"], r["threshold"]) for r in bad] == [
        ("config_consistent", "green-2", {"max_batch_entries": 500}, {"max_batch_entries": 5000})
    ]
    assert "max_batch_entries = 500 on green-2, 5000 on green-1" in result["msg"]
    assert "check config_rendered on green-2" in result["msg"]
    assert result["msg"].startswith("configuration validation: 2 of 4 checks failed")


def test_only_a_node_specific_key_edited_is_said_so_and_is_no_drift(nodes, clean, restore):
    nodes["green-2"].edit_config(sink_dir="/srv/elsewhere")
    failed, one = check(nodes["green-2"])
    assert failed
    assert "only node-specific keys differ (listen_host, listen_port or sink_dir)" in one["msg"]
    failed, result = drift([clean["green-1"], one])
    assert failed  # because green-2 does not run its file
    assert [r["verdict"] for r in result["records"]] == ["pass", "pass"]  # no shared key differs
    assert result["drift"] == {}


def test_a_must_match_key_differing_from_the_live_color_is_named(nodes, clean, restore):
    nodes["blue-1"].edit_config(max_body_bytes=1024)
    results = [clean["green-1"], clean["green-2"]]
    failed, result = drift(results, baseline=[check(nodes["blue-1"])[1]])
    assert failed
    assert result["baseline_drift"] == {
        "green-1": {"max_body_bytes": [8388608, 1024]},
        "green-2": {"max_body_bytes": [8388608, 1024]},
    }
    assert (
        "check config_matches_live on green-1: max_body_bytes = 8388608 on green-1, 1024 on blue-1"
        in (result["msg"])
    )


def test_the_fault_table_is_compared_with_the_live_color_only_when_asked(clean):
    failed, result = drift([clean["green-1"]], baseline=[clean["blue-1"]], baseline_ignore_keys=[])
    assert failed
    assert result["baseline_drift"] == {"green-1": {"fault.extra_latency_ms": [0.0, 1.0]}}
    assert "fault.extra_latency_ms = 0.0 on green-1, 1.0 on blue-1" in result["msg"]


def test_an_invalid_file_fails_with_the_release_s_reason_and_cannot_be_compared(nodes, clean, restore):
    nodes["green-2"].edit_config(max_batch_entrys=10)
    failed, one = check(nodes["green-2"])
    assert failed
    assert "check config_rendered on green-2: the rendered file has no digest" in one["msg"]
    assert "unknown config key 'max_batch_entrys'" in one["msg"]
    failed, result = drift([clean["green-1"], one])
    assert failed
    assert "check config_consistent on green-2: no configuration to compare" in result["msg"]


def test_a_missing_release_binary_is_named(nodes, tmp_path):
    node = nodes["green-1"]
    failed, result = run_module(
        "bluegreen_config_check",
        {"url": node.url, "config_path": str(node.config_path), "release_dir": str(tmp_path)},
    )
    assert failed
    assert f"{tmp_path}/venv/bin/logplatform is not an executable" in result["msg"]


def test_the_reference_is_the_most_common_configuration_among_nodes_running_their_files():
    module = load("bluegreen_config_drift")

    def res(node, batch, runs_file=True):
        verdict = "pass" if runs_file else "fail"
        return {
            "node": node,
            "config": {"node": node, "listen_port": 1, "max_batch_entries": batch},
            "records": [{"name": "config_rendered", "verdict": verdict}],
        }

    assert module.pick_reference([res("a", 1), res("b", 2), res("c", 2)], [])["node"] == "b"
    assert module.pick_reference([res("a", 1, runs_file=False), res("b", 2)], [])["node"] == "b"
    assert module.pick_reference([res("a", 1), res("b", 2)], [])["node"] == "a"
    assert module.pick_reference([{"node": "x", "msg": "failed"}], []) is None
