"""Settings: defaults, a TOML file, BLUEGREEN_WEBUI_* variables, explicit values, in that order."""

from __future__ import annotations

from pathlib import Path

import pytest

from webui import config


def test_defaults_follow_the_project_dir(tmp_path: Path):
    settings = config.load(env={})
    assert (settings["HOST"], settings["PORT"]) == ("127.0.0.1", 8090)
    repo = config.REPO_ROOT
    assert settings["PROJECT_DIR"] == str(repo)
    assert settings["STATE_DIR"] == str(repo / ".lab" / "lb" / "state")
    assert settings["DATA_DIR"] == str(repo / ".lab" / "webui")
    assert settings["USERS_FILE"] == str(repo / ".lab" / "webui" / "users.json")
    assert settings["HAPROXY_STATS_URL"] == "http://127.0.0.1:8404/stats;csv"
    assert settings["SESSION_COOKIE_SECURE"] is False

    moved = config.load({"PROJECT_DIR": str(tmp_path)}, env={})
    assert moved["INVENTORY"] == str(tmp_path / "inventories" / "local")
    assert moved["RELEASE_STORE"] == str(tmp_path / ".lab" / "releases")


def test_file_then_environment_then_arguments(tmp_path: Path):
    path = tmp_path / "webui.toml"
    path.write_text('port = 9000\nhost = "0.0.0.0"\nsession_cookie_secure = true\ndata_dir = "/srv/webui"\n')
    env = {
        "BLUEGREEN_WEBUI_CONFIG": str(path),
        "BLUEGREEN_WEBUI_PORT": "9001",
        "BLUEGREEN_WEBUI_NODE_METRICS": "no",
    }
    settings = config.load({"HOST": "127.0.0.2"}, env=env)
    assert settings["PORT"] == 9001  # environment over file
    assert settings["HOST"] == "127.0.0.2"  # argument over all
    assert settings["SESSION_COOKIE_SECURE"] is True
    assert settings["NODE_METRICS"] is False
    assert settings["DATA_DIR"] == "/srv/webui"
    assert settings["USERS_FILE"] == "/srv/webui/users.json"


def test_bad_settings_are_refused(tmp_path: Path):
    path = tmp_path / "webui.toml"
    path.write_text("prot = 9000\n")
    with pytest.raises(config.ConfigError, match="unknown key 'prot'"):
        config.load({"CONFIG_FILE": str(path)}, env={})
    with pytest.raises(config.ConfigError, match="PORT: expected a number"):
        config.load(env={"BLUEGREEN_WEBUI_PORT": "http"})
    with pytest.raises(config.ConfigError, match="not a TCP port"):
        config.load({"PORT": 70000}, env={})
    with pytest.raises(config.ConfigError, match="expected true or false"):
        config.load(env={"BLUEGREEN_WEBUI_SESSION_COOKIE_SECURE": "maybe"})


def test_lb_state_dirs_are_name_dir_pairs(tmp_path: Path):
    loaded = config.load({"LB_STATE_DIRS": f"lb-1={tmp_path}/a, lb-2 = {tmp_path}/b"}, env={})
    assert loaded["LB_STATE_DIRS"] == {"lb-1": str(tmp_path / "a"), "lb-2": str(tmp_path / "b")}
    assert config.load(env={})["LB_STATE_DIRS"] == {}
    with pytest.raises(config.ConfigError, match="LB_STATE_DIRS: 'lb-2' is not NAME=DIR"):
        config.load(env={"BLUEGREEN_WEBUI_LB_STATE_DIRS": "lb-1=/x,lb-2"})
    with pytest.raises(config.ConfigError, match="lb 'lb-1' is named twice"):
        config.load({"LB_STATE_DIRS": "lb-1=/x,lb-1=/y"}, env={})


def test_a_resolved_config_resolves_to_itself(tmp_path: Path):
    """`python -m webui` loads the config, then create_app() resolves it again: LB_STATE_DIRS is a dict
    by then (empty or not), and a TOML table of lbs is accepted as well."""
    for dirs in ("", f"lb-1={tmp_path}/a,lb-2={tmp_path}/b"):
        loaded = config.load({"LB_STATE_DIRS": dirs, "DATA_DIR": str(tmp_path)}, env={})
        assert config.resolve(loaded) == loaded
    toml = tmp_path / "webui.toml"
    toml.write_text(f'[lb_state_dirs]\nlb-1 = "{tmp_path}/a"\n')
    assert config.load({"CONFIG_FILE": str(toml)}, env={})["LB_STATE_DIRS"] == {"lb-1": str(tmp_path / "a")}
