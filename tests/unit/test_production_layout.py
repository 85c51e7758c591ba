"""The production example inventory, rendered for real: ansible-playbook runs the roles' own task
files (haproxy install/config, logplatform dirs/config) with inventories/production.example into a
temporary root on this machine, every host made local by an extra inventory. Then the files are read,
and the node is started from them as its unprivileged service user (needs root: chown, setuid)."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, VENV_BIN, run_playbook
from tests.unit.haproxy_fixture import free_port, process_uids

NODE = "logs-blue-1.example.net"
# An unprivileged user and group that exist on any Debian: the node's service user here.
SERVICE_USER, SERVICE_GROUP = "nobody", "nogroup"
VERSION = "1.0.0"

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="chown to a service user and running as it need root (and util-linux's setpriv)",
)


@dataclass
class Layout:
    root: Path
    output: str
    addresses: dict[str, str]  # inventory host -> its ansible_host (a loopback address each)

    @property
    def haproxy_cfg(self) -> str:
        return (self.root / "lb" / "haproxy.cfg").read_text()

    @property
    def node(self) -> Path:
        return self.root / "node"


def hosts() -> list[str]:
    inventory = yaml.safe_load((REPO / "inventories" / "production.example" / "hosts.yml").read_text())
    found: list[str] = []

    def walk(group: dict) -> None:
        found.extend((group or {}).get("hosts", {}) or {})
        for child in ((group or {}).get("children") or {}).values():
            walk(child)

    walk(inventory["all"])
    return found


@pytest.fixture(scope="module")
def layout() -> Iterator[Layout]:
    # not pytest's tmp_path: its folders are 0700, which the service user could not enter
    root = Path(tempfile.mkdtemp(prefix="bluegreen-production-"))
    root.chmod(0o755)
    try:
        python = str(VENV_BIN / "python")
        local = {
            "ansible_connection": "local",
            "ansible_become": False,
            "ansible_python_interpreter": python,
            # the address the lb reaches each node at: a loopback address per node here
            "ansible_host": "127.0.0.1",
        }
        addresses = {host: f"127.0.0.{n}" for n, host in enumerate(hosts(), 2)}
        overlay = {"all": {"hosts": {host: {**local, "ansible_host": addresses[host]} for host in addresses}}}
        (root / "local.yml").write_text(json.dumps(overlay))
        # the release the node would run: this venv's logplatform (config.yml validates with it)
        venv = root / "node" / "releases" / VERSION / "venv" / "bin"
        venv.mkdir(parents=True)
        (venv / "logplatform").symlink_to(VENV_BIN / "logplatform")
        extra = {
            "layout_root": str(root),
            "layout_node": NODE,
            "haproxy_root": str(root / "lb"),
            "haproxy_install_package": False,
            # free ports, so the rendered HAProxy can run beside the lab (:8080, :8081, :8404)
            "haproxy_live_port": free_port(),
            "haproxy_preview_port": free_port(),
            "haproxy_stats_port": free_port(),
            "logplatform_root": str(root / "node"),
            "logplatform_version": VERSION,
            # no release store here: dirs.yml's query finds nothing installed (it only makes the dirs)
            "logplatform_manifest": {},
            "logplatform_listen_port": free_port(),
            "logplatform_systemd_user": SERVICE_USER,
            "logplatform_systemd_group": SERVICE_GROUP,
        }
        run = run_playbook(
            "tests/unit/playbooks/production_layout.yml",
            *("-i", "inventories/production.example", "-i", str(root / "local.yml")),
            *("-e", json.dumps(extra)),
            timeout=300,
        )
        assert run.returncode == 0, run.tail(6000)
        yield Layout(root, run.output, addresses)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def owner(path: Path) -> tuple[str, int]:
    info = path.stat()
    return pwd.getpwuid(info.st_uid).pw_name, stat.S_IMODE(info.st_mode)


@needs_root
def test_every_directory_the_node_writes_belongs_to_its_service_user(layout: Layout) -> None:
    config = (layout.node / "etc" / "logplatform.toml").read_text()
    written = ["sink", "shadow", "log"]
    assert f'sink_dir = "{layout.node / "sink"}"' in config
    assert f'shadow_sink_dir = "{layout.node / "shadow"}"' in config
    for name in written:
        assert owner(layout.node / name) == (SERVICE_USER, 0o750), name


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@needs_root
def test_the_node_runs_as_its_service_user_from_the_rendered_layout(layout: Layout) -> None:
    """What systemd does with the rendered unit (User=): the node starts, writes its sink and its
    shadow sink as that unprivileged user."""
    config_path = layout.node / "etc" / "logplatform.toml"
    config = tomllib.loads(config_path.read_text())
    host, port = config["listen_host"], config["listen_port"]
    log = (layout.root / "node.log").open("wb")
    # setpriv (util-linux) as systemd's User=/Group= would: no supplementary groups, no capabilities
    drop = ["setpriv", "--reuid", SERVICE_USER, "--regid", SERVICE_GROUP, "--clear-groups"]
    proc = subprocess.Popen(
        [*drop, str(VENV_BIN / "logplatform"), "--config", str(config_path)],
        cwd=layout.node,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://{host}:{port}"
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, (layout.root / "node.log").read_text()
            try:
                if get(f"{url}/health/ready")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, (layout.root / "node.log").read_text()
            time.sleep(0.1)
        batch = json.dumps([{"ts": 1764000000, "level": "info", "service": "t", "message": "m"}]).encode()
        for headers in ({}, {"X-Bluegreen-Shadow": "1"}):
            request = urllib.request.Request(
                f"{url}/v1/logs", data=batch, headers={"Content-Type": "application/json", **headers}
            )
            with urllib.request.urlopen(request, timeout=10) as resp:
                assert resp.status == 200
        for name in ("sink", "shadow"):
            (written,) = (layout.node / name).glob("*.ndjson")
            assert owner(written)[0] == SERVICE_USER
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()


def section(config: str, name: str) -> list[str]:
    """The stripped lines of one section (``global``, ``frontend live``, ...) of haproxy.cfg."""
    lines = config.splitlines()
    start = lines.index(name)
    body = []
    for line in lines[start + 1 :]:
        if line and not line.startswith(" "):
            break
        if line.strip() and not line.strip().startswith("#"):
            body.append(line.strip())
    return body


def test_production_haproxy_config_drops_to_the_haproxy_user(layout: Layout) -> None:
    global_section = section(layout.haproxy_cfg, "global")
    assert "user haproxy" in global_section
    assert "group haproxy" in global_section
    (runtime,) = [line for line in global_section if line.startswith("stats socket")]
    # the master keeps running as root (it binds, reloads, owns the socket): root-only by default
    assert " mode 600 " in runtime, runtime


def test_production_preview_and_nodes_listen_on_internal_addresses(layout: Layout) -> None:
    config = layout.haproxy_cfg
    (live,) = [line for line in section(config, "frontend live") if line.startswith("bind ")]
    (preview,) = [line for line in section(config, "frontend preview") if line.startswith("bind ")]
    assert live.startswith("bind 0.0.0.0:")  # the front door, for log shippers
    assert preview.startswith("bind 127.0.0.1:")  # validation runs on the lb itself
    node = tomllib.loads((layout.node / "etc" / "logplatform.toml").read_text())
    # the address the lb uses to reach this node (its ansible_host here), not every address
    assert node["listen_host"] == layout.addresses[NODE]
    assert f"server {NODE} {layout.addresses[NODE]}:{node['listen_port']} check" in config


@needs_root
def test_production_haproxy_workers_run_as_haproxy_and_the_runtime_api_answers(layout: Layout) -> None:
    """The rendered config run as systemd's unit runs it (root, master-worker): the master stays root,
    every worker is the haproxy user, and the runtime socket answers the controller (root)."""
    cfg = layout.root / "lb" / "haproxy.cfg"
    admin = layout.root / "lb" / "admin.sock"
    proc = subprocess.Popen(
        [shutil.which("haproxy") or "/usr/sbin/haproxy", "-W", "-db", "-f", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while not (admin.exists() and len(process_uids(proc.pid)) > 1):
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "haproxy did not start"
            time.sleep(0.1)
        uids = process_uids(proc.pid)
        assert uids.pop(proc.pid) == 0  # the master
        assert uids  # its workers
        assert set(uids.values()) == {pwd.getpwnam("haproxy").pw_uid}
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(admin))
            sock.sendall(b"show info\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert b"Name: HAProxy" in answer
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
