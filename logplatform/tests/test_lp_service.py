"""The real service over HTTP: ingest, refusals, health, version, metrics.

One node (a subprocess, max_body_bytes=4096, max_batch_entries=20) serves this module; every
test uses its own entry ids, so tests never depend on each other's sink lines.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from logplatform._version import __version__
from logplatform.config import config_digest, load_config, shared_config_digest
from lp_helpers import Service, entry
from prometheus_client.parser import text_string_to_metric_families

TS_FORMAT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def assert_batch_absent(node: Service, entries: list[dict[str, Any]]) -> None:
    """No id of ``entries`` in the sink, checked after a later batch was acknowledged."""
    marker = entry(service="marker")
    assert node.post_json([marker]).status == 200
    ids = set(node.sink_ids())
    assert marker["id"] in ids
    assert not ids & {e["id"] for e in entries}


def metric_samples(node: Service) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = node.get("/metrics")
    assert resp.status == 200
    assert resp.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(resp.body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_valid_batch_is_acknowledged_and_every_entry_is_in_the_sink(node: Service) -> None:
    entries = [
        entry(0, ts="2026-11-24T10:00:00+02:00", level="WARN", tags={"k": [1, 2]}),
        entry(1, ts=1764000000.5),
        entry(2, ts="2026-11-24T10:00:00.123456789Z", level="error", service="db"),
    ]
    resp = node.post_json(entries)
    assert resp.status == 200
    assert resp.json() == {"accepted": 3}

    lines = {line["id"]: line for line in node.sink_lines() if "id" in line}
    first, second, third = (lines[e["id"]] for e in entries)
    assert first["ts"] == "2026-11-24T08:00:00.000000Z"
    assert first["level"] == "warn"
    assert first["tags"] == {"k": [1, 2]}
    assert second["ts"] == "2025-11-24T16:00:00.500000Z"
    assert third["ts"] == "2026-11-24T10:00:00.123456Z"
    assert third["service"] == "db"
    for line, sent in zip((first, second, third), entries, strict=True):
        assert line["message"] == sent["message"]
        assert line["_color"] == "blue"
        assert line["_node"] == "blue-1"
        assert line["_version"] == __version__
        assert TS_FORMAT.fullmatch(line["_ingested_at"])
    assert first["_ingested_at"] == third["_ingested_at"]  # one timestamp per batch


@pytest.mark.parametrize("content_type", ["application/x-ndjson", "application/jsonlines", None])
def test_ndjson_batch(node: Service, content_type: str | None) -> None:
    entries = [entry(i) for i in range(3)]
    body = b"\n".join(json.dumps(e).encode() for e in entries) + b"\n\n"
    headers = {"Content-Type": content_type} if content_type else {}
    resp = node.request("POST", "/v1/logs", body, headers)
    assert (resp.status, resp.json()) == (200, {"accepted": 3})
    assert {e["id"] for e in entries} <= set(node.sink_ids())


def test_array_without_content_type_is_sniffed(node: Service) -> None:
    entries = [entry(i) for i in range(2)]
    resp = node.post_json(entries, content_type=None)
    assert (resp.status, resp.json()) == (200, {"accepted": 2})
    assert {e["id"] for e in entries} <= set(node.sink_ids())


def bad_body_cases() -> list[Any]:
    def batch_with(bad: Any) -> list[Any]:
        return [entry(0), entry(1), bad]

    return [
        pytest.param(
            batch_with(entry(2, level=5)), (400, "level must be a string", 2, "level"), id="wrong-type"
        ),
        pytest.param(
            batch_with({k: v for k, v in entry(2).items() if k != "service"}),
            (400, "missing required field 'service'", 2, "service"),
            id="missing-field",
        ),
        pytest.param(batch_with(entry(2, ts="yesterday")), (400, "RFC 3339", 2, "ts"), id="bad-ts"),
        pytest.param(batch_with(entry(2, level="loud")), (400, "is not one of", 2, "level"), id="bad-level"),
        pytest.param(batch_with(entry(2, _node="x")), (400, "reserved", 2, "_node"), id="reserved"),
        pytest.param(batch_with(entry(2, id=7)), (400, "id must be a string", 2, "id"), id="id-not-string"),
        pytest.param(batch_with("text"), (400, "must be a JSON object", 2, None), id="not-object"),
        pytest.param([entry(i) for i in range(21)], (413, "over the limit of 20", None, None), id="too-many"),
    ]


@pytest.mark.parametrize(("entries", "expected"), bad_body_cases())
def test_bad_batch_is_refused_and_nothing_of_it_is_written(
    node: Service, entries: list[Any], expected: tuple[int, str, int | None, str | None]
) -> None:
    status, reason, index, field = expected
    resp = node.post_json(entries)
    assert resp.status == status
    body = resp.json()
    assert reason in body["error"]
    assert body["entry"] == index
    assert body["field"] == field
    assert_batch_absent(node, [e for e in entries if isinstance(e, dict) and "id" in e])


def test_malformed_json_is_400(node: Service) -> None:
    good = entry(0)
    body = json.dumps([good]).encode()[:-1] + b", {"
    resp = node.request("POST", "/v1/logs", body, {"Content-Type": "application/json"})
    assert resp.status == 400
    assert resp.json()["error"].startswith("malformed JSON")
    assert_batch_absent(node, [good])


def test_malformed_ndjson_line_is_400_and_nothing_written(node: Service) -> None:
    good = entry(0)
    body = json.dumps(good).encode() + b"\n{not json}\n"
    resp = node.request("POST", "/v1/logs", body, {"Content-Type": "application/x-ndjson"})
    assert resp.status == 400
    assert resp.json()["entry"] == 1
    assert "line 2" in resp.json()["error"]
    assert_batch_absent(node, [good])


def test_empty_batch_is_400(node: Service) -> None:
    resp = node.post_json([])
    assert resp.status == 400
    assert "empty batch" in resp.json()["error"]


def test_oversize_body_is_413_by_content_length(node: Service) -> None:
    entries = [entry(i, message="x" * 400) for i in range(12)]  # > 4096 bytes, <= 20 entries
    body = json.dumps(entries).encode()
    assert len(body) > 4096
    resp = node.request("POST", "/v1/logs", body, {"Content-Type": "application/json"})
    assert resp.status == 413
    assert "larger than the limit of 4096 bytes" in resp.json()["error"]
    assert_batch_absent(node, entries)


def test_oversize_chunked_body_is_413_while_reading(node: Service) -> None:
    entries = [entry(i, message="x" * 400) for i in range(12)]
    body = json.dumps(entries).encode()
    chunks = [body[i : i + 1000] for i in range(0, len(body), 1000)]  # no Content-Length
    resp = node.request("POST", "/v1/logs", iter(chunks), {"Content-Type": "application/json"})
    assert resp.status == 413
    assert "larger than the limit" in resp.json()["error"]
    assert_batch_absent(node, entries)


def test_small_chunked_body_is_accepted(node: Service) -> None:
    entries = [entry(i) for i in range(3)]
    body = json.dumps(entries).encode()
    resp = node.request(
        "POST", "/v1/logs", iter([body[:10], body[10:]]), {"Content-Type": "application/json"}
    )
    assert (resp.status, resp.json()) == (200, {"accepted": 3})


def test_wrong_content_type_is_415(node: Service) -> None:
    entries = [entry(0)]
    resp = node.post_json(entries, content_type="text/html")
    assert resp.status == 415
    assert "text/html" in resp.json()["error"]
    assert_batch_absent(node, entries)


def test_health(node: Service) -> None:
    live = node.get("/health/live")
    assert live.status == 200
    ready = node.get("/health/ready")
    assert (ready.status, ready.json()) == (200, {"status": "ready"})


def test_version(node: Service) -> None:
    resp = node.get("/version")
    assert resp.status == 200
    body = resp.json()
    config = load_config(node.config_path)
    assert body == {
        "version": __version__,
        "color": "blue",
        "node": "blue-1",
        "config_digest": config_digest(config),
        "shared_config_digest": shared_config_digest(config),
        "started_at": body["started_at"],
        "quick_stop": "SIGQUIT",
    }
    assert TS_FORMAT.fullmatch(body["started_at"])


def test_unknown_route_and_method(node: Service) -> None:
    assert node.get("/nope").status == 404
    assert node.get("/v1/logs").status == 405


def test_metrics_count_what_happened(node: Service) -> None:
    before = metric_samples(node)
    entries = [entry(0, service="metrics-svc"), entry(1, service="metrics-svc", level="ERROR")]
    entries.append(entry(2, service="metrics-svc"))
    assert node.post_json(entries).status == 200
    assert node.post_json([entry(0, level=1)]).status == 400
    after = metric_samples(node)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after[key] - before.get(key, 0.0)

    assert after[("logplatform_entries_accepted_total", (("level", "info"), ("service", "metrics-svc")))] == 2
    assert (
        after[("logplatform_entries_accepted_total", (("level", "error"), ("service", "metrics-svc")))] == 1
    )
    assert delta("logplatform_batches_total", result="ok") == 1
    assert delta("logplatform_batches_total", result="rejected") == 1
    assert delta("logplatform_batches_total", result="error") == 0
    assert delta("logplatform_rejects_total", reason="invalid_field") == 1
    assert delta("logplatform_rejects_total", reason="malformed_json") == 0
    assert delta("logplatform_request_duration_seconds_count", route="/v1/logs") == 2
    assert delta("logplatform_sink_bytes_total") > 3 * 150
    assert delta("logplatform_sink_group_commit_batches_count") == 1
    assert delta("logplatform_sink_group_commit_entries_sum") == 3
    assert delta("logplatform_sink_fsync_duration_seconds_count") == 1
    assert after[("logplatform_inflight_requests", ())] == 1  # the /metrics request itself
    assert after[("logplatform_ready", ())] == 1
    info = (("color", "blue"), ("node", "blue-1"), ("version", __version__))
    assert after[("logplatform_build_info", info)] == 1
    assert not any(name.endswith("_created") for name, _ in after)


def nested(depth: int) -> Any:
    """A value holding ``depth`` arrays (and an object every tenth level) inside each other."""
    value: Any = 1
    for level in range(depth):
        value = {"d": value} if level % 10 == 9 else [value]
    return value


@pytest.mark.parametrize("depth", [300, 800])
def test_entry_nested_hundreds_of_levels_deep_is_400_with_a_reason(node: Service, depth: int) -> None:
    deep = entry(1, tree=nested(depth))
    entries = [entry(0), deep]
    resp = node.post_json(entries)
    assert resp.status == 400, resp.body
    body = resp.json()
    assert "nested" in body["error"]
    assert (body["entry"], body["field"]) == (1, "tree")
    assert resp.headers["x-logplatform-accepted"] == "0"
    assert_batch_absent(node, entries)


def test_entry_nested_to_the_limit_is_kept(node: Service) -> None:
    # the entry itself is one level: 1 + 253 = the documented limit of 254
    kept = entry(0, tree=nested(253))
    assert node.post_json([kept]).status == 200
    assert {line["id"]: line for line in node.sink_lines()}[kept["id"]]["tree"] == kept["tree"]
    refused = node.post_json([entry(1, tree=nested(254))])
    assert refused.status == 400
    assert "255 levels" in refused.json()["error"]


@pytest.mark.parametrize(
    ("value", "field"),
    [
        pytest.param(2**64, "count", id="above-u64"),
        pytest.param(-(2**63) - 1, "count", id="below-i64"),
        pytest.param({"n": [1, 10**30]}, "count", id="nested"),
    ],
)
def test_integer_beyond_64_bits_is_400_naming_the_field(node: Service, value: Any, field: str) -> None:
    entries = [entry(0), entry(1, count=value)]
    for ndjson in (False, True):
        if ndjson:
            body = b"\n".join(json.dumps(e).encode() for e in entries)
            resp = node.request("POST", "/v1/logs", body, {"Content-Type": "application/x-ndjson"})
        else:
            resp = node.post_json(entries)
        assert resp.status == 400, resp.body
        body = resp.json()
        assert (body["entry"], body["field"]) == (1, field)
        assert "64 bits" in body["error"]
    assert_batch_absent(node, entries)


def test_integers_within_64_bits_and_long_digit_strings_are_kept_exactly(node: Service) -> None:
    sent = entry(
        0,
        big=2**64 - 1,
        small=-(2**63),
        message="trace 123456789012345678901234567890",
        ratio=12345678901234567890.5,
    )
    assert node.post_json([sent]).status == 200
    line = {line["id"]: line for line in node.sink_lines()}[sent["id"]]
    assert (line["big"], line["small"], line["message"]) == (2**64 - 1, -(2**63), sent["message"])
    assert type(line["big"]) is int
