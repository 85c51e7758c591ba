"""Login, roles and CSRF.

Every route needs a logged-in user except the login page and static files: pages redirect to the
login page, the API and the event streams answer 401. Every POST (the login form too) needs the
session's CSRF token, as a form field `csrf_token` or an `X-CSRF-Token` header. Actions need the
operator role; a viewer gets 403.
"""

from __future__ import annotations

import functools
import hmac
import re
import secrets
from collections.abc import Callable
from typing import Any

from flask import (
    Blueprint,
    abort,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from webui.throttle import describe_wait

bp = Blueprint("auth", __name__)

PUBLIC_ENDPOINTS = {"auth.login", "static"}
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def csrf_token() -> str:
    """The session's CSRF token (made on first use)."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def wants_json() -> bool:
    return (
        request.path.startswith("/api/")
        or request.path.endswith("/events")
        or request.accept_mimetypes.best in ("application/json", "text/event-stream")
    )


# A redirect target after login: one local path (and query) of plain URL characters. A second "/" or
# a backslash after the first slash (browsers read "\\" as "/": "/\\host" is "//host", another site),
# a scheme, whitespace, CR/LF, or a "%" that is not an escape: all refused, by rule, not by quoting.
LOCAL_TARGET = re.compile(r"/(?![/\\])(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2}){0,2047}")


def _safe_next(target: str | None) -> str:
    """`target` when it is a local path by LOCAL_TARGET, else the overview."""
    if target and LOCAL_TARGET.fullmatch(target):
        return target
    return url_for("overview.index")


def session_generation(name: str) -> str | None:
    """What a session of this user must carry to be valid: the user's session generation in the
    database (moved on by logout) and a stamp of their password hash (changed with the password).
    None when the user does not exist."""
    bluegreen = current_app.extensions["bluegreen"]
    stamp = bluegreen.users.password_stamp(name)
    if stamp is None:
        return None
    return f"{bluegreen.db.session_generation(name)}.{stamp}"


@bp.before_app_request
def load_user() -> Any:
    g.user = None
    name = session.get("user")
    if name:
        g.user = current_app.extensions["bluegreen"].users.get(name)
        # removed from the users file, role no longer valid, logged out or password changed since
        if g.user is None or session.get("generation") != session_generation(name):
            g.user = None
            session.clear()
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    if g.user is None:
        if wants_json():
            return jsonify(error="login required"), 401
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    return None


@bp.before_app_request
def check_csrf() -> None:
    if request.method in SAFE_METHODS:
        return
    sent = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token") or ""
    expected = session.get("csrf") or ""
    if not (sent and expected and hmac.compare_digest(sent, expected)):
        bluegreen = current_app.extensions["bluegreen"]
        bluegreen.db.record_refusal(
            g.user["name"] if g.user else None, request.form.get("action"), 400, "CSRF token missing or wrong"
        )
        abort(400, description="CSRF token missing or wrong: reload the page and try again")


def role_required(role: str) -> Callable:
    def decorator(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            have = g.user["role"] if g.user else "nobody"
            if have != role:
                current_app.extensions["bluegreen"].db.record_refusal(
                    g.user["name"] if g.user else None,
                    request.form.get("action"),
                    403,
                    f"role {have} may not do this",
                )
                abort(403, description=f"the {role} role is needed for this; you are a {have}")
            return view(*args, **kwargs)

        return wrapped

    return decorator


def _login_refused(message: str, status: int, retry_after: float | None = None) -> Any:
    """A refused login: JSON clients get the status; a browser is redirected to the login page, which
    shows the message once (POST-redirect-GET: reloading it does not send the password again)."""
    if wants_json():
        response = jsonify(error=message)
        response.status_code = status
    else:
        session["login_error"] = message
        target = request.args.get("next")
        response = redirect(url_for("auth.login", next=target) if target else url_for("auth.login"), code=303)
    if retry_after:
        response.headers["Retry-After"] = str(max(1, int(retry_after + 0.999)))
    return response


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    if request.method == "POST":
        bluegreen = current_app.extensions["bluegreen"]
        name = request.form.get("username", "").strip()[:64]
        address = request.remote_addr
        wait, attempt = bluegreen.logins.begin(name, address)  # counted as a failure until it succeeds
        if wait > 0:
            message = (
                f"too many failed logins for {name or 'this user'} from {address}: "
                f"try again in {describe_wait(wait)}"
            )
            bluegreen.db.record_refusal(name or None, "login", 429, message)
            current_app.logger.warning("login refused: %s", message)
            return _login_refused(message, 429, wait)
        user = bluegreen.users.authenticate(name, request.form.get("password", ""))
        if user is None:
            bluegreen.db.record_refusal(name or None, "login", 401, "wrong user name or password")
            current_app.logger.info("failed login for %r from %s", name, address)
            return _login_refused("wrong user name or password", 401)
        bluegreen.logins.succeeded(name, address, attempt)
        session.clear()  # a new session (and CSRF token) on every login
        session["user"] = user["name"]
        session["generation"] = session_generation(user["name"])
        session.permanent = True
        csrf_token()
        current_app.logger.info("login: %s (%s) from %s", user["name"], user["role"], address)
        return redirect(_safe_next(request.args.get("next")))
    error = session.pop("login_error", None)
    return render_template("login.html", error=error, next=request.args.get("next", ""))


@bp.route("/logout", methods=["POST"])
def logout() -> Any:
    """Ends every session of the user (cookies are client-side: a kept copy must stop working too)."""
    current_app.extensions["bluegreen"].db.end_sessions(g.user["name"])
    session.clear()
    return redirect(url_for("auth.login"))
