"""Login, roles, CSRF and the session cookie: every refusal starts nothing."""

from __future__ import annotations

import re
import shutil
import threading
import time
from pathlib import Path

from tests.webui.conftest import (
    PASSWORD,
    csrf,
    login,
    post_action,
    refusal,
    run_id_from,
    stream,
    wait_finished,
)
from webui import create_app
from webui.actions import ACTIONS
from webui.users import UserStore

RUN = "20260101T120000Z-deploy-abcdef"
PAGES = ["/", "/history", f"/runs/{RUN}", f"/runs/{RUN}/log"]
STREAMS = ["/overview/events", f"/runs/{RUN}/events"]
API = [
    "/api/me",
    "/api/overview",
    "/api/actions",
    "/api/releases",
    "/api/lock",
    "/api/runs",
    f"/api/runs/{RUN}",
    f"/api/runs/{RUN}/events",
    "/api/history",
    "/api/refusals",
]


def assert_nothing_started(app) -> None:
    bluegreen = app.extensions["bluegreen"]
    assert bluegreen.db.runs() == []
    assert bluegreen.runs._jobs == {}
    assert not (Path(app.config["DATA_DIR"]) / "runs").exists()


def test_every_route_needs_login(app):
    client = app.test_client()
    for path in PAGES:
        response = client.get(path)
        assert response.status_code == 302, path
        assert response.headers["Location"].startswith("/login?next="), path
    for path in STREAMS + API:
        response = client.get(path)
        assert response.status_code == 401, path
        assert response.get_json() == {"error": "login required"}, path
    # the login page itself and static files are reachable
    assert client.get("/login").status_code == 200
    assert client.get("/static/app.css").status_code == 200


def test_every_route_answers_once_logged_in(viewer, app):
    """The same list of routes, so the refusals above are refusals and not 404s."""
    for path in ["/", "/history", *API[:6], "/api/history", "/api/refusals"]:
        assert viewer.get(path).status_code == 200, path
    for path in [f"/runs/{RUN}", f"/api/runs/{RUN}"]:
        assert viewer.get(path).status_code == 404, path


def test_post_without_login_starts_nothing(app):
    client = app.test_client()
    client.get("/login")  # a session with a CSRF token, but no user
    for action in ACTIONS:
        response = client.post(
            "/runs", data={"action": action.name, "version": "1.0.0", "csrf_token": csrf(client)}
        )
        assert response.status_code == 302
        assert response.headers["Location"].startswith("/login")
        response = client.post(
            "/runs",
            data={"action": action.name, "version": "1.0.0", "csrf_token": csrf(client)},
            headers={"Accept": "application/json"},
        )
        assert response.status_code == 401
    assert_nothing_started(app)


def test_wrong_password_and_unknown_user_are_refused(app):
    client = app.test_client()
    for name, password in (("olivia", "wrong password!"), ("mallory", PASSWORD)):
        # POST-redirect-GET: back to the login page, which says why once
        response = login(client, name, password)
        assert response.status_code == 303
        assert response.headers["Location"] == "/login"
        page = client.get("/login").get_data(as_text=True)
        assert 'data-testid="login-error"' in page
        assert "wrong user name or password" in page
        assert "wrong user name or password" not in client.get("/login").get_data(as_text=True)
    assert client.get("/").status_code == 302
    # JSON clients get the status itself
    response = client.post(
        "/login",
        data={"username": "olivia", "password": "nope", "csrf_token": csrf(client)},
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 401
    assert response.get_json() == {"error": "wrong user name or password"}
    assert [r["reason"] for r in app.extensions["bluegreen"].db.refusals()] == [
        "wrong user name or password"
    ] * 3


def test_failed_logins_are_rate_limited_per_user_and_address(app):
    """LOGIN_MAX_FAILURES (5) failures for one user from one address: refused, even with the right
    password, with a message saying for how long; other users and addresses are not affected."""
    client = app.test_client()
    for _ in range(5):
        assert login(client, "olivia", "guess " * 3).status_code == 303
    response = login(client, "olivia")  # the right password, too late
    assert response.status_code == 303
    assert int(response.headers["Retry-After"]) > 250
    page = client.get("/login").get_data(as_text=True)
    assert re.search(r"too many failed logins for olivia from 127.0.0.1: try again in \d+ min", page)
    assert client.get("/").status_code == 302  # not logged in
    response = client.post(
        "/login",
        data={"username": "olivia", "password": PASSWORD, "csrf_token": csrf(client)},
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 429
    assert "too many failed logins" in response.get_json()["error"]
    refusals = app.extensions["bluegreen"].db.refusals()
    assert [r["status"] for r in refusals[:2]] == [429, 429]
    assert {r["action"] for r in refusals} == {"login"}

    # the same user from another address, and another user from this one, may still log in
    other = app.test_client()
    other.get("/login")
    response = other.post(
        "/login",
        data={"username": "olivia", "password": PASSWORD, "csrf_token": csrf(other)},
        environ_base={"REMOTE_ADDR": "127.0.0.2"},
    )
    assert response.status_code == 302
    assert login(app.test_client(), "victor").status_code == 302


def test_one_address_guessing_many_users_is_limited_too(app):
    client = app.test_client()
    for n in range(20):  # 4 x LOGIN_MAX_FAILURES over different user names
        assert login(client, f"user{n}", "guess " * 3).status_code == 303
    assert login(client, "victor").status_code == 303
    assert "too many failed logins for victor" in client.get("/login").get_data(as_text=True)


def test_parallel_bad_logins_get_no_more_password_checks_than_the_limit(app):
    """Check and record are one step: guesses fired at once cannot all pass the check before any of
    them is recorded. Of 16 parallel bad logins, at most LOGIN_MAX_FAILURES (5) reach the password."""
    clients = []
    for _ in range(16):
        client = app.test_client()
        client.get("/login")
        clients.append((client, csrf(client)))
    barrier = threading.Barrier(len(clients))
    statuses: list[int] = []

    def guess(client, token: str) -> None:
        barrier.wait()
        response = client.post(
            "/login",
            data={"username": "olivia", "password": "guess " * 3, "csrf_token": token},
            headers={"Accept": "application/json"},
        )
        statuses.append(response.status_code)

    threads = [threading.Thread(target=guess, args=pair) for pair in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(statuses) == 16
    assert set(statuses) <= {401, 429}, statuses
    assert statuses.count(401) <= 5, statuses
    # and the limit is reached: the right password is refused now
    assert login(app.test_client(), "olivia").status_code == 303


def forwarded_login(app, name: str, client_address: str, password: str = "guess guess guess"):
    """A login through a proxy on 127.0.0.1 that says it forwards client_address."""
    client = app.test_client()
    client.get("/login")
    return client.post(
        "/login",
        data={"username": name, "password": password, "csrf_token": csrf(client)},
        headers={"X-Forwarded-For": client_address, "Accept": "application/json"},
    )


def test_behind_a_trusted_proxy_each_client_address_is_limited_apart(config, users_file):
    """TRUSTED_PROXIES=1: the address the proxy forwards is the client's; one client guessing does not
    lock out everyone else behind the same proxy."""
    app = create_app({**config, "TRUSTED_PROXIES": 1})
    shutil.copy(users_file, app.config["USERS_FILE"])
    try:
        for n in range(20):  # 4 x LOGIN_MAX_FAILURES, from one client, many user names
            assert forwarded_login(app, f"user{n}", "203.0.113.7").status_code == 401
        refused = forwarded_login(app, "victor", "203.0.113.7", PASSWORD)
        assert refused.status_code == 429
        assert "from 203.0.113.7" in refused.get_json()["error"]
        # another client behind the same proxy logs in; the run it starts records its address
        assert forwarded_login(app, "olivia", "203.0.113.8", PASSWORD).status_code == 302
        assert forwarded_login(app, "victor", "198.51.100.1", PASSWORD).status_code == 302
    finally:
        app.extensions["bluegreen"].monitor.stop()


def test_without_trusted_proxies_x_forwarded_for_is_ignored(app):
    """The default (0): a client cannot escape the limit by sending X-Forwarded-For itself."""
    for n in range(20):
        assert forwarded_login(app, f"user{n}", f"198.51.100.{n}").status_code == 401
    refused = forwarded_login(app, "victor", "198.51.100.99", PASSWORD)
    assert refused.status_code == 429
    assert "from 127.0.0.1" in refused.get_json()["error"]


def test_login_needs_csrf(app):
    client = app.test_client()
    client.get("/login")
    response = client.post("/login", data={"username": "olivia", "password": PASSWORD})
    assert response.status_code == 400
    assert client.get("/").status_code == 302


def test_login_redirects_only_to_local_paths(app):
    client = app.test_client()
    client.get("/login")
    response = client.post(
        "/login?next=https://evil.example/",
        data={"username": "olivia", "password": PASSWORD, "csrf_token": csrf(client)},
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    client.post("/logout", data={"csrf_token": csrf(client)})
    client.get("/login")
    response = client.post(
        "/login?next=/history", data={"username": "olivia", "password": PASSWORD, "csrf_token": csrf(client)}
    )
    assert response.headers["Location"] == "/history"


# `next` values that are not plain local paths: after a good login they all land on the overview
NOT_LOCAL = [
    "https://evil.example/",
    "//evil.example/",
    "/\\evil.example",  # browsers read a backslash as a slash: //evil.example
    "/\\/evil.example",
    "\\\\evil.example",
    "/history\r\nSet-Cookie: stolen=1",  # CR/LF: a 500 from the Location header, or a split header
    "/history\n",
    "/\r",
    "\t//evil.example",
    " /history",
    "/history foo",
    "javascript:alert(1)",
    "/%",  # not an escape: a stray %
    "/" + "a" * 2100,  # longer than any page we have
    "history",
    "",
]


def test_login_next_is_only_ever_a_local_path(app):
    """A real login with each `next`: a redirect (never a 500) to the overview; a local path is kept."""
    for target in NOT_LOCAL:
        client = app.test_client()
        client.get("/login")
        response = client.post(
            "/login",
            query_string={"next": target},
            data={"username": "olivia", "password": PASSWORD, "csrf_token": csrf(client)},
        )
        assert response.status_code == 302, (target, response.get_data(as_text=True)[:300])
        assert response.headers["Location"] == "/", target
        assert client.get("/api/me").status_code == 200, target  # logged in all the same
    for target in ["/history", "/runs/20260101T120000Z-deploy-abcdef", "/?a=1&b=x%20y", "/runs/a-b_c.d~e"]:
        client = app.test_client()
        client.get("/login")
        response = client.post(
            "/login",
            query_string={"next": target},
            data={"username": "olivia", "password": PASSWORD, "csrf_token": csrf(client)},
        )
        assert response.status_code == 302, target
        assert response.headers["Location"] == target


def test_viewer_gets_403_on_every_action(viewer, app):
    for action in ACTIONS:
        form = {"action": action.name}
        for field in action.fields:
            form[field.name] = field.choices[0] if field.choices else "1.0.0"
        response = post_action(viewer, **form)
        assert response.status_code == 403, action.name
        assert "operator role is needed" in response.get_data(as_text=True)
        response = viewer.post(
            "/runs", data={"csrf_token": csrf(viewer), **form}, headers={"Accept": "application/json"}
        )
        assert response.status_code == 403
        assert "operator" in response.get_json()["error"]
    assert_nothing_started(app)
    refusals = app.extensions["bluegreen"].db.refusals()
    assert {r["user"] for r in refusals} == {"victor"}
    assert {r["status"] for r in refusals} == {403}


def test_viewer_sees_actions_disabled(viewer):
    page = viewer.get("/").get_data(as_text=True)
    assert 'data-testid="viewer-note"' in page
    assert 'id="deploy-button" data-testid="deploy-button"' in page
    button = page.split('id="deploy-button"', 1)[1].split(">", 1)[0]
    assert "disabled" in button


def test_post_without_the_csrf_token_is_refused(operator, app):
    for token in (None, "", "not-the-token", csrf(operator)[:-1]):
        form = {"action": "deploy", "version": "1.0.0"}
        if token is not None:
            form["csrf_token"] = token
        response = operator.post("/runs", data=form)
        assert response.status_code == 400
        assert "CSRF token missing or wrong" in response.get_data(as_text=True)
        # a header with a wrong token does not help either
        response = operator.post("/runs", data=form, headers={"X-CSRF-Token": "forged"})
        assert response.status_code == 400
    # nor does another session's token
    other = app.test_client()
    other.get("/login")
    response = operator.post("/runs", data={"action": "rollback", "csrf_token": csrf(other)})
    assert response.status_code == 400
    assert_nothing_started(app)


def test_csrf_token_in_header_is_accepted(operator, app):
    """Same check, other carrier: scripts may send X-CSRF-Token (here refused later, for the version)."""
    response = operator.post(
        "/runs", data={"action": "deploy", "version": "9.9.9"}, headers={"X-CSRF-Token": csrf(operator)}
    )
    status, page = refusal(operator, response)
    assert status == 400
    assert "not in the release store" in page
    assert_nothing_started(app)


def test_logout_needs_csrf_and_ends_the_session(operator):
    assert operator.post("/logout").status_code == 400
    assert operator.get("/").status_code == 200
    assert operator.post("/logout", data={"csrf_token": csrf(operator)}).status_code == 302
    assert operator.get("/").status_code == 302


def session_cookie(client) -> str:
    return client.get_cookie("bluegreen_session").value


def with_cookie(app, value: str):
    """A new client that sends a session cookie saved earlier (a copy of a stolen or kept cookie)."""
    client = app.test_client()
    client.set_cookie("bluegreen_session", value)
    return client


def test_an_old_session_cookie_is_refused_after_logout(operator, app):
    kept = session_cookie(operator)
    assert with_cookie(app, kept).get("/api/me").status_code == 200
    elsewhere = app.test_client()  # the same user in another browser
    assert login(elsewhere, "olivia").status_code == 302
    assert operator.post("/logout", data={"csrf_token": csrf(operator)}).status_code == 302

    replay = with_cookie(app, kept)
    assert replay.get("/api/me").status_code == 401
    assert replay.get("/").headers["Location"].startswith("/login")
    # the kept cookie still carries its CSRF token: the action is refused for the session, not the token
    response = post_action(replay, action="rollback")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")
    assert_nothing_started(app)
    # logging out ends every session of that user; a new login works
    assert elsewhere.get("/api/me").status_code == 401
    again = app.test_client()
    assert login(again, "olivia").status_code == 302
    assert again.get("/api/me").status_code == 200
    assert with_cookie(app, kept).get("/api/me").status_code == 401


def test_open_streams_end_when_their_session_is_revoked(operator, app, project):
    """A run page left open (its stream waits at the gate) stops streaming once the user logs out
    elsewhere: the browser's reconnect then gets 401."""
    run_id = run_id_from(post_action(operator, action="deploy", version="1.1.0"))
    reader = stream(operator, f"/runs/{run_id}/events")
    try:
        assert reader.next()["event"] == "message"  # accepted
        elsewhere = app.test_client()
        assert login(elsewhere, "olivia").status_code == 302
        assert elsewhere.post("/logout", data={"csrf_token": csrf(elsewhere)}).status_code == 302
        started = time.monotonic()
        # read to the end: the gate holds the run for 60 s, so an `end` event means the stream went on
        outcome = [message["event"] for message in iter(reader.next, None)]
        assert "end" not in outcome, outcome
        assert time.monotonic() - started < 30  # SSE_HEARTBEAT is 0.5 s here
        assert operator.get(f"/runs/{run_id}/events").status_code == 401
    finally:
        (project / "gate").touch()
        reader.close()
        wait_finished(app, run_id)


def test_an_old_session_cookie_is_refused_after_a_password_change(operator, viewer, app):
    kept = session_cookie(operator)
    UserStore(app.config["USERS_FILE"]).add("olivia", "operator", PASSWORD + "-new", replace=True)
    assert with_cookie(app, kept).get("/api/me").status_code == 401
    assert operator.get("/api/me").status_code == 401
    assert login(app.test_client(), "olivia").status_code == 303  # the old password
    fresh = app.test_client()
    assert login(fresh, "olivia", PASSWORD + "-new").status_code == 302
    assert fresh.get("/api/me").get_json()["user"] == "olivia"
    assert viewer.get("/api/me").status_code == 200  # other users keep their sessions


def test_session_cookie_is_httponly_and_samesite_strict(app, config):
    client = app.test_client()
    client.get("/login")
    response = client.post(
        "/login", data={"username": "olivia", "password": PASSWORD, "csrf_token": csrf(client)}
    )
    cookie = response.headers["Set-Cookie"]
    assert "bluegreen_session=" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Secure" not in cookie

    secure = create_app({**config, "SESSION_COOKIE_SECURE": True})
    UserStore(secure.config["USERS_FILE"])  # same users file as app
    client = secure.test_client()
    client.get("/login")
    response = client.post(
        "/login", data={"username": "olivia", "password": PASSWORD, "csrf_token": csrf(client)}
    )
    assert "Secure" in response.headers["Set-Cookie"]
    secure.extensions["bluegreen"].monitor.stop()


def test_role_changes_and_removals_apply_at_once(operator, app):
    users = UserStore(app.config["USERS_FILE"])
    users.add("olivia", "viewer", PASSWORD, replace=True)
    assert post_action(operator, action="rollback").status_code == 403
    users.remove("olivia")
    assert operator.get("/").status_code == 302
    assert_nothing_started(app)


def test_security_headers(operator):
    response = operator.get("/")
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
