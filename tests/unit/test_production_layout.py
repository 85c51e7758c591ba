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

from tests.conftest import REPO, VENV_BIN

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

    @property
    def haproxy_cfg(self) -> str:
        return (self.root / "lb" / "haproxy.cfg").read_text()

    @property
    def node(self) -> Path:
        return self.root / "node"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
        overlay = {
            "all": {
                "hosts": {
                    host: {**local, "ansible_host": f"127.0.0.{n}"} for n, host in enumerate(hosts(), 2)
                }
            }
        }
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
            "logplatform_root": str(root / "node"),
            "logplatform_version": VERSION,
            "logplatform_listen_port": free_port(),
            "logplatform_systemd_user": SERVICE_USER,
            "logplatform_systemd_group": SERVICE_GROUP,
        }
        proc = subprocess.run(
            [
                *(str(VENV_BIN / "ansible-playbook"), "tests/unit/playbooks/production_layout.yml"),
                *("-i", "inventories/production.example", "-i", str(root / "local.yml")),
                *("-e", json.dumps(extra)),
            ],
            cwd=REPO,
            env={**os.environ, "ANSIBLE_NOCOLOR": "1"},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, output[-6000:]
        yield Layout(root, output)
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
