"""HAProxy's CSV stats page, and each node's sink counter, as the overview needs them.

Backend summaries and interval rates are the controller's own (module_utils/bluegreen_stats.py,
the same code the watch stage judges with); this file only fetches and adds the per-server fields
the overview shows.
"""

from __future__ import annotations

import csv
import io
import urllib.request
from urllib.parse import urlsplit

from ansible.module_utils.bluegreen_stats import interval_rates, summarize
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["fetch_rows", "interval_rates", "node_entries", "servers", "summarize"]

ENTRIES_METRIC = "logplatform_entries_accepted"


class StatsError(Exception):
    """The stats page could not be read; the message says why."""


def _check_url(url: str) -> str:
    if urlsplit(url).scheme not in ("http", "https"):
        raise StatsError(f"not an http(s) URL: {url!r}")
    return url


def fetch_rows(url: str, timeout: float = 1.0) -> list[dict[str, str]]:
    """The rows of HAProxy's `;csv` stats page as dicts keyed by column (pxname, svname, status, ...)."""
    try:
        with urllib.request.urlopen(_check_url(url), timeout=timeout) as reply:  # noqa: S310 (scheme checked)
            text = reply.read().decode("utf-8", "replace")
    except (OSError, ValueError) as exc:
        raise StatsError(f"cannot read HAProxy stats at {url}: {exc}") from exc
    if not text.startswith("# "):
        raise StatsError(f"{url} did not answer HAProxy CSV stats")
    return list(csv.DictReader(io.StringIO(text.removeprefix("# "))))


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def servers(rows: list[dict[str, str]], backend: str) -> list[dict]:
    """The servers of one backend: name, status, last check, address, session rate, totals, 5xx."""
    out = []
    for row in rows:
        if row.get("pxname") != backend or row.get("svname") in ("BACKEND", "FRONTEND"):
            continue
        out.append(
            {
                "name": row.get("svname"),
                "status": row.get("status"),
                "check_status": (row.get("check_status") or "").lstrip("* "),
                "addr": row.get("addr") or None,
                "rate": _int(row.get("rate")),
                "stot": _int(row.get("stot")),
                "hrsp_5xx": _int(row.get("hrsp_5xx")),
            }
        )
    return out


def backend_row(rows: list[dict[str, str]], backend: str) -> dict[str, str] | None:
    for row in rows:
        if row.get("pxname") == backend and row.get("svname") == "BACKEND":
            return row
    return None


def node_entries(addr: str, timeout: float = 0.5) -> float | None:
    """Entries a node has durably written so far (its /metrics counter), or None when unreadable."""
    try:
        with urllib.request.urlopen(_check_url(f"http://{addr}/metrics"), timeout=timeout) as reply:  # noqa: S310
            text = reply.read().decode("utf-8", "replace")
    except (OSError, ValueError, StatsError):
        return None
    total = 0.0
    try:
        for family in text_string_to_metric_families(text):
            if family.name in (ENTRIES_METRIC, f"{ENTRIES_METRIC}_total"):
                total += sum(s.value for s in family.samples if s.name == f"{ENTRIES_METRIC}_total")
    except ValueError:
        return None
    return total
