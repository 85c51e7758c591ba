"""The production example inventory, rendered for real: ansible-playbook runs the roles' own task
files (haproxy install/config, logplatform dirs/config) with inventories/production.example into a
temporary root on this machine, every host made local by an extra inventory. Then the files are read,
and the node is started from them as its unprivileged service user (needs root: chown, setuid)."""

from __future__ import annotations

import json
import os
import pwd
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from bluegreen.progress import EventFollower
from tests import lab_namespace
from tests.conftest import LAB, REPO, VENV_BIN, PlaybookRun, run_playbook
from tests.integration.lab import fill_controller_caches
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
        (root / "node" / "current").symlink_to(root / "node" / "releases" / VERSION)
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
            "logplatform_user": SERVICE_USER,
            "logplatform_group": SERVICE_GROUP,
            # nothing on this machine is created or changed: the users exist
            "logplatform_create_user": False,
            "haproxy_create_user": False,
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


SYSTEMD_ANALYZE = "/usr/bin/systemd-analyze"


@pytest.mark.skipif(
    not Path(SYSTEMD_ANALYZE).exists(), reason="systemd-analyze (Debian's systemd) is missing"
)
def test_the_systemd_unit_passes_systemd_analyze_verify(layout: Layout) -> None:
    """The rendered unit as systemd reads it: every directive known and parsed (a bad value is only a
    warning, exit 0: the output must say nothing of it), ExecStart and the user as the node needs."""
    unit = layout.root / "logplatform.service"
    text = unit.read_text()
    verify = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True, text=True, check=False
    )
    said = [line for line in (verify.stdout + verify.stderr).splitlines() if "logplatform" in line]
    # the only remark: this test's stand-in service user is `nobody`, which systemd calls unsafe
    said = [line for line in said if f"Special user {SERVICE_USER} configured" not in line]
    assert verify.returncode == 0 and not said, verify.stdout + verify.stderr
    assert f"User={SERVICE_USER}\nGroup={SERVICE_GROUP}\n" in text
    config = layout.node / "etc" / "logplatform.toml"
    assert f"ExecStart={layout.node}/current/venv/bin/logplatform --config {config}\n" in text


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


# --- The lab hosts' layout: supervisor as root stands in for systemd, services run as their own users ---
# One host (the lb and a blue node) in namespaces of its own: a private network, PID space and mounts,
# with /etc, /opt and /var overlays over the machine's (upper dirs in a temporary root), so the roles
# create their system users and write the SSH lab's paths (supervisord at the supervisor role's default,
# /opt/bluegreen/supervisor) there, and nothing reaches the machine. The SSH lab's group_vars with its one
# host made local: the real site.yml runs as root (what `become` gives the controller's tasks on a lab
# host), then what a deploy's provision does, status.yml, and teardown.yml.

HOST = "host-1"
# what the SSH lab's inventory says of its lbs and nodes (the paths the roles write, the node's port)
LAB_VARS = {
    group: yaml.safe_load((REPO / "inventories" / "lab" / "group_vars" / f"{group}.yml").read_text())
    for group in ("lb", "logplatform")
}
Completed = subprocess.CompletedProcess[str]
PROGRAMS = ("supervisord", "logplatform", "haproxy")
# pid 1 of the host: reaps every orphan (a daemon's exited children, supervisord after its shutdown)
REAPER = """
import os, time
while True:
    try:
        os.wait()
    except ChildProcessError:
        time.sleep(0.2)
"""
OVERLAID = ("etc", "opt", "var")

needs_namespaces = pytest.mark.skipif(
    not (lab_namespace.available() and shutil.which("nsenter")),
    reason="a host of its own needs root and network, PID and mount namespaces (unshare, nsenter)",
)


@dataclass
class Host:
    """A host of its own: pid of the process that holds its namespaces (pid 1 inside)."""

    root: Path
    pid: int

    def run(self, *argv: str, env: dict[str, str] | None = None, timeout: float = 60) -> Completed:
        return subprocess.run(
            ["nsenter", "-t", str(self.pid), "-m", "-n", "-p", "--", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
            check=False,
        )

    def playbook(self, playbook: str, *args: str) -> PlaybookRun:
        """ansible-playbook from the repository on this host, judged by its events, as run_playbook does."""
        events = self.root / "events" / f"{Path(playbook).stem}-{time.monotonic_ns()}.jsonl"
        started = time.monotonic()
        env = {"ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", "BLUEGREEN_EVENTS_FILE": str(events)}
        argv = [str(VENV_BIN / "ansible-playbook"), "-i", str(self.root / "inventory"), playbook, *args]
        done = subprocess.run(
            ["nsenter", "-t", str(self.pid), "-m", "-n", "-p", f"--wd={REPO}", "--", *argv],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, **env},
            check=False,
        )
        return PlaybookRun(
            done.returncode, time.monotonic() - started, list(EventFollower(events).new()), None, done.stdout
        )

    def processes(self) -> list[dict[str, str]]:
        """`ps` on the host: user, pid, ppid and whole command line (-ww: not cut at COLUMNS, which
        pytest-xdist sets to 80) of every process, and `program`: which of
        supervisord, logplatform and haproxy it runs (the first two run as `venv/bin/python <script>`)."""
        ps = self.run("ps", "-ww", "-eo", "user:32=,pid=,ppid=,args=")
        assert ps.returncode == 0, ps.stderr
        found = []
        for line in ps.stdout.splitlines():
            user, pid, ppid, args = line.split(None, 3)
            names = [Path(word).name for word in args.split()[:2]]
            program = next((name for name in names if name in PROGRAMS), "")
            found.append({"user": user, "pid": pid, "ppid": ppid, "args": args, "program": program})
        return found

    def stat(self, path: str) -> tuple[str, str, int]:
        """Owner, group and mode of a path on the host."""
        out = self.run("stat", "-c", "%U %G %a", path)
        assert out.returncode == 0, out.stderr
        user, group, mode = out.stdout.split()
        return user, group, int(mode, 8)


@pytest.fixture(scope="module")
def host() -> Iterator[Host]:
    # the release and supervisor's environment, built outside the host (pip needs the network)
    fill_controller_caches()
    root = Path(tempfile.mkdtemp(prefix="bluegreen-host-"))
    root.chmod(0o755)
    overlays = "; ".join(
        f"mkdir -p {root}/fs/{d}/upper {root}/fs/{d}/work && mount -t overlay overlay -o "
        f"lowerdir=/{d},upperdir={root}/fs/{d}/upper,workdir={root}/fs/{d}/work /{d}"
        for d in OVERLAID
    )
    ready = root / "ready"
    holder = subprocess.Popen(
        [
            "unshare",
            "--mount",
            "--net",
            "--pid",
            "--fork",
            "--mount-proc",
            "--kill-child",
            "--",
            "bash",
            "-ec",
            f"{overlays}; ip link set lo up; touch {ready}; exec {sys.executable} -c {shlex.quote(REAPER)}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert holder.poll() is None, holder.stderr.read().decode() if holder.stderr else ""
            assert time.monotonic() < deadline, "the host's namespaces did not come up"
            time.sleep(0.05)
        (child,) = Path(f"/proc/{holder.pid}/task/{holder.pid}/children").read_text().split()
        # the SSH lab's inventory (its group_vars: the production layout under supervisor), its one host
        # made local: no SSH, no become (this is root already); the controller's stores are the checkout's
        inventory_dir = root / "inventory"
        inventory_dir.mkdir()
        (inventory_dir / "group_vars").symlink_to(REPO / "inventories" / "lab" / "group_vars")
        here = {
            "ansible_connection": "local",
            "ansible_become": False,
            "ansible_python_interpreter": str(VENV_BIN / "python"),
            "ansible_host": "127.0.0.1",
            "bluegreen_lab_dir": str(LAB),
            # HAProxy is the machine's (/usr is shared, as on a lab host)
            "haproxy_install_package": False,
        }
        inventory = {
            "all": {
                "hosts": {HOST: here},
                "children": {
                    "lb": {"hosts": {HOST: None}},
                    "logplatform": {"children": {"blue": {"hosts": {HOST: None}}, "green": {"hosts": {}}}},
                },
            }
        }
        (inventory_dir / "hosts.yml").write_text(json.dumps(inventory))
        yield Host(root, int(child))
    finally:
        holder.kill()  # --kill-child: the host's pid 1, and so every process of the host, dies with it
        holder.wait()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def supervised(host: Host) -> Iterator[dict[str, PlaybookRun]]:
    """site.yml twice, then a deploy's provision of the node (a play without the supervisor role)."""
    runs = {"site": host.playbook("playbooks/site.yml")}
    assert runs["site"].returncode == 0, runs["site"].failure_text() or runs["site"].tail(6000)
    runs["site_again"] = host.playbook("playbooks/site.yml")
    runs["provision"] = host.playbook("tests/unit/playbooks/service_users.yml")
    yield runs


@needs_root
@needs_namespaces
def test_a_deploy_finds_the_supervisord_that_site_yml_started(supervised: dict[str, PlaybookRun]) -> None:
    """supervisor_root has one home (the supervisor role): a play without that role (a deploy's provision,
    retire, teardown) uses the same directory as site.yml, not <logplatform_root>/supervisor."""
    provision = supervised["provision"]
    assert provision.returncode == 0, provision.failure_text() or provision.tail(6000)


@needs_root
@needs_namespaces
def test_a_second_site_run_changes_nothing_under_service_users(supervised: dict[str, PlaybookRun]) -> None:
    again = supervised["site_again"]
    assert again.returncode == 0, again.failure_text() or again.tail(4000)
    assert again.stats[HOST]["changed"] == 0, again.stats


@needs_root
@needs_namespaces
def test_services_run_as_their_own_users_under_a_root_supervisord(host: Host, supervised: dict) -> None:
    processes = host.processes()
    (supervisord,) = [p for p in processes if p["program"] == "supervisord"]
    assert supervisord["user"] == "root", processes
    (node,) = [p for p in processes if p["program"] == "logplatform"]
    assert node["user"] == "logplatform", processes
    haproxy = [p for p in processes if p["program"] == "haproxy"]
    (master,) = [p for p in haproxy if p["ppid"] == supervisord["pid"]]
    workers = [p for p in haproxy if p["ppid"] == master["pid"]]
    # the master (supervisord's child, root) binds, reloads and owns the runtime socket; workers drop
    assert master["user"] == "root", haproxy
    assert workers and {w["user"] for w in workers} == {"haproxy"}, haproxy


@needs_root
@needs_namespaces
def test_every_directory_a_service_writes_belongs_to_its_user(host: Host, supervised: dict) -> None:
    node = LAB_VARS["logplatform"]["logplatform_root"]
    for name in ("sink", "shadow", "log"):
        assert host.stat(f"{node}/{name}") == ("logplatform", "logplatform", 0o750), name
    assert host.stat(f"{node}/etc/logplatform.toml") == ("root", "logplatform", 0o640)
    # the runtime socket: the master's (root), 0600; the controller's tasks reach it with become
    assert host.stat(f"{LAB_VARS['lb']['haproxy_root']}/admin.sock") == ("root", "root", 0o600)


@needs_root
@needs_namespaces
def test_entries_reach_the_sinks_through_the_lb_and_status_reads_the_runtime_api(
    host: Host, supervised: dict
) -> None:
    # the lb routes to the node once its health checks see it ready again (after the provision's restart)
    post = (
        "import json, sys, time, urllib.error, urllib.request\n"
        "batch = json.dumps([{'ts': 1764000000, 'level': 'info', 'service': 't', 'message': 'm'}]).encode()\n"
        "deadline = time.monotonic() + 60\n"
        "for url, headers in ((sys.argv[1], {}), (sys.argv[2], {'X-Bluegreen-Shadow': '1'})):\n"
        "    headers['Content-Type'] = 'application/json'\n"
        "    while True:\n"
        "        try:\n"
        "            req = urllib.request.Request(url, data=batch, headers=headers)\n"
        "            if urllib.request.urlopen(req, timeout=10).status == 200:\n"
        "                break\n"
        "        except urllib.error.HTTPError as err:\n"
        "            if err.code != 503 or time.monotonic() > deadline:\n"
        "                raise\n"
        "        time.sleep(0.2)\n"
    )
    sent = host.run(
        str(VENV_BIN / "python"),
        "-c",
        post,
        "http://127.0.0.1:8080/v1/logs",
        f"http://127.0.0.1:{LAB_VARS['logplatform']['logplatform_listen_port']}/v1/logs",
    )
    assert sent.returncode == 0, sent.stderr
    for name in ("sink", "shadow"):
        where = f"{LAB_VARS['logplatform']['logplatform_root']}/{name}"
        listing = host.run("find", where, "-name", "*.ndjson", "-user", "logplatform")
        assert listing.stdout.strip(), (name, listing.stderr)
    status = host.playbook("playbooks/status.yml")
    assert status.returncode == 0, status.failure_text() or status.tail(4000)
    (shown,) = status.of_type("status")
    assert shown["status"]["live"] == "blue", shown


@needs_root
@needs_namespaces
def test_teardown_stops_every_service(host: Host, supervised: dict) -> None:
    teardown = host.playbook("playbooks/teardown.yml")
    assert teardown.returncode == 0, teardown.failure_text() or teardown.tail(4000)
    left = [p for p in host.processes() if p["program"]]
    assert not left, left


@needs_root
@needs_namespaces
def test_teardown_after_a_site_run_that_ended_before_the_programs(host: Host, supervised: dict) -> None:
    """A site.yml that failed after starting supervisord (here: the release's interpreter is missing)
    leaves supervisord with no logplatform or haproxy program; teardown.yml still stops everything."""
    purge = host.playbook("playbooks/teardown.yml", "-e", "bluegreen_purge=true")
    assert purge.returncode == 0, purge.failure_text() or purge.tail(4000)
    failed = host.playbook("playbooks/site.yml", "-e", "logplatform_python=/nonexistent/python3")
    assert failed.returncode != 0, failed.tail(4000)
    assert "/nonexistent/python3" in (failed.failure_text() or ""), failed.tail(4000)
    assert [p["program"] for p in host.processes() if p["program"]] == ["supervisord"]
    teardown = host.playbook("playbooks/teardown.yml")
    assert teardown.returncode == 0, teardown.failure_text() or teardown.tail(4000)
    assert not [p for p in host.processes() if p["program"]]
