"""logplatform.config: strict keys and types, defaults, digests; the CLI's exit code 2."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from logplatform.__main__ import main
from logplatform.config import (
    DEFAULT_LEVELS,
    NODE_SPECIFIC_KEYS,
    ConfigError,
    config_digest,
    effective_config,
    load_config,
    parse_config,
    shared_config_digest,
)

MINIMAL: dict[str, Any] = {
    "node": "blue-1",
    "color": "blue",
    "listen_port": 9101,
    "sink_dir": "/srv/logplatform/sink",
}


def with_(**changes: Any) -> dict[str, Any]:
    raw = dict(MINIMAL)
    raw.update(changes)
    return raw


def test_minimal_config_gets_documented_defaults() -> None:
    cfg = parse_config(dict(MINIMAL))
    assert cfg.listen_host == "127.0.0.1"
    assert cfg.sink_dir == Path("/srv/logplatform/sink")
    assert cfg.max_body_bytes == 8388608
    assert cfg.max_batch_entries == 10000
    assert cfg.levels == DEFAULT_LEVELS
    assert cfg.levels == ("trace", "debug", "info", "notice", "warn", "warning", "error", "critical", "fatal")
    assert cfg.drain_grace_seconds == 1.0
    assert cfg.shutdown_timeout_seconds == 15.0
    assert cfg.fsync is True
    assert cfg.fault.crash_on_start is False
    assert cfg.fault.never_ready is False
    assert cfg.fault.error_rate == 0.0
    assert cfg.fault.extra_latency_ms == 0
    assert cfg.fault.report_version == ""


def test_full_config_from_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "logplatform.toml"
    path.write_text(
        'node = "green-2"\ncolor = "green"\nlisten_host = "0.0.0.0"\nlisten_port = 9202\n'
        'sink_dir = "/data/sink"\nmax_body_bytes = 1024\nmax_batch_entries = 5\n'
        'levels = ["info", "error"]\ndrain_grace_seconds = 2\nshutdown_timeout_seconds = 3.5\n'
        "fsync = false\n\n[fault]\nnever_ready = true\nerror_rate = 0.5\nextra_latency_ms = 20\n"
        'report_version = "9.9.9"\n'
    )
    cfg = load_config(path)
    assert (cfg.node, cfg.color, cfg.listen_host, cfg.listen_port) == ("green-2", "green", "0.0.0.0", 9202)
    assert (cfg.max_body_bytes, cfg.max_batch_entries, cfg.levels) == (1024, 5, ("info", "error"))
    assert cfg.drain_grace_seconds == 2.0
    assert isinstance(cfg.drain_grace_seconds, float)
    assert cfg.fsync is False
    assert (cfg.fault.never_ready, cfg.fault.error_rate, cfg.fault.extra_latency_ms) == (True, 0.5, 20)
    assert cfg.fault.report_version == "9.9.9"


@pytest.mark.parametrize("key", ["listen_prot", "sinkdir", "fault_rate"])
def test_unknown_key_is_refused_by_name(key: str) -> None:
    with pytest.raises(ConfigError, match=key) as info:
        parse_config(with_(**{key: 1}))
    assert info.value.key == key
    assert "unknown config key" in str(info.value)


def test_unknown_fault_key_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"fault\.crash") as info:
        parse_config(with_(fault={"crash": True}))
    assert info.value.key == "fault.crash"


@pytest.mark.parametrize("key", ["node", "color", "listen_port", "sink_dir"])
def test_missing_required_key(key: str) -> None:
    raw = dict(MINIMAL)
    del raw[key]
    with pytest.raises(ConfigError, match=f"missing required config key '{key}'") as info:
        parse_config(raw)
    assert info.value.key == key


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("listen_port", "9101"),
        ("listen_port", 9101.0),
        ("listen_port", True),
        ("node", 1),
        ("listen_host", ["127.0.0.1"]),
        ("max_body_bytes", True),
        ("max_batch_entries", "10"),
        ("levels", "info"),
        ("levels", ["info", 3]),
        ("drain_grace_seconds", "1"),
        ("drain_grace_seconds", False),
        ("shutdown_timeout_seconds", float("nan")),
        ("fsync", "yes"),
        ("fsync", 1),
        ("fault", True),
    ],
)
def test_wrong_type_is_refused_by_name(key: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=f"config key '{key}' must be") as info:
        parse_config(with_(**{key: value}))
    assert info.value.key == key


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("crash_on_start", "no"),
        ("never_ready", 0),
        ("error_rate", "0.1"),
        ("extra_latency_ms", True),
        ("report_version", 2),
    ],
)
def test_wrong_fault_type_is_refused_by_name(key: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=f"config key 'fault.{key}' must be"):
        parse_config(with_(fault={key: value}))


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"color": "red"}, "color"),
        ({"node": "../etc"}, "node"),
        ({"node": ""}, "node"),
        ({"node": "blue 1"}, "node"),
        ({"listen_port": 0}, "listen_port"),
        ({"listen_port": 70000}, "listen_port"),
        ({"listen_host": ""}, "listen_host"),
        ({"sink_dir": "relative/sink"}, "sink_dir"),
        ({"shadow_sink_dir": "relative/shadow"}, "shadow_sink_dir"),
        ({"shadow_sink_dir": "/srv/logplatform/sink"}, "shadow_sink_dir"),
        ({"shadow_sink_dir": 7}, "shadow_sink_dir"),
        ({"max_body_bytes": 0}, "max_body_bytes"),
        ({"max_batch_entries": -1}, "max_batch_entries"),
        ({"levels": []}, "levels"),
        ({"levels": ["INFO"]}, "levels"),
        ({"drain_grace_seconds": -1}, "drain_grace_seconds"),
        ({"shutdown_timeout_seconds": 0}, "shutdown_timeout_seconds"),
        ({"fault": {"error_rate": 1.5}}, "fault.error_rate"),
        ({"fault": {"extra_latency_ms": -5}}, "fault.extra_latency_ms"),
    ],
)
def test_bad_value_is_refused_by_name(changes: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as info:
        parse_config(with_(**changes))
    assert info.value.key == key


def test_unreadable_and_invalid_toml_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text('node = "blue-1\n')
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_digest_is_sha256_of_canonical_json_of_the_effective_config() -> None:
    cfg = parse_config(dict(MINIMAL))
    effective = effective_config(cfg)
    # Every documented key appears, defaults applied.
    assert set(effective) == {
        "node",
        "color",
        "listen_host",
        "listen_port",
        "sink_dir",
        "shadow_sink_dir",
        "max_body_bytes",
        "max_batch_entries",
        "levels",
        "drain_grace_seconds",
        "shutdown_timeout_seconds",
        "fsync",
        "fault",
    }
    canonical = json.dumps(effective, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert config_digest(cfg) == hashlib.sha256(canonical.encode()).hexdigest()
    shared = {k: v for k, v in effective.items() if k not in NODE_SPECIFIC_KEYS}
    canonical = json.dumps(shared, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert shared_config_digest(cfg) == hashlib.sha256(canonical.encode()).hexdigest()


def test_digests_are_stable_and_defaults_count_as_set() -> None:
    a = parse_config(dict(MINIMAL))
    b = parse_config(with_(max_body_bytes=8388608, drain_grace_seconds=1, fsync=True, fault={}))
    assert config_digest(a) == config_digest(b)
    assert shared_config_digest(a) == shared_config_digest(b)
    assert len(config_digest(a)) == 64
    int(config_digest(a), 16)
    assert config_digest(a) != shared_config_digest(a)


def test_shared_digest_ignores_node_specific_keys_only() -> None:
    assert {
        "node",
        "color",
        "listen_host",
        "listen_port",
        "sink_dir",
        "shadow_sink_dir",
    } == NODE_SPECIFIC_KEYS
    blue = parse_config(dict(MINIMAL))
    green = parse_config(
        with_(
            node="green-7",
            color="green",
            listen_host="10.0.0.7",
            listen_port=9202,
            sink_dir="/other",
            shadow_sink_dir="/other-shadow",
        )
    )
    assert config_digest(blue) != config_digest(green)
    assert shared_config_digest(blue) == shared_config_digest(green)

    for changes in ({"max_batch_entries": 5}, {"fsync": False}, {"fault": {"error_rate": 0.1}}):
        changed = parse_config(with_(**changes))
        assert shared_config_digest(changed) != shared_config_digest(blue), changes
        assert config_digest(changed) != config_digest(blue), changes


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "logplatform.toml"
    path.write_text(text)
    return path


def test_cli_exits_2_naming_the_bad_key(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, 'node = "b"\ncolor = "blue"\nlisten_port = 1\nsink_dir = "/s"\nlisten_prot = 2\n')
    with caplog.at_level(logging.ERROR):
        assert main(["--config", str(path)]) == 2
    assert "listen_prot" in caplog.text


def test_cli_exits_2_on_wrong_type(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, 'node = "b"\ncolor = "blue"\nlisten_port = "9101"\nsink_dir = "/s"\n')
    with caplog.at_level(logging.ERROR):
        assert main(["--config", str(path)]) == 2
    assert "'listen_port' must be an integer" in caplog.text


def test_cli_check_config_prints_digests(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, 'node = "blue-1"\ncolor = "blue"\nlisten_port = 9101\nsink_dir = "/s"\n')
    assert main(["--config", str(path), "--check-config"]) == 0
    report = json.loads(capsys.readouterr().out)
    cfg = load_config(path)
    assert report["config_digest"] == config_digest(cfg)
    assert report["shared_config_digest"] == shared_config_digest(cfg)
    assert report["config"] == effective_config(cfg)


def test_shadow_sink_dir_is_optional_and_a_path() -> None:
    assert parse_config(dict(MINIMAL)).shadow_sink_dir is None
    assert effective_config(parse_config(dict(MINIMAL)))["shadow_sink_dir"] is None
    cfg = parse_config(with_(shadow_sink_dir="/srv/logplatform/shadow"))
    assert cfg.shadow_sink_dir == Path("/srv/logplatform/shadow")
    assert effective_config(cfg)["shadow_sink_dir"] == "/srv/logplatform/shadow"
