"""The overview page and its live stream: colors, versions, node health, rates, lock, warm period."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, current_app, g, render_template, session

from webui import sse

bp = Blueprint("overview", __name__)


def ext() -> Any:
    return current_app.extensions["bluegreen"]


def active_run() -> dict | None:
    job = ext().runs.active()
    if job is None:
        return None
    return {"id": job.run_id, "action": job.action.name}


def snapshot(with_chart: bool = False) -> dict:
    """The latest sample (collected now if the poller has none yet), plus the running run."""
    monitor = ext().monitor
    monitor.ensure_started()
    sample = monitor.latest or monitor.collect()
    data = {key: value for key, value in sample.items() if key != "point"}
    data["active_run"] = active_run()
    if with_chart:
        data["chart"] = monitor.chart_points()
    return data


def render_overview(refusal: dict | None = None) -> Any:
    """The overview page; `refusal` {error, status, action, lock}: an action just refused, shown once."""
    bluegreen = ext()
    refusal = refusal or {}
    # colors and versions straight from state.json (cheap); rates arrive on the stream
    state = bluegreen.monitor.state_summary()
    return (
        render_template(
            "overview.html",
            state=state,
            actions=bluegreen.catalog.describe(),
            error=refusal.get("error"),
            refused_status=refusal.get("status"),
            refused_action=refusal.get("action"),
            refused_lock=refusal.get("lock"),
            can_act=g.user["role"] == "operator",
            recent=bluegreen.db.runs(limit=5),
            active=active_run(),
            chart_seconds=bluegreen.config["CHART_SECONDS"],
        ),
        200,
    )


@bp.route("/")
def index() -> Any:
    return render_overview(session.pop("refusal", None))


@bp.route("/overview/events")
def events() -> Any:
    monitor = ext().monitor
    lifetime = float(ext().config["OVERVIEW_STREAM_SECONDS"])
    runs = ext().runs

    def stream() -> Iterator[str]:
        yield f"retry: {sse.RETRY_MS}\n\n"
        monitor.ensure_started()
        deadline = time.monotonic() + lifetime
        seq = 0
        first = True
        while time.monotonic() < deadline:
            sample = monitor.wait_after(seq, timeout=5.0)
            if sample is None:
                yield sse.comment()
                continue
            seq = sample["seq"]
            data = {key: value for key, value in sample.items() if key != "point"}
            job = runs.active()
            data["active_run"] = {"id": job.run_id, "action": job.action.name} if job else None
            if first:
                data["chart"] = monitor.chart_points()
                first = False
            else:
                data["point"] = sample.get("point")
            yield sse.format_event(data, event_id=seq)

    return sse.response(stream())
