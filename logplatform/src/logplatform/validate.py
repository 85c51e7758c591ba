"""Entry parsing, validation and normalisation: pure functions, no I/O.

A batch is accepted or refused as a whole: ``prepare_batch`` either returns the exact bytes to
append to the sink (one NDJSON line per entry, already normalised and enriched) or raises
``BatchRejected`` carrying the HTTP status, a machine-readable ``code`` (the metrics label), a
human ``reason``, and the index/field of the first offending entry.

Hot path: this runs once per entry at ~100k entries/s, so the loop sticks to ``type(x) is``
checks, dict lookups and one ``orjson.dumps`` per entry; counting for metrics is aggregated per
batch here and applied by the caller once per label pair.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

__all__ = [
    "RESERVED_KEYS",
    "Batch",
    "BatchRejected",
    "Enrichment",
    "body_format",
    "decode_body",
    "format_ts",
    "normalise_ts",
    "prepare_batch",
    "process_entries",
]

RESERVED_KEYS: frozenset[str] = frozenset({"_color", "_version", "_node", "_ingested_at", "_shadow"})
MAX_SERVICE_LENGTH = 256

# Body formats.
ARRAY = "array"
NDJSON = "ndjson"
SNIFF = "sniff"

_ARRAY_TYPES = frozenset({"application/json"})
_NDJSON_TYPES = frozenset(
    {
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonlines",
        "application/x-jsonlines",
        "application/jsonl",
    }
)
# Types that say nothing about the payload: decide by looking at it. Form-urlencoded is here
# because it is what `curl -d @file` sends unless told otherwise, and operators debug with curl.
_GENERIC_TYPES = frozenset(
    {"", "application/octet-stream", "text/plain", "application/x-www-form-urlencoded"}
)

# RFC 3339 date-time (section 5.6): full date, 'T', full time, mandatory offset.
_RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})",
    re.ASCII,
)
_ZERO_OFFSETS = frozenset({"Z", "z", "+00:00", "-00:00"})
_FIRST_NON_WS = re.compile(rb"[^ \t\r\n]")

_EPOCH = datetime(1970, 1, 1)  # naive UTC: arithmetic on it is cheaper than on aware datetimes
# Epoch seconds must land in years 0001..9999, what the normalised form can represent.
_EPOCH_MIN = (datetime(1, 1, 1) - _EPOCH).total_seconds()
_EPOCH_END = 253402300800  # 10000-01-01T00:00:00Z, exclusive


class BatchRejected(Exception):
    """The batch is refused as a whole; nothing of it may be written."""

    def __init__(
        self,
        status: int,
        code: str,
        reason: str,
        entry: int | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.code = code
        self.reason = reason
        self.entry = entry
        self.field = field

    def to_json(self) -> dict[str, Any]:
        """The response body: ``{"error", "entry", "field"}``."""
        return {"error": self.reason, "entry": self.entry, "field": self.field}


@dataclass(frozen=True)
class Enrichment:
    """Values this node adds to every entry (``_ingested_at`` is computed per batch)."""

    color: str
    version: str
    node: str
    shadow: bool = False  # shadow traffic (a mirrored copy of a live batch): adds "_shadow": true


@dataclass(frozen=True)
class Batch:
    """A validated batch, ready for the sink."""

    data: bytes  # NDJSON lines, each ending in "\n"
    count: int
    counts: dict[tuple[str, str], int]  # (service, level) -> entries, for metrics


def body_format(content_type: str) -> str:
    """Map a request's media type (lowercase, no parameters) to ARRAY, NDJSON or SNIFF.

    Raises BatchRejected(415) for a type that clearly is not JSON (text/html, image/png, ...).
    """
    if content_type in _ARRAY_TYPES or content_type.endswith("+json"):
        return ARRAY
    if content_type in _NDJSON_TYPES:
        return NDJSON
    if content_type in _GENERIC_TYPES:
        return SNIFF
    raise BatchRejected(
        415,
        "unsupported_media_type",
        f"unsupported Content-Type {content_type!r}: send application/json (array) "
        "or application/x-ndjson (one object per line)",
    )


def decode_body(body: bytes, fmt: str, max_entries: int) -> list[Any]:
    """Parse the body into a list of (not yet validated) entries."""
    if fmt == SNIFF:
        first = _FIRST_NON_WS.search(body)
        if first is None:
            raise BatchRejected(400, "empty_batch", "empty batch: the body has no entries")
        fmt = ARRAY if first.group() == b"[" else NDJSON

    if fmt == ARRAY:
        try:
            items = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BatchRejected(400, "malformed_json", f"malformed JSON: {exc}") from None
        if type(items) is not list:
            raise BatchRejected(
                400, "not_an_array", "body must be a JSON array of objects (or NDJSON, one object per line)"
            )
        if len(items) > max_entries:
            raise BatchRejected(
                413,
                "too_many_entries",
                f"batch has {len(items)} entries, over the limit of {max_entries}",
            )
    else:
        items = []
        append = items.append
        for lineno, line in enumerate(body.split(b"\n"), start=1):
            if not line or line.isspace():
                continue
            if len(items) >= max_entries:
                raise BatchRejected(
                    413, "too_many_entries", f"batch has more entries than the limit of {max_entries}"
                )
            try:
                append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                raise BatchRejected(
                    400, "malformed_json", f"malformed JSON on line {lineno}: {exc}", entry=len(items)
                ) from None

    if not items:
        raise BatchRejected(400, "empty_batch", "empty batch: the body has no entries")
    return items


def format_ts(dt: datetime) -> str:
    """RFC 3339 UTC with microseconds and 'Z', e.g. 2026-11-24T10:00:00.000000Z."""
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return dt.isoformat(timespec="microseconds") + "Z"


def normalise_ts(value: Any) -> str:
    """Normalise an entry's ``ts`` (RFC 3339 string or epoch seconds); ValueError says why not.

    Fractional seconds beyond microseconds are truncated, as datetime does.
    """
    vtype = type(value)
    if vtype is str:
        match = _RFC3339.fullmatch(value)
        if match is None:
            raise ValueError(
                "ts must be an RFC 3339 date-time with a time zone (e.g. 2026-11-24T10:00:00Z) "
                "or epoch seconds"
            )
        try:
            # fromisoformat (3.11) takes only upper-case 'T' and 'Z'; RFC 3339 allows both cases.
            # It checks the calendar (month 13, Feb 30, second 60 are refused).
            parsed = datetime.fromisoformat(value.upper())
        except ValueError as exc:
            raise ValueError(f"ts is not a valid date-time: {exc}") from None
        day, clock, fraction, offset = match.groups()
        if offset in _ZERO_OFFSETS:
            # Already UTC (the common case): reuse the checked digits, much cheaper than
            # datetime formatting. Digits past microseconds are truncated, as datetime does.
            micros = fraction[:6].ljust(6, "0") if fraction else "000000"
            return f"{day}T{clock}.{micros}Z"
        try:
            parsed = parsed.astimezone(UTC)
        except OverflowError:  # the offset pushes it outside years 1..9999
            raise ValueError("ts is out of range") from None
        return parsed.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
    if vtype is int or vtype is float:  # `type is`, so bool (an int subclass) is refused
        if vtype is float and not math.isfinite(value):
            raise ValueError("ts must be a finite number of epoch seconds")
        if not _EPOCH_MIN <= value < _EPOCH_END:
            hint = " (it must be epoch seconds, not milliseconds)" if value >= _EPOCH_END else ""
            raise ValueError(f"ts is out of range{hint}")
        try:
            dt = _EPOCH + timedelta(seconds=value)
        except OverflowError:  # a float just below the end can round up past year 9999
            raise ValueError("ts is out of range") from None
        return dt.isoformat(timespec="microseconds") + "Z"
    raise ValueError(f"ts must be an RFC 3339 string or epoch seconds, got {_json_type(value)}")


_JSON_TYPE_NAMES: dict[type, str] = {
    type(None): "null",
    bool: "boolean",
    int: "number",
    float: "number",
    str: "string",
    list: "array",
    dict: "object",
}


def _json_type(value: Any) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


_REQUIRED = ("ts", "level", "service", "message")
_STRING_FIELDS = ("level", "service", "message")


def _invalid(index: int, name: str, why: str) -> BatchRejected:
    return BatchRejected(400, "invalid_field", f"entry {index}: {why}", index, name)


# Error paths: only run once a cheap check has failed, to name the first offending field.
def _missing(entry: dict[str, Any], index: int) -> BatchRejected:
    name = next(name for name in _REQUIRED if name not in entry)
    return BatchRejected(400, "missing_field", f"entry {index}: missing required field {name!r}", index, name)


def _not_a_string(entry: dict[str, Any], index: int) -> BatchRejected:
    name = next(name for name in _STRING_FIELDS if type(entry[name]) is not str)
    return _invalid(index, name, f"{name} must be a string, got {_json_type(entry[name])}")


def _reserved(entry: dict[str, Any], index: int) -> BatchRejected:
    key = sorted(RESERVED_KEYS.intersection(entry))[0]
    return BatchRejected(
        400, "reserved_key", f"entry {index}: field {key!r} is reserved (set by the service)", index, key
    )


def _bad_service(service: str, index: int) -> BatchRejected:
    if len(service) > MAX_SERVICE_LENGTH:
        return _invalid(index, "service", f"service is longer than {MAX_SERVICE_LENGTH} characters")
    return _invalid(index, "service", "service must not be empty")


def _check_entry(entry: Any, index: int, levels: frozenset[str]) -> tuple[str, str]:
    """Validate one entry and normalise ``ts`` and ``level`` in place; return (service, level).

    The fast path is a handful of lookups and type checks; working out which rule failed is
    left to the error helpers above.
    """
    if type(entry) is not dict:
        raise BatchRejected(
            400, "not_an_object", f"entry {index}: must be a JSON object, got {_json_type(entry)}", index
        )
    if not RESERVED_KEYS.isdisjoint(entry):
        raise _reserved(entry, index)
    try:
        ts = entry["ts"]
        level = entry["level"]
        service = entry["service"]
        message = entry["message"]
    except KeyError:
        raise _missing(entry, index) from None
    if type(level) is not str or type(service) is not str or type(message) is not str:
        raise _not_a_string(entry, index)

    try:
        entry["ts"] = normalise_ts(ts)
    except ValueError as exc:
        raise _invalid(index, "ts", str(exc)) from None
    lowered = level.lower()
    if lowered not in levels:
        allowed = ", ".join(sorted(levels))
        raise _invalid(index, "level", f"level {level!r} is not one of: {allowed}")
    entry["level"] = lowered
    if not service or len(service) > MAX_SERVICE_LENGTH or service.isspace():
        raise _bad_service(service, index)
    if "id" in entry and type(entry["id"]) is not str:
        raise _invalid(index, "id", f"id must be a string, got {_json_type(entry['id'])}")
    return service, lowered


def process_entries(
    items: Iterable[Any],
    levels: frozenset[str],
    enrichment: Enrichment,
    ingested_at: str,
) -> Batch:
    """Validate, normalise and enrich every entry; return the sink bytes (raises BatchRejected)."""
    color, version, node = enrichment.color, enrichment.version, enrichment.node
    shadow = enrichment.shadow
    dumps = orjson.dumps
    lines: list[bytes] = []
    add_line = lines.append
    counts: dict[tuple[str, str], int] = {}

    for index, entry in enumerate(items):
        key = _check_entry(entry, index, levels)
        entry["_color"] = color
        entry["_version"] = version
        entry["_node"] = node
        entry["_ingested_at"] = ingested_at
        if shadow:
            entry["_shadow"] = True
        add_line(dumps(entry))
        counts[key] = counts.get(key, 0) + 1

    lines.append(b"")  # so the join ends with a newline
    return Batch(data=b"\n".join(lines), count=len(lines) - 1, counts=counts)


def prepare_batch(
    body: bytes,
    fmt: str,
    *,
    max_entries: int,
    levels: frozenset[str],
    enrichment: Enrichment,
    ingested_at: str,
) -> Batch:
    """Body bytes in (``fmt`` from body_format), sink bytes out: all per-request processing."""
    items = decode_body(body, fmt, max_entries)
    return process_entries(items, levels, enrichment, ingested_at)
