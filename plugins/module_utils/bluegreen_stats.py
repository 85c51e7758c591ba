"""Reading HAProxy's `show stat` rows the way bluegreen needs them: per color, health and error rates."""

from __future__ import annotations

# counters summed over an interval to compute rates (names as in HAProxy's CSV stats)
COUNTERS = (
    "stot",
    "hrsp_1xx",
    "hrsp_2xx",
    "hrsp_3xx",
    "hrsp_4xx",
    "hrsp_5xx",
    "econ",
    "eresp",
    "wretr",
    "wredis",
)


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def backend_name(color: str) -> str:
    return f"bg_{color}"


def summarize(rows: list[dict[str, str]]) -> dict[str, dict]:
    """Backends by name: status, queue, sessions, counters and each server's status and check."""
    backends: dict[str, dict] = {}
    for row in rows:
        proxy, name = row.get("pxname"), row.get("svname")
        if not proxy or not proxy.startswith("bg_") or name == "FRONTEND":
            continue
        backend = backends.setdefault(proxy, {"servers": {}})
        if name == "BACKEND":
            backend.update(
                status=row.get("status"),
                qcur=_int(row.get("qcur")),
                scur=_int(row.get("scur")),
                counters={key: _int(row.get(key)) for key in COUNTERS},
            )
        else:
            backend["servers"][name] = {
                "status": row.get("status"),
                "check_status": (row.get("check_status") or "").lstrip("* "),  # "* " = check running
                "address": row.get("addr"),
                "scur": _int(row.get("scur")),
                "stot": _int(row.get("stot")),
            }
    for backend in backends.values():
        servers = backend["servers"].values()
        backend["servers_up"] = sum(1 for s in servers if s["status"] == "UP")
        backend["servers_total"] = len(backend["servers"])
    return backends


def unhealthy_servers(backend: dict) -> list[str]:
    """Names of servers that are not UP, each with its status and last check."""
    return [
        f"{name} ({server['status']}, check {server['check_status'] or '-'})"
        for name, server in sorted(backend["servers"].items())
        if server["status"] != "UP"
    ]


def interval_rates(before: dict, after: dict, seconds: float) -> dict:
    """Requests, errors and error rate of a backend between two summaries of it."""
    delta = {key: after["counters"][key] - before["counters"][key] for key in COUNTERS}
    # Every request the backend answered is in exactly one hrsp_* counter, including the 502/503
    # HAProxy itself sends when a connection fails or a response breaks (econ/eresp are kept in
    # `delta` as the reason, never added again: that would count each such failure twice).
    requests = sum(delta[f"hrsp_{n}xx"] for n in range(1, 6))
    errors = delta["hrsp_5xx"]
    return {
        "seconds": round(seconds, 3),
        "requests": requests,
        "errors": errors,
        "error_rate": round(errors / requests, 4) if requests else 0.0,
        "req_per_s": round(requests / seconds, 1) if seconds > 0 else 0.0,
        "queue": after["qcur"],
        "delta": delta,
    }
