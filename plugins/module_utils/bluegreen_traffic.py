"""The traffic switch of one lb: the live-color map entry in HAProxy, its map file and state.json.

Shared by bluegreen_switch (the switch unit: gate, change, probe) and bluegreen_watch (which puts
traffic back at once when the new color fails). The map file and state.json are written first, so a
reload or restart keeps the color; then one `set map`, which HAProxy applies to the next request.
"""

from __future__ import annotations

import datetime as dt
import json
import time

from ansible.module_utils.bluegreen_checks import connection, get_json, short
from ansible.module_utils.bluegreen_files import atomic_write, read_text
from ansible.module_utils.bluegreen_haproxy import HAProxyRuntime, HAProxyRuntimeError
from ansible.module_utils.bluegreen_state import StateDir, now, other_color
from ansible.module_utils.bluegreen_stats import backend_name, summarize, unhealthy_servers

MAP_KEY = "live"


class SwitchRefused(Exception):
    """The gate refused the switch; nothing was changed."""


def map_file_color(path: str) -> str | None:
    for line in (read_text(path) or "").splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0] == MAP_KEY:
            return fields[1]
    return None


def write_map_file(path: str, color: str) -> None:
    atomic_write(path, f"{MAP_KEY} {color}\n")


def gate(runtime: HAProxyRuntime, color: str, version: str, timeout: float) -> dict:
    """Every server of the color UP in HAProxy and on the version, or SwitchRefused naming the first not."""
    backend = summarize(runtime.show_stat()).get(backend_name(color))
    if not backend or backend["servers_total"] == 0:
        raise SwitchRefused(f"{color} has no servers in HAProxy")
    down = unhealthy_servers(backend)
    if down:
        raise SwitchRefused(f"{color} is not up in HAProxy: {', '.join(down)}")
    seen = {}
    for name, server in sorted(backend["servers"].items()):
        try:
            running = get_json(f"http://{server['address']}/version", timeout).get("version")
        except Exception as exc:  # any failure to answer is a node that is not warm
            raise SwitchRefused(f"node {name} of {color} did not answer /version: {exc}") from exc
        if running != version:
            raise SwitchRefused(
                f"node {name} of {color} runs {running}, but state.json records {version} for {color}"
            )
        seen[name] = {"status": server["status"], "version": running, "address": server["address"]}
    return seen


def probe(
    url: str, entry_id: str, timeout: float, service: str = "bluegreen-probe", message: str = "switch probe"
) -> dict:
    """One new log entry through a frontend (the switch's probe, the canary): who answered it, and how."""
    entry = {
        "ts": now(),
        "level": "info",
        "service": service,
        "message": message,
        "id": entry_id,
    }
    started = time.perf_counter()
    conn, path = connection(url.rstrip("/") + "/v1/logs", timeout)
    try:
        conn.request("POST", path, body=json.dumps([entry]), headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        body = response.read()
    except OSError as exc:
        return {"status": None, "color": None, "node": None, "error": str(exc)}
    finally:
        conn.close()
    return {
        "status": response.status,
        "color": response.getheader("X-Bluegreen-Color"),
        "node": response.getheader("X-Bluegreen-Node"),
        "ms": round((time.perf_counter() - started) * 1000, 3),
        "body": short(body),
    }


def describe_probe(answer: dict) -> str:
    if answer["status"] is None:
        return f"failed: {answer['error']}"
    return f"answered {answer['status']} by {answer['color'] or 'no color'} ({answer['node'] or '-'})"


class Switch:
    """The map file, state.json and HAProxy's entry of one lb, changed together."""

    def __init__(
        self, runtime: HAProxyRuntime, map_path: str, state_dir: str | None, warm_seconds: int = 3600
    ) -> None:
        self.runtime = runtime
        self.map = map_path
        self.store = StateDir(state_dir) if state_dir else None
        self.warm_seconds = warm_seconds

    def files(self, color: str, state: dict | None, warm: bool) -> None:
        """Durable first: a reload or restart of HAProxy from here on comes back with this color."""
        write_map_file(self.map, color)
        if self.store and state is not None:
            if warm:
                warm_until = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=self.warm_seconds)
                state = {**state, "live": color, "previous": other_color(color)}
                state["warm_until"] = warm_until.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            self.store.write(state)

    def live(self) -> str | None:
        """The live color as HAProxy holds it now (HAProxyRuntimeError when it cannot say)."""
        return self.runtime.show_map(self.map).get(MAP_KEY)

    def runtime_set(self, color: str) -> str | None:
        """The switch itself: one map entry, applied by HAProxy to the next request; an error or None."""
        try:
            self.runtime.set_map(self.map, MAP_KEY, color)
            confirmed = self.runtime.show_map(self.map).get(MAP_KEY)
        except HAProxyRuntimeError as exc:
            return str(exc)
        return None if confirmed == color else f"HAProxy reports {confirmed!r} after setting {color!r}"
