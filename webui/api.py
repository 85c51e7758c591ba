"""JSON API (read-only; actions go through POST /runs with a CSRF token): the same data the pages show."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, jsonify

from webui.auth import csrf_token
from webui.controller_state import describe_holder
from webui.overview import ext, snapshot
from webui.runs import get_run

bp = Blueprint("api", __name__, url_prefix="/api")


@bp.route("/me")
def me() -> Any:
    return jsonify(user=g.user["name"], role=g.user["role"], csrf_token=csrf_token())


@bp.route("/overview")
def overview() -> Any:
    return jsonify(snapshot(with_chart=True))


@bp.route("/actions")
def actions() -> Any:
    return jsonify(actions=ext().catalog.describe())


@bp.route("/releases")
def releases() -> Any:
    return jsonify(releases=ext().catalog.releases())


@bp.route("/lock")
def lock() -> Any:
    held = ext().runs.controller.lock()
    return jsonify(lock=held, text=describe_holder(held) if held else None)


@bp.route("/runs")
def runs() -> Any:
    return jsonify(runs=ext().db.runs(limit=200))


@bp.route("/runs/<run_id>")
def run(run_id: str) -> Any:
    return jsonify(get_run(run_id))


@bp.route("/runs/<run_id>/events")
def run_events(run_id: str) -> Any:
    """The full event log of a run, each with the runner's event as it came."""
    found = get_run(run_id)
    return jsonify(run=found, events=ext().db.raw_events(found["id"]))


@bp.route("/history")
def history() -> Any:
    return jsonify(history=ext().runs.controller.history(last=200))


# what a viewer sees of a refused login: no name (whatever was typed in the user box: perhaps a password)
LOGIN_REFUSED = {401: "wrong user name or password", 429: "too many failed logins"}


@bp.route("/refusals")
def refusals() -> Any:
    """Refused attempts, newest first. Only operators see the user names typed at the login form."""
    rows = ext().db.refusals()
    if g.user["role"] != "operator":
        rows = [
            {**row, "user": None, "reason": LOGIN_REFUSED.get(row["status"], "login refused")}
            if row["action"] == "login"
            else row
            for row in rows
        ]
    return jsonify(refusals=rows)
