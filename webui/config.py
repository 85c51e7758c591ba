"""The dashboard's settings: defaults, then a TOML file, then BLUEGREEN_WEBUI_* environment variables.

Every key is documented in DEFAULTS. Paths that are not set follow the project directory, so pointing
PROJECT_DIR at another checkout (or a test's temporary project) moves everything with it.
"""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
ENV_PREFIX = "BLUEGREEN_WEBUI_"

# key -> (default, one-line meaning). None means "derived from another key", see resolve().
DEFAULTS: dict[str, tuple[Any, str]] = {
    "HOST": ("127.0.0.1", "address to listen on (loopback unless you mean otherwise)"),
    "PORT": (8090, "port to listen on"),
    "THREADS": (16, "waitress worker threads; every open SSE stream holds one"),
    "STREAM_RESERVED_THREADS": (
        4,
        "threads never given to event streams, kept for pages, the API and actions (streams: THREADS - this)",
    ),
    "STREAMS_PER_USER": (4, "event streams one user may hold open at once (tabs); more are refused with 429"),
    "PROJECT_DIR": (str(REPO_ROOT), "the repository whose playbooks run (ansible-runner project_dir)"),
    "INVENTORY": (None, "inventory passed to every run (default <project>/inventories/local)"),
    "STATE_DIR": (
        None,
        "state dir of the lb host: state.json, history.jsonl, deploy.lock (default <project>/.lab/lb/state)",
    ),
    "LB_STATE_DIRS": (
        "",
        "several lbs: NAME=DIR,NAME=DIR, each lb's state dir (read only); the overview shows each lb's live "
        "color and flags lbs that disagree (empty: one lb, STATE_DIR)",
    ),
    "RELEASE_STORE": (
        None,
        "release store, one <version>/manifest.json each (default <project>/.lab/releases)",
    ),
    "DATA_DIR": (None, "runs database, runner directories, secret key (default <project>/.lab/webui)"),
    "USERS_FILE": (None, "JSON file of users and password hashes (default <data dir>/users.json)"),
    "SECRET_KEY": (None, "session signing key (default: generated once into <data dir>/secret_key)"),
    "SESSION_COOKIE_SECURE": (False, "send the session cookie over HTTPS only (set behind TLS)"),
    "SESSION_HOURS": (12, "how long a login lasts"),
    "LOGIN_MAX_FAILURES": (
        5,
        "failed logins for one user from one address (4x that for one address) before login is refused "
        "for a while; 0: no limit",
    ),
    "LOGIN_WINDOW_SECONDS": (300, "the window those failures are counted in, and how long a refusal lasts"),
    "REFUSALS_KEEP": (1000, "refused attempts kept in the database, the newest (anyone may cause one)"),
    "TRUSTED_PROXIES": (
        0,
        "reverse proxies in front of the dashboard whose X-Forwarded-For/-Proto are trusted (ProxyFix): "
        "the login limit and the runs see the client address they forward; 0: none, the peer address",
    ),
    "HAPROXY_STATS_URL": ("http://127.0.0.1:8404/stats;csv", "HAProxy's CSV stats page"),
    "NODE_METRICS": (True, "read each node's /metrics (address from HAProxy) for sink entries/s"),
    "POLL_INTERVAL": (1.0, "seconds between two overview samples"),
    "CHART_SECONDS": (600, "how much rate history the overview chart keeps (in memory)"),
    "OVERVIEW_STREAM_SECONDS": (300, "an overview SSE stream ends after this; the browser reconnects"),
    "SSE_HEARTBEAT": (15.0, "seconds between keep-alive comments on a quiet run stream"),
    "RUN_TIMEOUT": (3600, "a run is cancelled by ansible-runner after this many seconds"),
    "WATCH_SECONDS": (
        0,
        "deploys run their watch stage this long (bluegreen_watch_seconds); 0: the playbook's default",
    ),
    "ANSIBLE_BIN_DIR": (
        None,
        "directory put first on PATH for runs, where ansible-playbook is "
        "(default: the one beside this Python, i.e. the venv's bin)",
    ),
}


class ConfigError(Exception):
    """The configuration cannot be used; the message says which key and why."""


_BOOLEANS = {
    "1": True,
    "true": True,
    "yes": True,
    "on": True,
    "0": False,
    "false": False,
    "no": False,
    "off": False,
    "": False,
}


def _coerce(key: str, value: Any) -> Any:
    default = DEFAULTS[key][0]
    if value is None or (isinstance(value, bool) and isinstance(default, bool)):
        return value
    if isinstance(default, bool):
        text = str(value).strip().lower()
        if text not in _BOOLEANS:
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return _BOOLEANS[text]
    kind = type(default) if isinstance(default, int | float) else str
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected a number, got {value!r}") from None


def read_file(path: Path) -> dict[str, Any]:
    """Keys of a TOML config file (lower or upper case), refusing keys we do not know."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    out = {}
    for key, value in data.items():
        name = key.upper()
        if name not in DEFAULTS:
            raise ConfigError(
                f"{path}: unknown key {key!r} (known: {', '.join(k.lower() for k in DEFAULTS)})"
            )
        out[name] = value
    return out


def parse_lb_state_dirs(value: str | Mapping[str, str]) -> dict[str, str]:
    """`NAME=DIR,NAME=DIR` (or a TOML table, or what this returned: resolve() may run on a resolved
    config) -> {name: absolute dir}, in order; refuses an entry it cannot use, naming it."""
    if isinstance(value, Mapping):
        pairs = [(str(name).strip(), "=", str(path).strip()) for name, path in value.items()]
    else:
        pairs = [tuple(x.strip() for x in part.strip().partition("=")) for part in str(value).split(",")]
    out: dict[str, str] = {}
    for name, sep, path in pairs:
        entry = f"{name}{sep}{path}"
        if not entry:
            continue
        if not sep or not name or not path:
            raise ConfigError(f"LB_STATE_DIRS: {entry!r} is not NAME=DIR")
        if name in out:
            raise ConfigError(f"LB_STATE_DIRS: lb {name!r} is named twice")
        out[name] = str(Path(path).resolve())
    return out


def resolve(values: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults filled in, types checked, derived paths made absolute."""
    unknown = set(values) - set(DEFAULTS) - {"TESTING", "CONFIG_FILE"}
    if unknown:
        raise ConfigError(f"unknown config keys: {', '.join(sorted(unknown))}")
    config = {key: _coerce(key, values.get(key, default)) for key, (default, _) in DEFAULTS.items()}
    config["LB_STATE_DIRS"] = values.get("LB_STATE_DIRS") or ""
    project = Path(config["PROJECT_DIR"]).resolve()
    config["PROJECT_DIR"] = str(project)
    derived = {
        "INVENTORY": project / "inventories" / "local",
        "STATE_DIR": project / ".lab" / "lb" / "state",
        "RELEASE_STORE": project / ".lab" / "releases",
        "DATA_DIR": project / ".lab" / "webui",
    }
    for key, path in derived.items():
        config[key] = str(Path(config[key]).resolve()) if config[key] else str(path)
    config["LB_STATE_DIRS"] = parse_lb_state_dirs(config["LB_STATE_DIRS"])
    if not config["USERS_FILE"]:
        config["USERS_FILE"] = str(Path(config["DATA_DIR"]) / "users.json")
    if not config["ANSIBLE_BIN_DIR"]:
        config["ANSIBLE_BIN_DIR"] = str(Path(sys.executable).parent)
    if not 0 < config["PORT"] < 65536:
        raise ConfigError(f"PORT: {config['PORT']} is not a TCP port")
    if config["POLL_INTERVAL"] <= 0 or config["CHART_SECONDS"] <= 0:
        raise ConfigError("POLL_INTERVAL and CHART_SECONDS must be positive")
    if config["LOGIN_MAX_FAILURES"] < 0 or config["LOGIN_WINDOW_SECONDS"] <= 0:
        raise ConfigError("LOGIN_MAX_FAILURES must be 0 or more and LOGIN_WINDOW_SECONDS positive")
    if not 1 <= config["STREAM_RESERVED_THREADS"] < config["THREADS"]:
        raise ConfigError(
            f"STREAM_RESERVED_THREADS: {config['STREAM_RESERVED_THREADS']} must be 1 or more and less "
            f"than THREADS ({config['THREADS']}): streams get the other threads"
        )
    if config["STREAMS_PER_USER"] < 1:
        raise ConfigError(f"STREAMS_PER_USER: {config['STREAMS_PER_USER']} is not 1 or more")
    if not 0 <= config["TRUSTED_PROXIES"] <= 10:
        raise ConfigError(f"TRUSTED_PROXIES: {config['TRUSTED_PROXIES']} is not between 0 and 10")
    if config["REFUSALS_KEEP"] < 1:
        raise ConfigError(f"REFUSALS_KEEP: {config['REFUSALS_KEEP']} is not 1 or more")
    if not 0 <= config["WATCH_SECONDS"] <= 86400:
        raise ConfigError(f"WATCH_SECONDS: {config['WATCH_SECONDS']} is not between 0 and 86400")
    config["TESTING"] = bool(values.get("TESTING", False))
    return config


def load(overrides: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Defaults <- TOML file (CONFIG_FILE or $BLUEGREEN_WEBUI_CONFIG) <- environment <- overrides."""
    env = os.environ if env is None else env
    overrides = {key.upper(): value for key, value in (overrides or {}).items() if value is not None}
    values: dict[str, Any] = {}
    config_file = overrides.pop("CONFIG_FILE", None) or env.get(f"{ENV_PREFIX}CONFIG")
    if config_file:
        values.update(read_file(Path(config_file)))
    for key in DEFAULTS:
        if f"{ENV_PREFIX}{key}" in env:
            values[key] = env[f"{ENV_PREFIX}{key}"]
    values.update(overrides)
    return resolve(values)
