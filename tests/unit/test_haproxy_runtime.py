"""plugins/module_utils/bluegreen_haproxy.py against a real HAProxy."""

from __future__ import annotations

import pytest
from ansible.module_utils.bluegreen_haproxy import HAProxyRuntime, HAProxyRuntimeError

from tests.unit import haproxy_fixture


@pytest.fixture
def haproxy(tmp_path):
    with haproxy_fixture.running(tmp_path) as lb:
        yield lb


def test_show_and_set_map_route_the_next_request(haproxy):
    runtime = HAProxyRuntime(haproxy.socket)
    assert runtime.show_map(haproxy.live_map) == {"live": "blue"}
    assert haproxy.color_at(haproxy.live_port) == "blue"
    assert haproxy.color_at(haproxy.preview_port) == "green"
    runtime.set_map(haproxy.live_map, "live", "green")
    assert runtime.show_map(haproxy.live_map) == {"live": "green"}
    assert haproxy.color_at(haproxy.live_port) == "green"
    assert haproxy.color_at(haproxy.preview_port) == "blue"


def test_show_stat_lists_backends_and_servers(haproxy):
    rows = HAProxyRuntime(haproxy.socket).show_stat()
    names = {(row["pxname"], row["svname"]) for row in rows}
    assert {("bg_blue", "BACKEND"), ("bg_blue", "blue-1"), ("bg_green", "green-1")} <= names
    assert all("hrsp_5xx" in row for row in rows)


def test_servers_state_is_loadable_format(haproxy):
    state = HAProxyRuntime(haproxy.socket).show_servers_state()
    assert state.splitlines()[0] == "1"
    assert any(" blue-1 " in line for line in state.splitlines())


@pytest.mark.parametrize("bad", ["live\nshow stat", "live; shutdown", ""])
def test_command_injection_is_refused(haproxy, bad):
    with pytest.raises(HAProxyRuntimeError, match="refusing"):
        HAProxyRuntime(haproxy.socket).set_map(haproxy.live_map, bad, "green")
    assert HAProxyRuntime(haproxy.socket).show_map(haproxy.live_map) == {"live": "blue"}


def test_unknown_map_and_missing_socket_are_clear_errors(haproxy, tmp_path):
    with pytest.raises(HAProxyRuntimeError, match="no map"):
        HAProxyRuntime(haproxy.socket).show_map(str(tmp_path / "nope.map"))
    with pytest.raises(HAProxyRuntimeError, match=r"nope\.sock"):
        HAProxyRuntime(str(tmp_path / "nope.sock")).execute("show", "info")
