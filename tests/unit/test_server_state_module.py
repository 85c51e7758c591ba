"""bluegreen_server_state: the saved file is what HAProxy loads at start, so runtime changes survive."""

from __future__ import annotations

import pytest

from tests.ansible_modules import run_module
from tests.unit import haproxy_fixture
from tests.unit.node_fixture import running_nodes


@pytest.fixture
def haproxy(tmp_path):
    with (
        running_nodes(blue=["1.0.0"], green=["1.1.0"]) as nodes,
        haproxy_fixture.running(
            tmp_path,
            nodes={color: [n.address for n in group] for color, group in nodes.items()},
            load_state=True,
        ) as lb,
    ):
        yield lb


def save(haproxy, check_mode=False):
    return run_module(
        "bluegreen_server_state",
        {"socket": haproxy.socket, "path": str(haproxy.dir / "server-state")},
        check_mode=check_mode,
    )


def admin_state(state_text: str, server: str) -> str:
    """srv_admin_state of one server in a server-state file (0 ready, 1 forced maintenance)."""
    for line in state_text.splitlines():
        fields = line.split()
        if len(fields) > 6 and fields[3] == server:
            return fields[6]
    raise AssertionError(f"{server} not in {state_text!r}")


def put_green_in_maintenance(haproxy) -> None:
    assert haproxy.command("set server bg_green/green-1 state maint").strip() == ""
    haproxy.wait_status({"bg_green/green-1": "MAINT"})
    assert haproxy.request(haproxy.preview_port) == 503  # the preview frontend routes to green


def test_maintenance_survives_a_restart(haproxy):
    put_green_in_maintenance(haproxy)
    failed, result = save(haproxy)
    assert not failed, result
    assert result["changed"] is True
    assert result["servers"] == 2
    saved = (haproxy.dir / "server-state").read_text()
    assert saved.splitlines()[0] == "1"  # the format version HAProxy expects
    assert (admin_state(saved, "green-1"), admin_state(saved, "blue-1")) == ("1", "0")
    assert result["diff"] == {"before": "", "after": saved}
    assert not list(haproxy.dir.glob(".tmp-*"))  # atomic write left no temp file

    haproxy_fixture.restart(haproxy)
    haproxy.wait_status({"bg_blue/blue-1": "UP"})  # checks run, and green-1 stays out of them
    assert haproxy.server_status()["bg_green/green-1"] == "MAINT"
    assert haproxy.request(haproxy.preview_port) == 503
    assert haproxy.color_at(haproxy.live_port) == "blue"


def test_check_mode_writes_nothing_and_the_change_is_lost(haproxy):
    put_green_in_maintenance(haproxy)
    failed, result = save(haproxy, check_mode=True)
    assert not failed, result
    assert result["changed"] is True
    assert admin_state(result["diff"]["after"], "green-1") == "1"
    assert not (haproxy.dir / "server-state").exists()
    # without the file, a restart starts over from haproxy.cfg: green-1 is back in service
    haproxy_fixture.restart(haproxy)
    haproxy.wait_status({"bg_green/green-1": "UP", "bg_blue/blue-1": "UP"})
    assert haproxy.request(haproxy.preview_port) == 200


def test_saving_over_an_older_file_replaces_it(haproxy):
    save(haproxy)
    put_green_in_maintenance(haproxy)
    failed, result = save(haproxy)
    assert not failed and result["changed"]
    assert admin_state(result["diff"]["before"], "green-1") == "0"
    assert admin_state((haproxy.dir / "server-state").read_text(), "green-1") == "1"


def test_unreachable_haproxy_fails_naming_the_socket(tmp_path):
    failed, result = run_module(
        "bluegreen_server_state",
        {"socket": str(tmp_path / "missing.sock"), "path": str(tmp_path / "server-state")},
    )
    assert failed
    assert "cannot read server state" in result["msg"]
    assert "missing.sock" in result["msg"]
    assert not (tmp_path / "server-state").exists()
