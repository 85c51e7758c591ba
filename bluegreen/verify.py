"""Check every acked entry of one or more load-generator runs against the sinks: lost, duplicates, by color.

Reads each run directory written by `bluegreen loadgen` (run.json, requests.ndjson, summary.json) and
streams every sink line. Only lines whose `id` starts with one of the runs' ids count; lines that are
not valid JSON (a torn last line, say) are counted and reported, never fatal.

Reported, per run and in total:
  sent / acked entries    acked = the request was answered HTTP 200
  failed requests         by kind, with their entries and how many of those are in a sink anyway
  lost                    acked ids that are in no sink (the first few are listed)
  duplicates              ids found on more than one sink line (counted, never hidden)
  found but not acked     ids of failed or unrecorded requests that are in a sink (not loss)
  by color/version/node   the sink lines' _color, _version and _node
  by url                  requests and failed requests per load-generator URL (several lbs)

Default sinks: .lab/**/sink/*.ndjson under the project root: the checkout that holds this
`bluegreen` package (found from the module's location, so the current directory does not matter),
or the current directory when bluegreen is installed outside a checkout. A --sinks argument is a
glob relative to the current directory (`**` matches any depth) or a directory (its *.ndjson, any
depth).

Exit status: 0 when every run finished, sent something, lost nothing and had no failed request;
1 otherwise; 2 on bad input (missing run directory, unreadable file, no sink file), naming the problem.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bluegreen.evidence import REQUESTS_FILE, RUN_FILE, SUMMARY_FILE, entry_id, write_atomic


def _project_root() -> Path:
    """The checkout this module runs from (editable install, `make`), else the current directory."""
    here = Path(__file__).resolve().parents[1]
    return here if (here / "pyproject.toml").is_file() and (here / "bluegreen").is_dir() else Path.cwd()


PROJECT_ROOT = _project_root()
DEFAULT_SINK_GLOB = ".lab/**/sink/*.ndjson"
UNRECORDED = "unrecorded"  # entries of the run with no line in requests.ndjson
_MAX_SEQ = 1 << 31  # larger seqs are not from our load generator: refuse to allocate for them
_NONZERO = bytes([0] + [1] * 255)  # bytes.translate tables
_AT_LEAST_TWO = bytes([0, 0] + [1] * 254)
_NONE = "(none)"


class VerifyInputError(Exception):
    """The input cannot be read as runs and sinks (CLI exit status 2)."""


@dataclass
class _Run:
    """One run's requests and what the sinks hold of it, one byte per entry (seq)."""

    run_id: str
    path: Path
    meta: dict[str, Any]
    summary: dict[str, Any] | None
    acked: bytearray = field(default_factory=bytearray)  # 1 = request answered 200
    kind: bytearray = field(default_factory=bytearray)  # index into kinds; 0 = no request line
    seen: bytearray = field(default_factory=bytearray)  # sink lines with this id (saturates at 255)
    kinds: list[str] = field(default_factory=lambda: [UNRECORDED, "ok"])
    failed: list[tuple[int, int, int]] = field(default_factory=list)  # (seq, count, kind code)
    requests: int = 0
    request_lines_invalid: int = 0
    overlapping_requests: int = 0
    served_by: Counter[str] = field(default_factory=Counter)
    by_url: Counter[str] = field(default_factory=Counter)  # requests per URL (the lines' `url`)
    failed_by_url: Counter[str] = field(default_factory=Counter)
    overflow: Counter[int] = field(default_factory=Counter)  # seen beyond 255
    beyond: Counter[int] = field(default_factory=Counter)  # sink ids past the last recorded seq
    unexpected_ids: Counter[str] = field(default_factory=Counter)  # "<run>-<not a seq>"
    lines: int = 0
    colors: Counter[str] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)
    nodes: Counter[str] = field(default_factory=Counter)
    files: Counter[str] = field(default_factory=Counter)

    def code(self, kind: str) -> int:
        try:
            return self.kinds.index(kind)
        except ValueError:
            if len(self.kinds) >= 255:
                kind = "other"
                if kind in self.kinds:
                    return self.kinds.index(kind)
            self.kinds.append(kind)
            return len(self.kinds) - 1

    def grow(self, n: int) -> None:
        if n > len(self.kind):
            extra = bytes(n - len(self.kind))
            self.acked.extend(extra)
            self.kind.extend(extra)
            self.seen.extend(extra)


def _load_json(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        doc = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise VerifyInputError(f"cannot read {path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise VerifyInputError(f"{path}: expected a JSON object")
    return doc


def _urls(meta: dict[str, Any]) -> list[str]:
    """The URLs a run sent to, from its run.json (`urls`; a single `url` in runs before several)."""
    urls = meta.get("urls")
    if isinstance(urls, list):
        return [str(u) for u in urls]
    return [str(meta["url"])] if meta.get("url") else []


def _load_run(path: Path) -> _Run:
    if not path.is_dir():
        raise VerifyInputError(f"run directory {path} does not exist (or is not a directory)")
    meta = _load_json(path / RUN_FILE)
    summary = _load_json(path / SUMMARY_FILE)
    run_id = (summary or {}).get("run_id") or (meta or {}).get("run_id")
    if not isinstance(run_id, str) or not run_id:
        raise VerifyInputError(f"{path}: neither {SUMMARY_FILE} nor {RUN_FILE} names a run_id")
    run = _Run(run_id=run_id, path=path, meta=meta or summary or {}, summary=summary)
    requests = path / REQUESTS_FILE
    try:
        with requests.open("rb") as f:
            for line in f:
                _add_request(run, line)
    except OSError as exc:
        raise VerifyInputError(f"cannot read {requests}: {exc}") from exc
    if summary is not None and isinstance(summary.get("entries"), int):
        run.grow(min(summary["entries"], _MAX_SEQ))
    return run


def _add_request(run: _Run, line: bytes) -> None:
    try:
        rec = orjson.loads(line)
        seq, count, status, kind = rec["seq"], rec["count"], rec["status"], rec["kind"]
        if not (
            isinstance(seq, int)
            and isinstance(count, int)
            and isinstance(kind, str)
            and (status is None or isinstance(status, int))
            and seq >= 0
            and count > 0
            and seq + count <= _MAX_SEQ
        ):
            raise ValueError("bad field")
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        if line.strip():
            run.request_lines_invalid += 1
        return
    run.requests += 1
    run.grow(seq + count)
    end = seq + count
    if run.kind[seq:end].count(0) != count:
        run.overlapping_requests += 1
    code = run.code(kind)
    run.kind[seq:end] = bytes([code]) * count
    if status == 200:
        run.acked[seq:end] = b"\x01" * count
    if kind != "ok":
        run.failed.append((seq, count, code))
    served_by = rec.get("served_by")
    if served_by is not None:
        run.served_by[str(served_by)] += 1
    url = rec.get("url")  # lines of runs before several URLs have none
    if isinstance(url, str):
        run.by_url[url] += 1
        if kind != "ok":
            run.failed_by_url[url] += 1


@dataclass
class _Sinks:
    files: list[dict[str, Any]] = field(default_factory=list)
    lines: int = 0
    invalid: int = 0
    invalid_sample: list[dict[str, Any]] = field(default_factory=list)


def _expand(pattern: str) -> list[Path]:
    """Files matching one --sinks argument: a directory (its *.ndjson, any depth) or a glob."""
    path = Path(pattern)
    if path.is_dir():
        return sorted(path.glob("**/*.ndjson"))
    parts = path.parts
    magic = next((i for i, part in enumerate(parts) if any(c in part for c in "*?[")), None)
    if magic is None:
        return [path] if path.exists() else []
    base = Path(*parts[:magic]) if magic else Path()
    return sorted(base.glob("/".join(parts[magic:])))


def find_sink_files(patterns: Sequence[str] | None = None) -> list[Path]:
    """Expand sink globs/directories (default: DEFAULT_SINK_GLOB under PROJECT_ROOT) to files."""
    if not patterns:
        patterns = [str(PROJECT_ROOT / DEFAULT_SINK_GLOB)]
    found: dict[Path, None] = {}
    for pattern in patterns:
        for m in _expand(pattern):
            if m.is_file():
                found.setdefault(m.resolve(), None)
    if not found:
        raise VerifyInputError(
            f"no sink file matches {' '.join(patterns)} (is the lab's .lab/ there? pass --sinks GLOB)"
        )
    return list(found)


def _scan_sink(path: Path, runs: dict[str, _Run], sinks: _Sinks, sample: int) -> None:
    prefixes = tuple(f"{r}-" for r in runs)
    lines = invalid = 0
    try:
        with path.open("rb") as f:
            for lineno, line in enumerate(f, 1):
                lines += 1
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError:
                    if not line.strip():
                        lines -= 1
                        continue
                    invalid += 1
                    if len(sinks.invalid_sample) < sample:
                        sinks.invalid_sample.append(
                            {
                                "file": str(path),
                                "line": lineno,
                                "torn_tail": not line.endswith(b"\n"),
                                "start": line[:60].decode("utf-8", "replace"),
                            }
                        )
                    continue
                if not isinstance(obj, dict):
                    continue
                eid = obj.get("id")
                if not isinstance(eid, str) or not eid.startswith(prefixes):
                    continue
                _add_line(runs, eid, obj, str(path))
    except OSError as exc:
        raise VerifyInputError(f"cannot read sink file {path}: {exc}") from exc
    sinks.files.append({"path": str(path), "lines": lines, "invalid_lines": invalid})
    sinks.lines += lines
    sinks.invalid += invalid


def _add_line(runs: dict[str, _Run], eid: str, obj: dict[str, Any], path: str) -> None:
    prefix, _, tail = eid.rpartition("-")
    run = runs.get(prefix)
    if run is None or not (tail.isascii() and tail.isdigit()) or (tail[0] == "0" and tail != "0"):
        # starts with a run's id but is not "<run>-<seq>": attribute it to the longest matching run
        owner = max((r for r in runs if eid.startswith(f"{r}-")), key=len)
        runs[owner].unexpected_ids[eid] += 1
        return
    seq = int(tail)
    if seq < len(run.seen):
        v = run.seen[seq]
        if v < 255:
            run.seen[seq] = v + 1
        else:
            run.overflow[seq] += 1
    else:
        run.beyond[seq] += 1
    run.lines += 1
    run.colors[str(obj.get("_color", _NONE))] += 1
    run.versions[str(obj.get("_version", _NONE))] += 1
    run.nodes[str(obj.get("_node", _NONE))] += 1
    run.files[path] += 1


def _positions(mask: bytes, limit: int) -> list[int]:
    out: list[int] = []
    i = mask.find(1)
    while i != -1 and len(out) < limit:
        out.append(i)
        i = mask.find(1, i + 1)
    return out


def _run_report(run: _Run, sample: int) -> dict[str, Any]:
    n = len(run.kind)
    seen_nz = run.seen.translate(_NONZERO)
    seen_i = int.from_bytes(seen_nz, "big")
    acked_i = int.from_bytes(run.acked, "big")
    lost_i = acked_i & ~seen_i
    lost = lost_i.bit_count()
    lost_ids = (
        [entry_id(run.run_id, s) for s in _positions(lost_i.to_bytes(n, "big"), sample)] if lost else []
    )

    # duplicates: ids on two or more sink lines
    dup_ids = n - run.seen.count(0) - run.seen.count(1) + sum(1 for c in run.beyond.values() if c > 1)
    dup_ids += sum(1 for c in run.unexpected_ids.values() if c > 1)
    distinct = n - run.seen.count(0) + len(run.beyond) + len(run.unexpected_ids)
    extra_lines = run.lines + sum(run.unexpected_ids.values()) - distinct
    dup_sample = [entry_id(run.run_id, s) for s in _positions(run.seen.translate(_AT_LEAST_TWO), sample)]

    # failed requests, by kind, and what of them reached a sink anyway
    failed: dict[str, dict[str, int]] = {}
    for seq, count, code in run.failed:
        f = failed.setdefault(
            run.kinds[code],
            {"requests": 0, "entries": 0, "found": 0, "fully_written": 0, "partially_written": 0},
        )
        found = count - seen_nz[seq : seq + count].count(0)
        f["requests"] += 1
        f["entries"] += count
        f["found"] += found
        f["fully_written"] += found == count
        f["partially_written"] += 0 < found < count
    # seqs no request line covers (the load generator was killed, or lines are missing)
    expected = (run.summary or {}).get("entries")
    recorded_end = len(bytes(run.kind).rstrip(b"\x00"))
    known = max(min(expected, n) if isinstance(expected, int) else 0, recorded_end)
    gaps = [(m.start(), m.end()) for m in re.finditer(rb"\x00+", bytes(run.kind[:known]))]
    if gaps:
        f = failed.setdefault(
            UNRECORDED, {"requests": 0, "entries": 0, "found": 0, "fully_written": 0, "partially_written": 0}
        )
        for a, b in gaps:
            found = (b - a) - seen_nz[a:b].count(0)
            f["requests"] += 1
            f["entries"] += b - a
            f["found"] += found
            f["fully_written"] += found == b - a
            f["partially_written"] += 0 < found < b - a

    # entries in a sink whose request was not acked (failed, or never recorded)
    not_acked_i = seen_i & ~acked_i
    found_not_acked: dict[str, int] = {}
    if not_acked_i:
        for code, kind in enumerate(run.kinds):
            table = bytes(1 if i == code else 0 for i in range(256))
            c = (int.from_bytes(run.kind.translate(table), "big") & not_acked_i).bit_count()
            if c:
                found_not_acked[kind] = c
    if run.beyond:
        found_not_acked[UNRECORDED] = found_not_acked.get(UNRECORDED, 0) + len(run.beyond)
    fna_sample = [entry_id(run.run_id, s) for s in _positions(not_acked_i.to_bytes(n, "big"), sample)]
    fna_sample += [entry_id(run.run_id, s) for s in sorted(run.beyond)[: max(0, sample - len(fna_sample))]]

    acked_entries = run.acked.count(1)
    recorded_entries = n - run.kind.count(0)
    not_sent = sum(c for _, c, k in run.failed if run.kinds[k] == "client-backpressure")
    entries = expected if isinstance(expected, int) else known
    summary = run.summary or {}
    return {
        "run_id": run.run_id,
        "dir": str(run.path),
        "mode": run.meta.get("mode"),
        "urls": _urls(run.meta),
        "started": run.meta.get("started"),
        "ended": summary.get("ended"),
        "complete": run.summary is not None,
        "requests": run.requests,
        "entries": entries,
        "sent_entries": recorded_entries - not_sent,
        "acked_entries": acked_entries,
        "failed_requests": dict(sorted(failed.items())),
        "failed_requests_total": sum(v["requests"] for v in failed.values()),
        "failed_entries_total": sum(v["entries"] for v in failed.values()),
        "lost": lost,
        "lost_sample": lost_ids,
        "duplicates": dup_ids,
        "duplicate_extra_lines": extra_lines,
        "duplicate_sample": dup_sample,
        "found_not_acked": dict(sorted(found_not_acked.items())),
        "found_not_acked_total": sum(found_not_acked.values()),
        "found_not_acked_sample": fna_sample,
        "unexpected_ids": sum(run.unexpected_ids.values()),
        "unexpected_ids_sample": list(run.unexpected_ids)[:sample],
        "sink_lines": run.lines + sum(run.unexpected_ids.values()),
        "by_color": dict(run.colors.most_common()),
        "by_version": dict(run.versions.most_common()),
        "by_node": dict(run.nodes.most_common()),
        "by_file": dict(sorted(run.files.items())),
        "served_by": dict(run.served_by.most_common()),
        "requests_by_url": dict(run.by_url.most_common()),
        "failed_requests_by_url": dict(run.failed_by_url.most_common()),
        "request_lines_invalid": run.request_lines_invalid,
        "overlapping_requests": run.overlapping_requests,
        "loadgen_summary": {
            k: summary.get(k) for k in ("entries", "sent_entries", "acked_entries", "failed_requests")
        }
        if run.summary
        else None,
    }


_SUMMED = (
    "requests",
    "entries",
    "sent_entries",
    "acked_entries",
    "failed_requests_total",
    "failed_entries_total",
    "lost",
    "duplicates",
    "duplicate_extra_lines",
    "found_not_acked_total",
    "unexpected_ids",
    "sink_lines",
)
_MERGED = (
    "by_color",
    "by_version",
    "by_node",
    "served_by",
    "found_not_acked",
    "requests_by_url",
    "failed_requests_by_url",
)


def _totals(reports: list[dict[str, Any]], sample: int) -> dict[str, Any]:
    t: dict[str, Any] = {k: sum(r[k] or 0 for r in reports) for k in _SUMMED}
    for k in _MERGED:
        c: Counter[str] = Counter()
        for r in reports:
            c.update(r[k])
        t[k] = dict(c.most_common())
    failed: dict[str, dict[str, int]] = {}
    for r in reports:
        for kind, v in r["failed_requests"].items():
            agg = failed.setdefault(kind, dict.fromkeys(v, 0))
            for key, val in v.items():
                agg[key] += val
    t["failed_requests"] = dict(sorted(failed.items()))
    for k in ("lost_sample", "duplicate_sample", "found_not_acked_sample"):
        t[k] = [i for r in reports for i in r[k]][:sample]
    t["overlapping_requests"] = sum(r["overlapping_requests"] for r in reports)
    return {k: t[k] for k in _ORDER}


_ORDER = (
    "requests",
    "entries",
    "sent_entries",
    "acked_entries",
    "failed_requests_total",
    "failed_entries_total",
    "failed_requests",
    "lost",
    "lost_sample",
    "duplicates",
    "duplicate_extra_lines",
    "duplicate_sample",
    "found_not_acked_total",
    "found_not_acked",
    "found_not_acked_sample",
    "unexpected_ids",
    "overlapping_requests",
    "sink_lines",
    "by_color",
    "by_version",
    "by_node",
    "served_by",
    "requests_by_url",
    "failed_requests_by_url",
)


def verify(
    run_dirs: Sequence[Path | str],
    sink_patterns: Sequence[str] | None = None,
    sample: int = 10,
) -> dict[str, Any]:
    """Verify the runs in `run_dirs` against the sink files; returns the report `--json` prints.

    The report: `verdict` (PASS|FAIL), `ok`, `reasons` (why it failed); the totals over all runs
    (`requests`, `entries`, `sent_entries`, `acked_entries`, `failed_requests` {kind: {requests,
    entries, found, fully_written, partially_written}}, `failed_requests_total`,
    `failed_entries_total`, `lost`, `lost_sample`, `duplicates`, `duplicate_extra_lines`,
    `duplicate_sample`, `found_not_acked` {kind: entries}, `found_not_acked_total`,
    `found_not_acked_sample`, `unexpected_ids`, `overlapping_requests`, `sink_lines`, `by_color`,
    `by_version`, `by_node`, `served_by`, `requests_by_url`, `failed_requests_by_url`); `runs`: the
    same per run plus `run_id`, `dir`, `mode`, `urls`, `started`, `ended`, `complete`, `by_file`,
    `request_lines_invalid`, `loadgen_summary`;
    `sinks`: `patterns`, `files` [{path, lines, invalid_lines}], `lines`, `invalid_lines`,
    `invalid_sample` [{file, line, torn_tail, start}], `scan_s`; `generated_at`.

    Raises VerifyInputError when a run directory or a file cannot be read or no sink file matches.
    """
    if not run_dirs:
        raise VerifyInputError("no run directory given (--run DIR)")
    runs: dict[str, _Run] = {}
    for d in run_dirs:
        run = _load_run(Path(d))
        if run.run_id in runs:
            raise VerifyInputError(f"run id {run.run_id} appears twice ({runs[run.run_id].path} and {d})")
        runs[run.run_id] = run
    files = find_sink_files(sink_patterns)
    sinks = _Sinks()
    t0 = time.perf_counter()
    for path in files:
        _scan_sink(path, runs, sinks, sample)
    reports = [_run_report(r, sample) for r in runs.values()]
    report: dict[str, Any] = _totals(reports, sample)

    reasons: list[str] = []
    if report["lost"]:
        reasons.append(f"{report['lost']} acked entries are in no sink")
    if report["failed_requests_total"]:
        kinds = ", ".join(f"{k}: {v['requests']}" for k, v in report["failed_requests"].items())
        reasons.append(f"{report['failed_requests_total']} failed requests ({kinds})")
    for r in reports:
        if not r["complete"]:
            reasons.append(
                f"run {r['run_id']} has no {SUMMARY_FILE}: the load generator did not finish, so requests "
                "in flight when it stopped are not accounted for"
            )
        if r["requests"] == 0:
            reasons.append(f"run {r['run_id']} sent nothing")
        if r["overlapping_requests"]:
            reasons.append(
                f"run {r['run_id']}: {r['overlapping_requests']} lines of {REQUESTS_FILE} cover seqs another "
                "line covers already: the evidence is inconsistent"
            )
    return {
        "verdict": "FAIL" if reasons else "PASS",
        "ok": not reasons,
        "reasons": reasons,
        **report,
        "runs": reports,
        "sinks": {
            "patterns": list(sink_patterns or [str(PROJECT_ROOT / DEFAULT_SINK_GLOB)]),
            "files": sinks.files,
            "lines": sinks.lines,
            "invalid_lines": sinks.invalid,
            "invalid_sample": sinks.invalid_sample,
            "scan_s": round(time.perf_counter() - t0, 3),
        },
        "generated_at": time.time(),
    }


# --- the table ----------------------------------------------------------------------------------------


def _counts(d: dict[str, int]) -> str:
    return "  ".join(f"{k} {v}" for k, v in d.items()) or "-"


def _section(r: dict[str, Any]) -> list[str]:
    rows: list[tuple[str, str]] = [
        ("requests", f"{r['requests']}"),
        (
            "entries sent",
            f"{r['sent_entries']}"
            + (f"  (of {r['entries']} ids)" if r["entries"] != r["sent_entries"] else ""),
        ),
        ("entries acked", f"{r['acked_entries']}"),
        ("failed requests", f"{r['failed_requests_total']}  ({r['failed_entries_total']} entries)"),
    ]
    for kind, v in r["failed_requests"].items():
        written = f", {v['fully_written']} fully and {v['partially_written']} partly written"
        rows.append(
            (f"  {kind}", f"{v['requests']}  ({v['entries']} entries, {v['found']} found in sinks{written})")
        )
    rows.append(("LOST (acked, in no sink)", f"{r['lost']}"))
    if r["lost_sample"]:
        rows.append(("  first lost ids", " ".join(r["lost_sample"])))
    rows.append(("duplicates", f"{r['duplicates']} ids  ({r['duplicate_extra_lines']} extra lines)"))
    if r["duplicate_sample"]:
        rows.append(("  first duplicated ids", " ".join(r["duplicate_sample"])))
    fna = r["found_not_acked"]
    rows.append(
        ("found but not acked", f"{r['found_not_acked_total']}" + (f"  ({_counts(fna)})" if fna else ""))
    )
    if r["found_not_acked_sample"]:
        rows.append(("  first such ids", " ".join(r["found_not_acked_sample"])))
    if r["unexpected_ids"]:
        rows.append(
            ("unexpected ids", f"{r['unexpected_ids']}  e.g. {' '.join(r['unexpected_ids_sample'][:3])}")
        )
    rows += [
        ("sink lines", f"{r['sink_lines']}"),
        ("  by color", _counts(r["by_color"])),
        ("  by version", _counts(r["by_version"])),
        ("  by node", _counts(r["by_node"])),
        ("answered by (header)", _counts(r["served_by"])),
    ]
    if len(r["requests_by_url"]) > 1:
        failed_by_url = r["failed_requests_by_url"]
        rows.append(("requests by url", ""))
        rows += [
            (f"  {url}", f"{n}  ({failed_by_url.get(url, 0)} failed)")
            for url, n in r["requests_by_url"].items()
        ]
    width = max(len(k) for k, _ in rows) + 2
    return [f"  {k.ljust(width)}{v}" for k, v in rows]


def format_report(report: dict[str, Any]) -> str:
    out: list[str] = []
    sinks = report["sinks"]
    out.append(
        f"bluegreen verify: {len(report['runs'])} run(s), {len(sinks['files'])} sink file(s), "
        f"{sinks['lines']} lines, {sinks['invalid_lines']} not valid JSON"
    )
    for s in sinks["invalid_sample"]:
        torn = " (torn last line)" if s["torn_tail"] else ""
        out.append(f"  invalid line {s['file']}:{s['line']}{torn}: {s['start']!r}")
    for r in report["runs"]:
        state = "complete" if r["complete"] else "INCOMPLETE: no summary.json"
        out.append("")
        out.append(f"run {r['run_id']}  ({r['mode']}, {' + '.join(r['urls']) or '-'}, {state})  {r['dir']}")
        out.extend(_section(r))
    if len(report["runs"]) > 1:
        out.append("")
        out.append("all runs")
        out.extend(_section({**report, "unexpected_ids_sample": []}))
    out.append("")
    if report["ok"]:
        out.append(
            f"PASS: {report['acked_entries']} acked entries, all in the sinks; 0 failed requests; "
            f"{report['duplicates']} duplicated ids"
        )
    else:
        out.append("FAIL: " + "; ".join(report["reasons"]))
    return "\n".join(out)


# --- command line -------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--run",
        action="append",
        type=Path,
        required=True,
        metavar="DIR",
        help="a loadgen --out directory (repeatable)",
    )
    parser.add_argument(
        "--sinks",
        action="extend",
        nargs="+",
        metavar="GLOB",
        help=f"sink files: globs or directories (default: {DEFAULT_SINK_GLOB} under {PROJECT_ROOT})",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    parser.add_argument("--report", type=Path, metavar="FILE", help="also write the JSON report to FILE")
    parser.add_argument(
        "--sample", type=int, default=10, help="ids listed per finding (default: %(default)s)"
    )


def run(args: argparse.Namespace) -> int:
    try:
        report = verify(args.run, args.sinks, sample=max(0, args.sample))
    except VerifyInputError as exc:
        print(f"bluegreen verify: {exc}", file=sys.stderr)
        return 2
    data = orjson.dumps(report, option=orjson.OPT_INDENT_2)
    if args.report:
        try:
            args.report.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(args.report, data + b"\n")
        except OSError as exc:
            print(f"bluegreen verify: cannot write --report {args.report}: {exc}", file=sys.stderr)
            return 2
    if args.json:
        sys.stdout.write(data.decode() + "\n")
    else:
        print(format_report(report))
    return 0 if report["ok"] else 1
