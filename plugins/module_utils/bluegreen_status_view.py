"""The operator's status: one lb's lines, and whether several lbs agree (bluegreen_status,
bluegreen_status_lbs and the dashboard share it, so all three call the same thing a disagreement)."""

from __future__ import annotations

import json

from ansible.module_utils.bluegreen_state import describe_failure

# what every lb must say alike (key of bluegreen_status's status -> how the message names it)
AGREED = (
    ("live", "live color in HAProxy"),
    ("state_live", "live color in state.json"),
    ("map_file_live", "live color in the map file"),
    ("versions", "versions in state.json"),
)


def _shown(value) -> str:
    if isinstance(value, dict):
        return "/".join(f"{k} {v}" for k, v in sorted(value.items())) or "none"
    return "none" if value is None else str(value)


def compare_lbs(statuses: dict) -> dict:
    """Do the lbs agree? `statuses`: lb name -> its status (bluegreen_status's `status`), None for an lb
    that gave none (unreachable, failed). Returns `agree`, `disagreement` (one sentence per difference,
    naming every lb and what it says) and `live_by_lb` (lb -> HAProxy's live color, None when unknown)."""
    disagreement = []
    missing = [lb for lb, status in statuses.items() if not status]
    if missing:
        why = "unreachable, or its status could not be read"
        disagreement.append(f"no status from {', '.join(missing)} ({why})")
    present = {lb: status for lb, status in statuses.items() if status}
    for key, what in AGREED:
        said = {lb: status.get(key) for lb, status in present.items()}
        if len({json.dumps(value, sort_keys=True) for value in said.values()}) > 1:
            disagreement.append(
                f"{what} differs: " + ", ".join(f"{lb} {_shown(v)}" for lb, v in said.items())
            )
    return {
        "agree": not disagreement,
        "disagreement": disagreement,
        "live_by_lb": {lb: (status or {}).get("live") for lb, status in statuses.items()},
    }


def combine(statuses: dict, anchor: str) -> dict:
    """The status of every lb in one: the anchor lb's status at the top (it holds the lock, the running
    deployment and the last failure), `lbs` (every lb's own), `lbs_agree`, `lbs_disagreement`,
    `live_by_lb`. When the lbs disagree, the top-level `live` and `idle` are None: there is no one live
    color."""
    agreement = compare_lbs(statuses)
    base = statuses.get(anchor) or next((s for s in statuses.values() if s), None) or {}
    out = {
        **base,
        "anchor": anchor,
        "lbs": statuses,
        "lbs_agree": agreement["agree"],
        "lbs_disagreement": agreement["disagreement"],
        "live_by_lb": agreement["live_by_lb"],
    }
    if not agreement["agree"]:
        out["live"] = out["idle"] = None
    return out


def render(s: dict, run_lines: bool = True) -> list[str]:
    """One lb's status as lines for people. Without `run_lines`: only what is the lb's own (live, idle,
    nodes), not the lock, deployment, failure and history the anchor lb keeps for the run."""
    versions = s["versions"]
    lines = [
        f"live   {s['live']} ({versions.get(s['live'], '?')})"
        + ("" if s["agree"] else f"   !! state.json says {s['state_live']}")
        + (
            ""
            if s["map_file_live"] == s["live"]
            else f"   !! the map file says {s['map_file_live']}: a reload would move traffic"
            " (deploy with -e bluegreen_repair_map=true to keep the live color)"
        ),
        f"idle   {s['idle']} ({versions.get(s['idle'], '?')}), warm until {s['warm_until'] or 'n/a'}",
    ]
    lines += [
        f"node   {n['name']:<10} {n['color']:<5} {n['haproxy']:<6} version {n['version'] or 'not answering'}"
        for n in s["nodes"]
    ]
    if not run_lines:
        return lines
    lock = s["lock"]
    if not lock:
        lines.append("lock   free")
    else:
        stale = f"  STALE: {lock.get('stale_reason')}" if lock.get("stale") else ""
        lines.append(
            f"lock   {lock.get('deployment_id')} ({lock.get('action')}) "
            f"by {lock.get('user')}@{lock.get('host')} pid {lock.get('pid')} "
            f"since {lock.get('started_at')}{stale}"
        )
    deployment, abandoned = s["deployment"], s["abandoned"]
    if not deployment:
        lines.append("deploy none running")
    else:
        lines.append(
            f"deploy {deployment['id']} at stage {deployment['stage']}"
            + (f"  ABANDONED: {abandoned['reason']}" if abandoned else "")
        )
    failure = s["failure"]
    if failure:
        lines.append(f"failed {describe_failure(failure)}")
    lines += [
        f"past   {h.get('at', '?')[:19]} {h.get('action')} {h.get('from', '')}->{h.get('to', '')} "
        f"{h.get('version', '')} {h.get('result', '')}"
        for h in s["history"]
    ]
    return lines


def render_lbs(combined: dict) -> list[str]:
    """The combined status's lines: one lb's lines as they are; several lbs: a first line saying what
    each serves and whether they agree (`!! LBS DISAGREE: ...` naming each difference), then the anchor's
    lines in full and each other lb's own (live, idle, nodes)."""
    statuses, anchor = combined["lbs"], combined["anchor"]
    if len(statuses) == 1 and statuses.get(anchor):
        return render(statuses[anchor])
    live = ", ".join(f"{lb} {_shown(color)}" for lb, color in combined["live_by_lb"].items())
    if combined["lbs_agree"]:
        lines = [f"lbs    {len(statuses)} load balancers, all serve {combined['live']}: {live}"]
    else:
        lines = [f"lbs    {len(statuses)} load balancers: {live}"]
        lines += [f"!! LBS DISAGREE: {d}" for d in combined["lbs_disagreement"]]
    for lb, status in statuses.items():
        lines.append(f"-- {lb}" + (" (anchor: lock, running deployment, history)" if lb == anchor else ""))
        lines += render(status, run_lines=lb == anchor) if status else ["no status"]
    return lines
