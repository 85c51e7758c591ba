"""logplatform.validate: body formats, every entry rule, normalisation and enrichment."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from logplatform.config import DEFAULT_LEVELS
from logplatform.validate import (
    ARRAY,
    NDJSON,
    SNIFF,
    BatchRejected,
    Enrichment,
    body_format,
    decode_body,
    normalise_ts,
    prepare_batch,
    process_entries,
)

LEVELS = frozenset(DEFAULT_LEVELS)
ENRICH = Enrichment(color="green", version="2.1.0", node="green-1")
INGESTED = "2026-11-24T12:00:00.000000Z"


def good(**fields: Any) -> dict[str, Any]:
    entry = {"ts": "2026-11-24T10:00:00Z", "level": "info", "service": "api", "message": "hello"}
    entry.update(fields)
    return entry


def process(entries: list[Any]) -> list[dict[str, Any]]:
    batch = process_entries(entries, LEVELS, ENRICH, INGESTED)
    assert batch.data.endswith(b"\n")
    lines = batch.data.split(b"\n")[:-1]
    assert len(lines) == batch.count == len(entries)
    return [json.loads(line) for line in lines]


def rejected(entries: list[Any]) -> BatchRejected:
    with pytest.raises(BatchRejected) as info:
        process_entries(entries, LEVELS, ENRICH, INGESTED)
    return info.value


# -- body formats ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/json", ARRAY),
        ("application/vnd.logs+json", ARRAY),
        ("application/x-ndjson", NDJSON),
        ("application/ndjson", NDJSON),
        ("application/jsonlines", NDJSON),
        ("application/x-jsonlines", NDJSON),
        ("application/jsonl", NDJSON),
        ("application/octet-stream", SNIFF),  # what aiohttp reports when the header is missing
        ("text/plain", SNIFF),
        ("application/x-www-form-urlencoded", SNIFF),  # curl -d
        ("", SNIFF),
    ],
)
def test_body_format_by_content_type(content_type: str, expected: str) -> None:
    assert body_format(content_type) == expected


@pytest.mark.parametrize("content_type", ["text/html", "application/xml", "image/png", "multipart/form-data"])
def test_clearly_wrong_content_type_is_415(content_type: str) -> None:
    with pytest.raises(BatchRejected) as info:
        body_format(content_type)
    assert info.value.status == 415
    assert info.value.code == "unsupported_media_type"
    assert content_type in info.value.reason


def test_array_body() -> None:
    items = decode_body(b' [{"a": 1}, {"b": 2}] ', ARRAY, 10)
    assert items == [{"a": 1}, {"b": 2}]


def test_ndjson_body_skips_blank_lines_and_accepts_crlf() -> None:
    body = b'{"a": 1}\r\n\n   \n{"b": 2}\n\t\n{"c": 3}'
    assert decode_body(body, NDJSON, 10) == [{"a": 1}, {"b": 2}, {"c": 3}]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'\n  [{"a": 1}, {"b": 2}]', [{"a": 1}, {"b": 2}]),
        (b'{"a": 1}\n{"b": 2}\n', [{"a": 1}, {"b": 2}]),
        (b'  {"a": 1}', [{"a": 1}]),
    ],
)
def test_sniffing_uses_the_first_non_whitespace_byte(body: bytes, expected: list[Any]) -> None:
    assert decode_body(body, SNIFF, 10) == expected


def test_array_content_type_with_ndjson_body_is_malformed() -> None:
    with pytest.raises(BatchRejected) as info:
        decode_body(b'{"a": 1}\n{"b": 2}\n', ARRAY, 10)
    assert (info.value.status, info.value.code, info.value.entry) == (400, "malformed_json", None)


def test_json_object_instead_of_array() -> None:
    with pytest.raises(BatchRejected) as info:
        decode_body(b'{"a": 1}', ARRAY, 10)
    assert (info.value.status, info.value.code) == (400, "not_an_array")


def test_malformed_array_json() -> None:
    with pytest.raises(BatchRejected) as info:
        decode_body(b'[{"a": 1}, {"b": ]', ARRAY, 10)
    exc = info.value
    assert (exc.status, exc.code, exc.entry, exc.field) == (400, "malformed_json", None, None)
    assert exc.reason.startswith("malformed JSON")
    assert exc.to_json() == {"error": exc.reason, "entry": None, "field": None}


def test_malformed_ndjson_line_names_line_and_entry_index() -> None:
    with pytest.raises(BatchRejected) as info:
        decode_body(b'{"a": 1}\n\n{"b": 2}\n{"c": \n', NDJSON, 10)
    exc = info.value
    assert (exc.status, exc.code, exc.entry) == (400, "malformed_json", 2)
    assert "line 4" in exc.reason


def test_invalid_utf8_is_malformed() -> None:
    with pytest.raises(BatchRejected) as info:
        decode_body(b'[{"message": "\xff"}]', ARRAY, 10)
    assert info.value.code == "malformed_json"


@pytest.mark.parametrize(("body", "fmt"), [(b"[]", ARRAY), (b"", NDJSON), (b"\n \n", NDJSON), (b"  ", SNIFF)])
def test_empty_batch_is_400(body: bytes, fmt: str) -> None:
    with pytest.raises(BatchRejected) as info:
        decode_body(body, fmt, 10)
    assert (info.value.status, info.value.code) == (400, "empty_batch")


@pytest.mark.parametrize("fmt", [ARRAY, NDJSON])
def test_too_many_entries_is_413(fmt: str) -> None:
    entries = [good() for _ in range(4)]
    body = (
        json.dumps(entries).encode() if fmt == ARRAY else b"\n".join(json.dumps(e).encode() for e in entries)
    )
    assert len(decode_body(body, fmt, 4)) == 4
    with pytest.raises(BatchRejected) as info:
        decode_body(body, fmt, 3)
    assert (info.value.status, info.value.code) == (413, "too_many_entries")
    assert "3" in info.value.reason


# -- timestamps --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("2026-11-24T10:00:00Z", "2026-11-24T10:00:00.000000Z"),
        ("2026-11-24T10:00:00+00:00", "2026-11-24T10:00:00.000000Z"),
        ("2026-11-24T10:00:00-00:00", "2026-11-24T10:00:00.000000Z"),
        ("2026-11-24t10:00:00z", "2026-11-24T10:00:00.000000Z"),
        ("2026-11-24T10:00:00.5Z", "2026-11-24T10:00:00.500000Z"),
        ("2026-11-24T10:00:00.123456Z", "2026-11-24T10:00:00.123456Z"),
        ("2026-11-24T10:00:00.123456789Z", "2026-11-24T10:00:00.123456Z"),  # truncated
        ("2026-11-24T10:00:00+05:30", "2026-11-24T04:30:00.000000Z"),
        ("2026-11-24T23:30:00.25-08:00", "2026-11-25T07:30:00.250000Z"),
        ("2024-02-29T00:00:00Z", "2024-02-29T00:00:00.000000Z"),
        (0, "1970-01-01T00:00:00.000000Z"),
        (1764000000, "2025-11-24T16:00:00.000000Z"),
        (1764000000.25, "2025-11-24T16:00:00.250000Z"),
        (-86400, "1969-12-31T00:00:00.000000Z"),
    ],
)
def test_ts_is_normalised_to_utc_microseconds_z(ts: Any, expected: str) -> None:
    assert normalise_ts(ts) == expected


@pytest.mark.parametrize(
    ("ts", "why"),
    [
        ("2026-11-24", "RFC 3339"),
        ("2026-11-24T10:00:00", "RFC 3339"),  # no offset
        ("2026-11-24 10:00:00Z", "RFC 3339"),
        ("2026-11-24T10:00Z", "RFC 3339"),
        ("2026-11-24T10:00:00.Z", "RFC 3339"),
        ("20261124T100000Z", "RFC 3339"),
        ("1764000000", "RFC 3339"),
        ("", "RFC 3339"),
        ("2026-13-01T00:00:00Z", "not a valid date-time"),
        ("2026-02-30T00:00:00Z", "not a valid date-time"),
        ("2026-11-24T24:00:00Z", "not a valid date-time"),
        ("2026-11-24T10:00:60Z", "not a valid date-time"),
        ("0001-01-01T00:00:00+01:00", "out of range"),
        (True, "got boolean"),
        (None, "got null"),
        ([2026], "got array"),
        (math.nan, "finite"),
        (math.inf, "finite"),
        (-math.inf, "finite"),
        (1764000000000, "not milliseconds"),
        (1e300, "out of range"),
        (-1e12, "out of range"),
    ],
)
def test_bad_ts_is_refused_with_reason(ts: Any, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        normalise_ts(ts)
    exc = rejected([good(), good(ts=ts)])
    assert (exc.status, exc.code, exc.entry, exc.field) == (400, "invalid_field", 1, "ts")


# -- entry rules -------------------------------------------------------------------------------


def test_valid_entries_are_normalised_enriched_and_keep_other_fields() -> None:
    entries = [
        good(level="WARN", id="  keep me as sent ", extra={"nested": [1, 2.5, None]}, n=3),
        good(ts=1764000000, level="Error", service="db", message=""),
    ]
    first, second = process(entries)
    assert first == {
        "ts": "2026-11-24T10:00:00.000000Z",
        "level": "warn",
        "service": "api",
        "message": "hello",
        "id": "  keep me as sent ",
        "extra": {"nested": [1, 2.5, None]},
        "n": 3,
        "_color": "green",
        "_version": "2.1.0",
        "_node": "green-1",
        "_ingested_at": INGESTED,
    }
    assert list(first)[:4] == ["ts", "level", "service", "message"]  # sender's order kept
    assert list(first)[-4:] == ["_color", "_version", "_node", "_ingested_at"]
    assert second["ts"] == "2025-11-24T16:00:00.000000Z"
    assert second["level"] == "error"
    assert second["message"] == ""
    assert "id" not in second


def test_counts_are_aggregated_per_service_and_level() -> None:
    entries = [good(), good(level="INFO"), good(level="error"), good(service="db")]
    batch = process_entries(entries, LEVELS, ENRICH, INGESTED)
    assert batch.counts == {("api", "info"): 2, ("api", "error"): 1, ("db", "info"): 1}


@pytest.mark.parametrize("name", ["ts", "level", "service", "message"])
def test_missing_required_field(name: str) -> None:
    entry = good()
    del entry[name]
    exc = rejected([good(), good(), entry])
    assert (exc.status, exc.code, exc.entry, exc.field) == (400, "missing_field", 2, name)
    assert exc.to_json() == {"error": exc.reason, "entry": 2, "field": name}
    assert name in exc.reason


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("level", 3),
        ("level", None),
        ("service", ["api"]),
        ("service", 1),
        ("message", {"text": "x"}),
        ("message", None),
        ("id", 42),
        ("id", None),
        ("id", True),
    ],
)
def test_wrong_type(name: str, value: Any) -> None:
    exc = rejected([good(**{name: value})])
    assert (exc.status, exc.code, exc.entry, exc.field) == (400, "invalid_field", 0, name)
    assert f"{name} must be a string" in exc.reason


@pytest.mark.parametrize("level", ["verbose", "", "in fo", "INFORMATION"])
def test_unknown_level(level: str) -> None:
    exc = rejected([good(level=level)])
    assert (exc.code, exc.field) == ("invalid_field", "level")
    assert "is not one of" in exc.reason


def test_levels_come_from_config() -> None:
    with pytest.raises(BatchRejected):
        process_entries([good(level="trace")], frozenset({"info"}), ENRICH, INGESTED)


@pytest.mark.parametrize(
    ("service", "ok"),
    [("", False), ("   ", False), ("a", True), ("s" * 256, True), ("s" * 257, False), ("ünïcode ✓", True)],
)
def test_service_rules(service: str, ok: bool) -> None:
    if ok:
        assert process([good(service=service)])[0]["service"] == service
    else:
        exc = rejected([good(service=service)])
        assert (exc.code, exc.field) == ("invalid_field", "service")


@pytest.mark.parametrize("key", ["_color", "_version", "_node", "_ingested_at", "_shadow"])
def test_reserved_keys_are_refused(key: str) -> None:
    exc = rejected([good(), good(**{key: "x"})])
    assert (exc.status, exc.code, exc.entry, exc.field) == (400, "reserved_key", 1, key)
    assert "reserved" in exc.reason


def test_other_underscore_keys_are_fine() -> None:
    assert process([good(_trace="abc")])[0]["_trace"] == "abc"


@pytest.mark.parametrize("item", [[1, 2], "text", 5, None, True])
def test_entry_must_be_an_object(item: Any) -> None:
    exc = rejected([good(), item])
    assert (exc.status, exc.code, exc.entry, exc.field) == (400, "not_an_object", 1, None)


def test_first_bad_entry_rejects_the_whole_batch() -> None:
    exc = rejected([good(), good(), good(level=1), good(service="")])
    assert exc.entry == 2


@pytest.mark.parametrize(
    ("fmt", "body"),
    [
        (ARRAY, b'[{"ts":"2026-11-24T10:00:00Z","level":"info","service":"a","message":"m"}]'),
        (NDJSON, b'\n{"ts":"2026-11-24T10:00:00Z","level":"info","service":"a","message":"m"}\n\n'),
        (SNIFF, b'{"ts":"2026-11-24T10:00:00Z","level":"info","service":"a","message":"m"}'),
    ],
)
def test_prepare_batch_end_to_end(fmt: str, body: bytes) -> None:
    batch = prepare_batch(body, fmt, max_entries=10, levels=LEVELS, enrichment=ENRICH, ingested_at=INGESTED)
    assert batch.count == 1
    assert batch.data == (
        b'{"ts":"2026-11-24T10:00:00.000000Z","level":"info","service":"a","message":"m",'
        b'"_color":"green","_version":"2.1.0","_node":"green-1","_ingested_at":"2026-11-24T12:00:00.000000Z"}\n'
    )


def test_shadow_enrichment_marks_every_entry_last() -> None:
    shadow = Enrichment(color="green", version="2.1.0", node="green-1", shadow=True)
    batch = process_entries([good(), good()], LEVELS, shadow, INGESTED)
    lines = [json.loads(line) for line in batch.data.splitlines()]
    assert [list(line)[-5:] for line in lines] == [
        ["_color", "_version", "_node", "_ingested_at", "_shadow"]
    ] * 2
    assert all(line["_shadow"] is True for line in lines)
    # production enrichment never adds it
    assert all("_shadow" not in line for line in process([good()]))
