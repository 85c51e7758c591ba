"""Shadow traffic on the real service: X-Bluegreen-Shadow: 1 batches are processed like any other,
written (marked `_shadow`) to the shadow sink only, and counted apart from production traffic."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lp_helpers import Service, entry
from test_lp_service import metric_samples

SHADOW = {"X-Bluegreen-Shadow": "1", "Content-Type": "application/json"}


def shadow_lines(directory: Path) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.ndjson")):
        lines += [json.loads(line) for line in path.read_bytes().splitlines()]
    return lines


def post(node: Service, entries: list[dict[str, Any]], headers: dict[str, str]) -> Any:
    return node.request("POST", "/v1/logs", json.dumps(entries).encode(), headers)


def test_shadow_batch_goes_to_the_shadow_sink_only(
    start_service: Callable[..., Service], tmp_path: Path
) -> None:
    shadow_dir = tmp_path / "shadow"
    node = start_service(shadow_sink_dir=str(shadow_dir))
    live, mirrored = [entry(0), entry(1)], [entry(2), entry(3), entry(4)]

    resp = node.post_json(live)
    assert (resp.status, resp.json(), resp.headers["x-logplatform-accepted"]) == (200, {"accepted": 2}, "2")
    resp = post(node, mirrored, SHADOW)
    assert (resp.status, resp.json(), resp.headers["x-logplatform-accepted"]) == (200, {"accepted": 3}, "3")

    production = node.sink_lines()
    assert [line["id"] for line in production] == [e["id"] for e in live]
    assert not any("_shadow" in line for line in production)
    shadow = shadow_lines(shadow_dir)
    assert [line["id"] for line in shadow] == [e["id"] for e in mirrored]
    # processed exactly like production entries, plus the mark
    assert all(line["_shadow"] is True and line["_node"] == "blue-1" for line in shadow)
    assert list(shadow[0])[-5:] == ["_color", "_version", "_node", "_ingested_at", "_shadow"]
    assert [p.name for p in shadow_dir.iterdir()] == [p.name for p in node.sink_dir.iterdir()]

    samples = metric_samples(node)
    assert samples[("logplatform_batches_total", (("result", "ok"),))] == 1
    assert samples[("logplatform_entries_accepted_total", (("level", "info"), ("service", "api")))] == 2
    assert samples[("logplatform_shadow_batches_total", (("result", "ok"),))] == 1
    assert samples[("logplatform_shadow_entries_accepted_total", ())] == 3
    assert samples[("logplatform_shadow_sink_bytes_total", ())] > 0

    node.terminate()
    assert node.wait_exit() == 0
    assert "shadow_entries_accepted=3" in node.log()


def test_shadow_refusals_match_production_refusals(
    start_service: Callable[..., Service], tmp_path: Path
) -> None:
    node = start_service(shadow_sink_dir=str(tmp_path / "shadow"), max_batch_entries=2)
    bad = [entry(0), {"level": "info"}]
    live, shadow = node.post_json(bad), post(node, bad, SHADOW)
    assert live.status == shadow.status == 400
    assert live.json() == shadow.json()
    assert live.headers["x-logplatform-accepted"] == shadow.headers["x-logplatform-accepted"] == "0"
    too_many = [entry(0), entry(1), entry(2)]
    assert node.post_json(too_many).status == post(node, too_many, SHADOW).status == 413
    assert shadow_lines(tmp_path / "shadow") == []
    samples = metric_samples(node)
    assert samples[("logplatform_shadow_batches_total", (("result", "rejected"),))] == 2
    assert samples[("logplatform_batches_total", (("result", "rejected"),))] == 2


def test_injected_faults_apply_to_shadow_traffic_too(
    start_service: Callable[..., Service], tmp_path: Path
) -> None:
    node = start_service(shadow_sink_dir=str(tmp_path / "shadow"), fault={"error_rate": 1.0})
    resp = post(node, [entry(0)], SHADOW)
    assert (resp.status, resp.headers["x-logplatform-accepted"]) == (500, "0")
    assert shadow_lines(tmp_path / "shadow") == []
    assert metric_samples(node)[("logplatform_shadow_batches_total", (("result", "error"),))] == 1


def test_without_a_shadow_sink_shadow_traffic_is_refused_never_written(
    start_service: Callable[..., Service],
) -> None:
    node = start_service()
    resp = post(node, [entry(0)], SHADOW)
    assert resp.status == 503
    assert "shadow_sink_dir" in resp.json()["error"]
    assert resp.headers["x-logplatform-accepted"] == "0"
    assert node.sink_lines() == []


def test_a_marker_other_than_1_is_refused(start_service: Callable[..., Service], tmp_path: Path) -> None:
    node = start_service(shadow_sink_dir=str(tmp_path / "shadow"))
    sent = [entry(0)]
    resp = post(node, sent, {"X-Bluegreen-Shadow": "yes", "Content-Type": "application/json"})
    assert resp.status == 400
    assert "X-Bluegreen-Shadow" in resp.json()["error"]
    assert node.sink_lines() == []
    assert shadow_lines(tmp_path / "shadow") == []


def test_a_client_cannot_send_the_shadow_mark(node: Service) -> None:
    resp = node.post_json([entry(0, _shadow=True)])
    assert resp.status == 400
    assert resp.json()["field"] == "_shadow"


def test_shadow_copy_of_a_too_deep_batch_is_refused_like_the_live_one_not_an_error(
    start_service: Callable[..., Service], tmp_path: Path
) -> None:
    """An unauthenticated client must not be able to fail a deploy's validation: the live color and
    the mirrored copy both answer 400 (a match for the mirror), and the node counts no shadow error."""
    node = start_service(shadow_sink_dir=str(tmp_path / "shadow"))
    tree: Any = 1
    for _ in range(300):
        tree = {"down": tree}
    batch = [entry(0, tree=tree)]
    live = post(node, batch, {"Content-Type": "application/json"})
    mirrored = post(node, batch, SHADOW)
    assert (live.status, live.headers["x-logplatform-accepted"]) == (400, "0")
    assert (mirrored.status, mirrored.headers["x-logplatform-accepted"]) == (400, "0")
    assert mirrored.json() == live.json()
    samples = metric_samples(node)
    assert samples[("logplatform_shadow_batches_total", (("result", "rejected"),))] == 1
    assert samples[("logplatform_shadow_batches_total", (("result", "error"),))] == 0
    assert shadow_lines(tmp_path / "shadow") == []
