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

import json
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

# Most objects and arrays inside each other in one entry (the entry itself counts): what orjson can
# write back (its recursion limit; test_entry_nested_to_the_limit_is_kept pins it). Deeper entries
# parse (orjson reads up to 1024 levels) but are refused with 400 ("too_deep").
MAX_NESTING = 254
# Integers the sink keeps exactly: int64 and uint64, what orjson reads as int (beyond, it reads a
# float, which would silently round the value). Any such literal has 19 digits or more, so a body
# without a run of 19 digits skips the exact check: a translate and a substring search, both in C
# (about 1% of a batch's processing; a regex scan cost 20%).
INT_MIN, INT_MAX = -(2**63), 2**64 - 1
_DIGITS_ONLY = bytes(byte if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256)).translate(
    bytes.maketrans(b"123456789", b"000000000")
)
_LONG_RUN = b"0" * 19


def _has_long_digit_run(data: bytes) -> bool:
    return _LONG_RUN in data.translate(_DIGITS_ONLY)


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


def _sniff(body: bytes) -> str:
    """ARRAY if the first non-blank byte is ``[``, else NDJSON."""
    first = _FIRST_NON_WS.search(body)
    if first is None:
        raise BatchRejected(400, "empty_batch", "empty batch: the body has no entries")
    return ARRAY if first.group() == b"[" else NDJSON


def decode_body(body: bytes, fmt: str, max_entries: int) -> list[Any]:
    """Parse the body into a list of (not yet validated) entries."""
    if fmt == SNIFF:
        fmt = _sniff(body)

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
    if _has_long_digit_run(body):
        _refuse_wide_integers(body, fmt)
    return items


def _refuse_wide_integers(body: bytes, fmt: str) -> None:
    """Raise BatchRejected naming the first entry field holding an integer beyond 64 bits.

    Slow path, only for bodies with a run of 19+ digits (which may well be inside strings or
    floats): the stdlib parser keeps every integer exact. ``body`` has already parsed as ``fmt``.
    """
    if fmt == ARRAY:
        documents = [body]
    else:
        documents = [line for line in body.split(b"\n") if line and not line.isspace()]
    index = 0
    for document in documents:
        if not _has_long_digit_run(document):
            index += 1
            continue
        try:
            parsed = json.loads(document)
        except RecursionError:  # deeper than MAX_NESTING anyway: refused as too_deep later
            return
        for item in parsed if fmt == ARRAY else [parsed]:
            if type(item) is dict:
                for name, value in item.items():
                    wide = _wide_integer(value)
                    if wide is not None:
                        raise _invalid(
                            index,
                            name,
                            f"{name} holds the integer {wide}, beyond 64 bits "
                            f"({INT_MIN}..{INT_MAX}): send it as a string",
                        )
            index += 1


def _wide_integer(value: Any) -> int | None:
    """The first integer outside INT_MIN..INT_MAX in ``value`` (walked without recursion)."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is int:
            if not INT_MIN <= item <= INT_MAX:
                return item
        elif kind is dict:
            stack.extend(reversed(item.values()))
        elif kind is list:
            stack.extend(reversed(item))
    return None


def _nesting(value: Any) -> int:
    """How many objects and arrays are inside each other at the deepest point of ``value``."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if type(item) is dict else item if type(item) is list else None
        if children is not None:
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in children)
    return deepest


def _too_deep(entry: dict[str, Any], index: int) -> BatchRejected:
    """Error path of the sink encoder: name the field holding the deepest value."""
    name = max(entry, key=lambda key: _nesting(entry[key]))
    depth = 1 + _nesting(entry[name])
    return BatchRejected(
        400,
        "too_deep",
        f"entry {index}: nested {depth} levels deep (objects and arrays, the entry included), "
        f"over the limit of {MAX_NESTING}",
        index,
        name,
    )


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
        try:
            add_line(dumps(entry))
        except orjson.JSONEncodeError:  # only nesting beyond MAX_NESTING gets here (see above)
            raise _too_deep(entry, index) from None
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
