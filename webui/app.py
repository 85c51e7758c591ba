"""The Flask app factory: settings, session cookie, the app's objects, blueprints, headers, errors."""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask, jsonify, render_template
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from webui import api, auth, overview, runs
from webui import config as webui_config
from webui.actions import Catalog
from webui.files import FILE_MODE, private_dir
from webui.jobs import RunManager
from webui.monitor import Monitor
from webui.sse import StreamSlots
from webui.store import Database
from webui.throttle import LoginThrottle
from webui.users import UserStore

log = logging.getLogger("webui")


@dataclass
class Bluegreen:
    """The app's own objects, at app.extensions["bluegreen"]."""

    config: dict
    db: Database
    users: UserStore
    catalog: Catalog
    runs: RunManager
    monitor: Monitor
    logins: LoginThrottle
    streams: StreamSlots


def _secret_key(config: dict) -> str:
    if config["SECRET_KEY"]:
        return config["SECRET_KEY"]
    path = Path(config["DATA_DIR"]) / "secret_key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        path.chmod(FILE_MODE)
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return path.read_text().strip()


def build(config: Mapping[str, Any] | None = None) -> Flask:
    """The dashboard app. `config`: keys of webui.config.DEFAULTS (the environment is read only when None)."""
    settings = webui_config.load() if config is None else webui_config.resolve(config)
    # run logs, users and the secret key: not for other local users (made private if it was not)
    private_dir(Path(settings["DATA_DIR"]))

    app = Flask(__name__)
    if settings["TRUSTED_PROXIES"]:
        # behind N proxies that each append to X-Forwarded-For: the client is the Nth from the right
        n = settings["TRUSTED_PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n)  # type: ignore[method-assign]
    app.config.update(settings)
    app.config.update(
        SECRET_KEY=_secret_key(settings),
        SESSION_COOKIE_NAME="bluegreen_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=settings["SESSION_COOKIE_SECURE"],
        PERMANENT_SESSION_LIFETIME=dt.timedelta(hours=settings["SESSION_HOURS"]),
        MAX_CONTENT_LENGTH=64 * 1024,
    )

    db = Database(Path(settings["DATA_DIR"]) / "webui.sqlite3", refusals_keep=settings["REFUSALS_KEEP"])
    app.extensions["bluegreen"] = Bluegreen(
        config=settings,
        db=db,
        users=UserStore(settings["USERS_FILE"]),
        catalog=Catalog(settings["PROJECT_DIR"], settings["RELEASE_STORE"]),
        runs=RunManager(settings, db),
        monitor=Monitor(settings),
        logins=LoginThrottle(settings["LOGIN_MAX_FAILURES"], settings["LOGIN_WINDOW_SECONDS"]),
        streams=StreamSlots(
            settings["THREADS"] - settings["STREAM_RESERVED_THREADS"], settings["STREAMS_PER_USER"]
        ),
    )

    app.register_blueprint(auth.bp)
    app.register_blueprint(overview.bp)
    app.register_blueprint(runs.bp)
    app.register_blueprint(api.bp)
    app.jinja_env.globals["csrf_token"] = auth.csrf_token

    @app.template_filter("when")
    def when(value: Any) -> str:
        if value in (None, ""):
            return "-"
        if isinstance(value, int | float):
            return dt.datetime.fromtimestamp(value, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        text = str(value)
        try:
            parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return text
        return parsed.strftime("%Y-%m-%d %H:%M:%S") + ("Z" if text.endswith("Z") else "")

    @app.after_request
    def security_headers(response: Any) -> Any:
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        )
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        if auth.wants_json():
            return jsonify(error=exc.description, status=exc.code), exc.code
        return render_template("error.html", error=exc), exc.code

    return app
