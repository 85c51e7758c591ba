"""Starting runs (the buttons), the run page with its event stream, the full log, and history."""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from webui import sse
from webui.actions import BY_NAME, ActionRefused
from webui.auth import role_required, wants_json
from webui.jobs import RUN_ID_PATTERN
from webui.overview import ext

bp = Blueprint("runs", __name__)


def get_run(run_id: str) -> dict:
    run = ext().db.run(run_id) if RUN_ID_PATTERN.match(run_id) else None
    if run is None:
        abort(404, description=f"no run {run_id[:60]!r}")
    return run


@bp.route("/runs", methods=["POST"])
@role_required("operator")
def start() -> Any:
    bluegreen = ext()
    try:
        action, params, extravars = bluegreen.catalog.validate(request.form)
        run_id = bluegreen.runs.start(action, params, extravars, g.user, request.remote_addr)
    except ActionRefused as refused:
        bluegreen.db.record_refusal(g.user["name"], request.form.get("action"), refused.status, str(refused))
        if wants_json():
            return jsonify(error=str(refused), lock=refused.lock), refused.status
        # POST-redirect-GET: the overview shows the refusal once; reloading it asks for nothing again
        session["refusal"] = {
            "error": str(refused),
            "status": refused.status,
            "action": (request.form.get("action") or "")[:40],
            "lock": refused.lock,
        }
        return redirect(url_for("overview.index"), code=303)
    if wants_json():
        return jsonify(run_id=run_id, url=url_for("runs.page", run_id=run_id)), 202
    return redirect(url_for("runs.page", run_id=run_id), code=303)


@bp.route("/runs/<run_id>")
def page(run_id: str) -> Any:
    run = get_run(run_id)
    action = BY_NAME.get(run["action"])
    return render_template("run.html", run=run, stages=list(action.stages) if action else [])


@bp.route("/runs/<run_id>/events")
def events(run_id: str) -> Any:
    run = get_run(run_id)
    bluegreen = ext()
    job = bluegreen.runs.job(run["id"])
    heartbeat = float(bluegreen.config["SSE_HEARTBEAT"])
    return sse.response(sse.run_stream(bluegreen.db, run["id"], sse.last_event_id(), job, heartbeat))


@bp.route("/runs/<run_id>/log")
def log(run_id: str) -> Any:
    """The run's whole output as Ansible printed it, then its result: one plain-text file."""
    run = get_run(run_id)
    lines = [
        f"# run {run['id']}: {run['action']} {run['params']} by {run['user']}, playbook {run['playbook']}",
        f"# extra vars: {run['extravars']}",
    ]
    for event in ext().db.events(run["id"], after=0, limit=1_000_000):
        payload = event["payload"]
        if event["kind"] == "end":
            lines.append(f"# result: {payload.get('status')} (rc {payload.get('rc')})")
            if payload.get("failure"):
                lines.append(f"# failure: {payload['failure']}")
        elif event["kind"] in ("status", "accepted"):
            lines.append(f"# {event['kind']}: {payload.get('status') or payload.get('action')}")
        elif payload.get("stdout"):
            lines.append(payload["stdout"])
    return Response("\n".join(lines) + "\n", mimetype="text/plain")


@bp.route("/history")
def history() -> Any:
    bluegreen = ext()
    try:
        controller = list(reversed(bluegreen.runs.controller.history(last=200)))
        controller_error = None
    except OSError as exc:
        controller, controller_error = [], str(exc)
    return render_template(
        "history.html",
        runs=bluegreen.db.runs(limit=200),
        controller=controller,
        controller_error=controller_error,
        state_dir=bluegreen.config["STATE_DIR"],
    )
