"""Service configuration: load the flat TOML file, check every key, compute digests.

The file is rendered by the Ansible role, so a typo or a wrong type is a deployment bug: it is
refused with a message naming the key (``ConfigError``; the command line exits 2) instead of being
ignored or coerced.

The digests let the deployment pipeline prove that every node of a color runs the same settings:
``config_digest`` covers the full effective config (defaults applied) and
``shared_config_digest`` leaves out the keys that legitimately differ per node
(``NODE_SPECIFIC_KEYS``). Both are the sha256 hex of canonical JSON, reproducible with the
standard library only::

    json.dumps(effective, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_LEVELS",
    "NODE_SPECIFIC_KEYS",
    "Config",
    "ConfigError",
    "FaultConfig",
    "config_digest",
    "effective_config",
    "load_config",
    "parse_config",
    "shared_config_digest",
]

DEFAULT_LEVELS: tuple[str, ...] = (
    "trace",
    "debug",
    "info",
    "notice",
    "warn",
    "warning",
    "error",
    "critical",
    "fatal",
)

# Keys that differ between nodes of one deployment by design; everything else must be identical.
NODE_SPECIFIC_KEYS: frozenset[str] = frozenset(
    {"node", "color", "listen_host", "listen_port", "sink_dir", "shadow_sink_dir"}
)

COLORS = ("blue", "green")

# The node name becomes part of the sink file name, so it must not be able to escape sink_dir.
_NODE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class ConfigError(ValueError):
    """The config file is unreadable or a key is unknown, missing, or of the wrong type/value."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class FaultConfig:
    """TEST-ONLY fault injection (the ``[fault]`` table). Never set these in production."""

    crash_on_start: bool = False  # exit 3 right after start-up, before ready
    never_ready: bool = False  # serve, but /health/ready stays 503 "not-ready"
    error_rate: float = 0.0  # fraction of POST /v1/logs answered 500 without writing
    error_after_requests: int = 0  # error_rate applies only after this many POST /v1/logs (a release
    # that passes its canary, then fails under traffic)
    extra_latency_ms: float = 0.0  # added to every POST /v1/logs
    report_version: str = ""  # if set, reported instead of the real version
    lose_writes: bool = False  # answer 200 without writing anything (the canary check must catch it)


@dataclass(frozen=True)
class Config:
    """The effective configuration (defaults applied, every value checked)."""

    node: str
    color: str
    listen_port: int
    sink_dir: Path
    listen_host: str = "127.0.0.1"
    # Where shadow traffic (requests with X-Bluegreen-Shadow: 1) is written; None: shadow is refused.
    shadow_sink_dir: Path | None = None
    max_body_bytes: int = 8 * 1024 * 1024
    max_batch_entries: int = 10_000
    levels: tuple[str, ...] = DEFAULT_LEVELS
    drain_grace_seconds: float = 1.0
    shutdown_timeout_seconds: float = 15.0
    fsync: bool = True
    fault: FaultConfig = field(default_factory=FaultConfig)


# key -> (kind, required). Kinds are checked by _check_value; order is the documentation order.
_TOP_KEYS: dict[str, tuple[str, bool]] = {
    "node": ("str", True),
    "color": ("str", True),
    "listen_host": ("str", False),
    "listen_port": ("int", True),
    "sink_dir": ("str", True),
    "shadow_sink_dir": ("str", False),
    "max_body_bytes": ("int", False),
    "max_batch_entries": ("int", False),
    "levels": ("list[str]", False),
    "drain_grace_seconds": ("float", False),
    "shutdown_timeout_seconds": ("float", False),
    "fsync": ("bool", False),
    "fault": ("table", False),
}
_FAULT_KEYS: dict[str, str] = {
    "crash_on_start": "bool",
    "never_ready": "bool",
    "error_rate": "float",
    "error_after_requests": "int",
    "extra_latency_ms": "float",
    "report_version": "str",
    "lose_writes": "bool",
}

_TYPE_NAMES = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean (true/false)",
    "list[str]": "a list of strings",
    "table": "a table",
}


def _check_value(key: str, kind: str, value: Any) -> Any:
    """Return ``value`` in its canonical Python type, or raise ConfigError naming ``key``."""
    # bool is a subclass of int in Python: refuse it wherever a number is expected.
    ok: bool
    if kind == "str":
        ok = isinstance(value, str)
    elif kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "float":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok and not math.isfinite(value):
            raise ConfigError(f"config key {key!r} must be a finite number, got {value!r}", key)
    elif kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "list[str]":
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    elif kind == "table":
        ok = isinstance(value, dict)
    else:  # pragma: no cover - programming error in the tables above
        raise AssertionError(kind)
    if not ok:
        raise ConfigError(
            f"config key {key!r} must be {_TYPE_NAMES[kind]}, got {type(value).__name__} {value!r}", key
        )
    # Numbers given as 1 or 1.0 mean the same; make them one type so the digest agrees too.
    return float(value) if kind == "float" else value


def _parse_fault(raw: dict[str, Any]) -> FaultConfig:
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in _FAULT_KEYS:
            known = ", ".join(_FAULT_KEYS)
            raise ConfigError(f"unknown config key 'fault.{key}' (known fault keys: {known})", f"fault.{key}")
        values[key] = _check_value(f"fault.{key}", _FAULT_KEYS[key], value)
    fault = FaultConfig(**values)
    if not 0.0 <= fault.error_rate <= 1.0:
        raise ConfigError(
            f"config key 'fault.error_rate' must be between 0 and 1, got {fault.error_rate}",
            "fault.error_rate",
        )
    if fault.extra_latency_ms < 0:
        raise ConfigError("config key 'fault.extra_latency_ms' must be >= 0", "fault.extra_latency_ms")
    if fault.error_after_requests < 0:
        key = "fault.error_after_requests"
        raise ConfigError(f"config key '{key}' must be >= 0", key)
    return fault


def parse_config(raw: dict[str, Any]) -> Config:
    """Check a parsed TOML document and return the effective Config (raises ConfigError)."""
    for key in raw:
        if key not in _TOP_KEYS:
            raise ConfigError(f"unknown config key {key!r} (known keys: {', '.join(_TOP_KEYS)})", key)
    for key, (_, required) in _TOP_KEYS.items():
        if required and key not in raw:
            raise ConfigError(f"missing required config key {key!r}", key)

    values: dict[str, Any] = {}
    for key, value in raw.items():
        checked = _check_value(key, _TOP_KEYS[key][0], value)
        values[key] = _parse_fault(checked) if key == "fault" else checked
    _check_identity(values)
    _check_limits(values)
    values["sink_dir"] = Path(values["sink_dir"])
    if "shadow_sink_dir" in values:
        values["shadow_sink_dir"] = Path(values["shadow_sink_dir"])
    if "levels" in values:
        values["levels"] = tuple(values["levels"])
    return Config(**values)


def _fail(key: str, message: str) -> ConfigError:
    return ConfigError(f"config key {key!r} {message}", key)


def _check_identity(values: dict[str, Any]) -> None:
    """Values of the node-specific keys."""
    node = values["node"]
    if not _NODE_RE.fullmatch(node):
        raise _fail(
            "node",
            "must be 1-128 characters of letters, digits, '.', '_' or '-' (it names the sink file), "
            f"got {node!r}",
        )
    if values["color"] not in COLORS:
        raise _fail("color", f"must be 'blue' or 'green', got {values['color']!r}")
    if not 1 <= values["listen_port"] <= 65535:
        raise _fail("listen_port", f"must be between 1 and 65535, got {values['listen_port']}")
    if "listen_host" in values and not values["listen_host"]:
        raise _fail("listen_host", "must not be empty")
    # A relative path would depend on the working directory of whatever supervises the process.
    if not Path(values["sink_dir"]).is_absolute():
        raise _fail("sink_dir", f"must be an absolute path, got {values['sink_dir']!r}")
    if "shadow_sink_dir" in values:
        shadow = values["shadow_sink_dir"]
        if not Path(shadow).is_absolute():
            raise _fail("shadow_sink_dir", f"must be an absolute path, got {shadow!r}")
        # Shadow entries must never land in the production sink.
        if Path(shadow) == Path(values["sink_dir"]):
            raise _fail("shadow_sink_dir", f"must not be the production sink_dir, got {shadow!r}")


def _check_limits(values: dict[str, Any]) -> None:
    """Values of the shared keys."""
    for key in ("max_body_bytes", "max_batch_entries"):
        if key in values and values[key] < 1:
            raise _fail(key, f"must be >= 1, got {values[key]}")
    levels = values.get("levels", DEFAULT_LEVELS)
    if not levels:
        raise _fail("levels", "must list at least one level")
    for level in levels:
        # Entries' levels are lowercased before the lookup, so an upper-case level could never match.
        if not level or level != level.lower():
            raise _fail("levels", f"entries must be non-empty and lowercase, got {level!r}")
    if values.get("drain_grace_seconds", 0.0) < 0:
        raise _fail("drain_grace_seconds", "must be >= 0")
    if values.get("shutdown_timeout_seconds", 1.0) <= 0:
        raise _fail("shutdown_timeout_seconds", "must be > 0")


def load_config(path: Path | str) -> Config:
    """Read and check a TOML config file (raises ConfigError with a readable message)."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from exc
    return parse_config(raw)


def effective_config(config: Config) -> dict[str, Any]:
    """The full effective config as plain JSON-able data (what the digests are computed over)."""
    fault = config.fault
    return {
        "node": config.node,
        "color": config.color,
        "listen_host": config.listen_host,
        "listen_port": config.listen_port,
        "sink_dir": str(config.sink_dir),
        "shadow_sink_dir": None if config.shadow_sink_dir is None else str(config.shadow_sink_dir),
        "max_body_bytes": config.max_body_bytes,
        "max_batch_entries": config.max_batch_entries,
        "levels": list(config.levels),
        "drain_grace_seconds": config.drain_grace_seconds,
        "shutdown_timeout_seconds": config.shutdown_timeout_seconds,
        "fsync": config.fsync,
        "fault": {
            "crash_on_start": fault.crash_on_start,
            "never_ready": fault.never_ready,
            "error_rate": fault.error_rate,
            "error_after_requests": fault.error_after_requests,
            "extra_latency_ms": fault.extra_latency_ms,
            "report_version": fault.report_version,
            "lose_writes": fault.lose_writes,
        },
    }


def _digest(data: dict[str, Any]) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def config_digest(config: Config) -> str:
    """sha256 hex of the canonical JSON of the full effective config."""
    return _digest(effective_config(config))


def shared_config_digest(config: Config) -> str:
    """Like config_digest, without NODE_SPECIFIC_KEYS: equal on every node of a deployment."""
    data = {k: v for k, v in effective_config(config).items() if k not in NODE_SPECIFIC_KEYS}
    return _digest(data)
