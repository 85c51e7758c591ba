"""The allow-list and the deploy lock: what a button may run, and when it is refused (starting nothing)."""

from __future__ import annotations

import getpass
import json
import shutil
import socket
import subprocess
from pathlib import Path

from tests.webui.cli_lock import CliLock
from tests.webui.conftest import (
    csrf,
    login,
    post_action,
    refusal,
    run_id_from,
    wait_finished,
    write_lock,
)
from tests.webui.test_auth import assert_nothing_started
from webui import create_app


def state_dir(app) -> Path:
    return Path(app.config["STATE_DIR"])


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


VERSION_CASES = [
    ({"version": "9.9.9"}, "version 9.9.9 is not in the release store"),
    ({"version": "2.0.0"}, "version 2.0.0 is not in the release store"),  # a directory without manifest
    ({"version": "1.0.0; rm -rf /"}, "is not a release version"),
    ({"version": "../../etc"}, "is not a release version"),
    # `$` matches before a final newline: a full match refuses these, a store lookup must not be the guard
    ({"version": "1.1.0\n"}, "is not a release version"),
    ({"version": "9.9.9\n"}, "is not a release version"),
    ({"version": ""}, "choose a version"),
    ({}, "choose a version"),
]


def test_version_not_in_the_store_is_rejected_with_a_message(operator, app):
    for form, message in VERSION_CASES:
        status, page = refusal(operator, post_action(operator, action="deploy", **form))
        assert status == 400, form
        assert 'data-testid="flash-message"' in page
        assert message in page, form
    _, page = refusal(operator, post_action(operator, action="deploy", version="9.9.9"))
    assert "it has: 1.0.0, 1.1.0, 6.6.6" in page
    # shown once: reloading the overview neither repeats the refusal nor sends the form again
    assert 'data-testid="flash-message"' not in operator.get("/").get_data(as_text=True)
    assert_nothing_started(app)


def test_the_version_select_lists_exactly_the_release_store(operator):
    page = operator.get("/").get_data(as_text=True)
    select = page.split('id="deploy-version"', 1)[1].split("</select>", 1)[0]
    assert [line.split('"')[1] for line in select.split("<option value=")[1:]] == ["6.6.6", "1.1.0", "1.0.0"]
    assert operator.get("/api/releases").get_json() == {"releases": ["1.0.0", "1.1.0", "6.6.6"]}


FORM_CASES = [
    # user text never becomes an extra var: fields outside the action's own are refused
    ({"action": "deploy", "version": "1.0.0", "bluegreen_break_lock": "true"}, 400, "takes no field"),
    ({"action": "deploy", "version": "1.0.0", "extravars": '{"x": 1}'}, 400, "takes no field"),
    ({"action": "rollback", "color": "green"}, 400, "takes no field"),
    ({"action": "switch", "color": "red"}, 400, "color must be one of blue, green"),
    ({"action": "switch"}, 400, "color must be one of blue, green"),
    ({"action": "site"}, 400, "unknown action"),
    ({"action": "../playbooks/teardown"}, 400, "unknown action"),
    ({}, 400, "unknown action"),
    # the project has no playbooks/validate.yml: the action is listed but cannot start
    ({"action": "validate"}, 409, "Validate is unavailable: playbooks/validate.yml is not in the project"),
    # break-lock actions need a stale lock; there is none
    ({"action": "break-lock-rollback"}, 409, "there is no stale lock to break"),
]


def test_only_allow_listed_actions_with_valid_fields(operator, app):
    for form, status, message in FORM_CASES:
        shown, page = refusal(operator, post_action(operator, **form))
        assert shown == status, form
        assert message in page, form
        response = operator.post(
            "/runs",
            data={"csrf_token": csrf(operator), **form},
            headers={"Accept": "application/json"},
        )
        assert response.status_code == status, form
        assert message in response.get_json()["error"], form
    assert_nothing_started(app)
    assert len(app.extensions["bluegreen"].db.refusals(limit=100)) == 2 * len(FORM_CASES)


def test_missing_playbook_is_shown_unavailable(operator):
    actions = {a["name"]: a for a in operator.get("/api/actions").get_json()["actions"]}
    assert actions["validate"]["available"] is False
    assert "playbooks/validate.yml" in actions["validate"]["unavailable_reason"]
    assert actions["deploy"]["available"] is True
    assert actions["deploy"]["stages"] == ["preflight", "provision", "validate", "switch", "watch", "finish"]
    page = operator.get("/").get_data(as_text=True)
    assert 'data-testid="validate-unavailable"' in page
    button = page.split('id="validate-button"', 1)[1].split(">", 1)[0]
    assert "disabled" in button


def test_deploy_refused_while_a_cli_deploy_holds_the_lock(operator, app):
    """A lock written the way the controller writes it, held by a live process: Deploy names the holder."""
    holder = subprocess.Popen(["sleep", "60"])
    try:
        lock = write_lock(state_dir(app), holder.pid)
        for form in (
            {"action": "deploy", "version": "1.1.0"},
            {"action": "rollback"},
            {"action": "switch", "color": "green"},
        ):
            status, page = refusal(operator, post_action(operator, **form))
            assert status == 409, form
            assert 'data-testid="refused-lock-holder"' in page
            for shown in (lock["deployment_id"], "carol", str(holder.pid), lock["host"]):
                assert shown in page
            assert (
                "the deploy lock is held by deployment 20260101T120000Z-1.1.0 (deploy) of user carol" in page
            )
        # a live lock cannot be broken from the dashboard
        status, page = refusal(operator, post_action(operator, action="break-lock-deploy", version="1.0.0"))
        assert status == 409
        assert "refusing to break a live lock" in page
        # the overview shows the holder too
        overview = operator.get("/").get_data(as_text=True)
        assert "of user carol on" in overview.split('id="lock-holder"', 1)[1].split("</p>", 1)[0]
        assert operator.get("/api/lock").get_json()["lock"]["stale"] is False
    finally:
        holder.kill()
        holder.wait()
    assert_nothing_started(app)
    assert json.loads((state_dir(app) / "deploy.lock").read_text())["user"] == "carol"  # never touched


def test_deploy_refused_while_a_real_cli_playbook_holds_the_lock(operator, app, project, tmp_path):
    """The lock taken by a real ansible-playbook through bluegreen_state: Deploy shows
    that process as the holder and starts nothing; once it lets go, the lock is free again."""
    holder = CliLock(tmp_path, project / "inventories" / "local", state_dir(app))
    try:
        assert holder.lock["pid"] == holder.proc.pid
        status, page = refusal(operator, post_action(operator, action="deploy", version="1.1.0"))
        assert status == 409
        shown = page.split('data-testid="refused-lock-holder"', 1)[1].split("</dl>", 1)[0]
        for value in (
            holder.lock["deployment_id"],
            getpass.getuser(),
            str(holder.proc.pid),
            socket.gethostname(),
        ):
            assert f"<dd>{value}</dd>" in shown
        assert "stale" not in page.split('data-testid="refusal-text"', 1)[1].split("</span>", 1)[0]
        assert_nothing_started(app)
        holder.release()
    finally:
        holder.stop()
    assert operator.get("/api/lock").get_json() == {"lock": None, "text": None}


def test_lock_taken_for_a_dashboard_user_names_that_user(operator, app):
    holder = subprocess.Popen(["sleep", "60"])
    try:
        write_lock(state_dir(app), holder.pid, actor="alice")
        status, page = refusal(operator, post_action(operator, action="rollback"))
        assert status == 409
        assert "of alice (OS user carol) on" in page
        assert "<dd>alice (OS user carol)</dd>" in page
    finally:
        holder.kill()
        holder.wait()
    assert_nothing_started(app)


def test_stale_lock_is_broken_only_by_the_break_action(operator, app):
    write_lock(state_dir(app), dead_pid())
    status, page = refusal(operator, post_action(operator, action="deploy", version="1.0.0"))
    assert status == 409
    assert "it looks stale (holder process" in page
    assert "use Break stale lock" in page
    assert_nothing_started(app)

    page = operator.get("/").get_data(as_text=True)
    assert 'data-stale="true"' in page
    button = page.split('id="break-lock-deploy-button"', 1)[1].split(">", 1)[0]
    assert "disabled" not in button

    response = post_action(operator, action="break-lock-deploy", version="1.0.0")
    run_id = run_id_from(response)
    run = wait_finished(app, run_id)
    # the playbook got exactly the validated version, the fixed break-lock flag and the user, nothing else
    expected = {"bluegreen_version": "1.0.0", "bluegreen_break_lock": True, "bluegreen_actor": "olivia"}
    assert run["extravars"] == expected
    assert run["params"] == {"version": "1.0.0"}
    assert run["user"] == "olivia"
    assert run["status"] == "successful"
    log = operator.get(f"/runs/{run_id}/log").get_data(as_text=True)
    assert "deploying 1.0.0 (break lock: True)" in log
    extravars = Path(app.config["DATA_DIR"]) / "runs" / run_id / "env" / "extravars"
    assert json.loads(extravars.read_text()) == expected


def test_watch_seconds_setting_reaches_deploys_only(config, users_file):
    """WATCH_SECONDS comes from the dashboard's configuration (never a form) and only deploys get it."""
    app = create_app({**config, "WATCH_SECONDS": 4})
    shutil.copy(users_file, app.config["USERS_FILE"])
    try:
        client = app.test_client()
        assert login(client, "olivia").status_code == 302
        deploy = wait_finished(app, run_id_from(post_action(client, action="deploy", version="1.0.0")))
        assert deploy["extravars"] == {
            "bluegreen_version": "1.0.0",
            "bluegreen_watch_seconds": 4,
            "bluegreen_actor": "olivia",
        }
        rollback = wait_finished(app, run_id_from(post_action(client, action="rollback")))
        assert rollback["extravars"] == {"bluegreen_actor": "olivia"}
        # and a form cannot set it
        status, page = refusal(
            client, post_action(client, action="deploy", version="1.0.0", watch_seconds="1")
        )
        assert (status, "takes no field" in page) == (400, True)
    finally:
        app.extensions["bluegreen"].monitor.stop()


def test_the_store_never_calls_a_run_finished_while_it_is_still_in_the_way(operator, app):
    """Whenever the store records a run finished, the next action may start: the runner's final status
    is not recorded ahead of the run's end (a client seeing "finished" was refused with "in progress")."""
    bluegreen = app.extensions["bluegreen"]
    update_run = bluegreen.db.update_run
    seen: list[tuple[str, bool]] = []

    def update_then_look(run_id, **fields):
        update_run(run_id, **fields)
        if bluegreen.db.run(run_id)["finished"]:
            seen.append((fields.get("status"), bluegreen.runs.active() is None))

    bluegreen.db.update_run = update_then_look
    try:
        run = wait_finished(app, run_id_from(post_action(operator, action="deploy", version="1.0.0")))
    finally:
        bluegreen.db.update_run = update_run
    assert run["status"] == "successful"
    assert seen and all(free for _, free in seen), seen


def test_a_run_the_store_calls_finished_is_no_longer_in_the_way(operator, app):
    """The next action may start as soon as a run is recorded finished, before its end event is out."""
    bluegreen = app.extensions["bluegreen"]
    update_run = bluegreen.db.update_run
    in_the_way: list = []

    def update_then_look(run_id, **fields):
        update_run(run_id, **fields)
        if fields.get("finished_at"):
            in_the_way.append(bluegreen.runs.active())

    bluegreen.db.update_run = update_then_look
    try:
        run = wait_finished(app, run_id_from(post_action(operator, action="deploy", version="1.0.0")))
    finally:
        bluegreen.db.update_run = update_run
    assert run["status"] == "successful"
    assert in_the_way == [None]
    wait_finished(app, run_id_from(post_action(operator, action="rollback")))
