"""The dashboard's data folder is private whatever creates it first, and its refusals table stays small
and shows viewers no login names."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from tests.webui.conftest import PASSWORD, csrf, login
from tests.webui.test_server import users_cli
from webui import create_app


@pytest.fixture
def umask_022():
    """The usual umask, set explicitly: without our modes, folders would be 0755 and files 0644."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def assert_private(data_dir: Path) -> None:
    assert mode(data_dir) == 0o700
    files = [p for p in data_dir.iterdir() if p.is_file()]
    names = {p.name for p in files}
    assert {"users.json", "webui.sqlite3", "secret_key"} <= names, names
    for path in files:
        assert mode(path) == 0o600, path


def users_add(data_dir: Path, name: str, role: str = "viewer") -> None:
    """`python -m webui.users add` into data_dir, as an admin runs it."""
    env = {"BLUEGREEN_WEBUI_DATA_DIR": str(data_dir), "BLUEGREEN_WEBUI_PASSWORD": PASSWORD}
    done = users_cli("add", name, "--role", role, env=env)
    assert done.returncode == 0, done.stderr


def test_users_add_first_then_the_dashboard(tmp_path: Path, config: dict, umask_022):
    data_dir = tmp_path / "fresh" / "data"
    users_add(data_dir, "alice", "operator")
    assert mode(data_dir) == 0o700
    app = create_app({**config, "DATA_DIR": str(data_dir), "SECRET_KEY": None})
    try:
        client = app.test_client()
        assert login(client, "alice").status_code == 302
        assert client.get("/api/runs").status_code == 200
        assert_private(data_dir)
    finally:
        app.extensions["bluegreen"].monitor.stop()


def test_the_dashboard_first_then_users_add(tmp_path: Path, config: dict, umask_022):
    data_dir = tmp_path / "fresh" / "data"
    app = create_app({**config, "DATA_DIR": str(data_dir), "SECRET_KEY": None})
    try:
        users_add(data_dir, "alice")
        assert login(app.test_client(), "alice").status_code == 302
        assert_private(data_dir)
    finally:
        app.extensions["bluegreen"].monitor.stop()


def start_and_stop(config: dict, data_dir: Path) -> None:
    app = create_app({**config, "DATA_DIR": str(data_dir), "SECRET_KEY": None})
    app.extensions["bluegreen"].monitor.stop()


def test_an_existing_data_folder_and_database_are_made_private(tmp_path: Path, config: dict, umask_022):
    """Left open by an earlier version: the dashboard closes them when it starts."""
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    start_and_stop(config, data_dir)
    (data_dir / "webui.sqlite3").chmod(0o644)
    data_dir.chmod(0o755)
    users_add(data_dir, "alice")
    start_and_stop(config, data_dir)
    assert_private(data_dir)


def test_refusals_are_capped(config: dict, users_file: Path):
    """Unauthenticated POSTs (no CSRF token) are recorded, but only the newest REFUSALS_KEEP stay."""
    app = create_app({**config, "REFUSALS_KEEP": 50})
    try:
        client = app.test_client()
        for n in range(120):
            assert client.post("/login", data={"action": f"a{n}"}).status_code == 400
        kept = app.extensions["bluegreen"].db.refusals(limit=1000)
        assert len(kept) == 50
        assert {r["action"] for r in kept} == {f"a{n}" for n in range(70, 120)}
    finally:
        app.extensions["bluegreen"].monitor.stop()


def test_viewers_see_no_login_names_in_refusals(app, viewer, operator):
    typed = "olivia-typed-her-Passw0rd-here"
    client = app.test_client()
    for _ in range(5):
        assert login(client, typed, "guess " * 3).status_code == 303
    assert login(client, typed).status_code == 303  # 429: the message names the user
    # a viewer refused an action is no login name typed by someone else: it stays
    response = viewer.post("/runs", data={"action": "rollback", "csrf_token": csrf(viewer)})
    assert response.status_code == 403

    seen = viewer.get("/api/refusals").get_json()["refusals"]
    assert typed not in json.dumps(seen)
    logins = [r for r in seen if r["action"] == "login"]
    assert [r["status"] for r in logins] == [429, 401, 401, 401, 401, 401]
    assert {r["user"] for r in logins} == {None}
    assert {r["user"] for r in seen if r["action"] == "rollback"} == {"victor"}

    full = operator.get("/api/refusals").get_json()["refusals"]
    assert typed in json.dumps(full)
    assert {r["user"] for r in full if r["action"] == "login"} == {typed}
