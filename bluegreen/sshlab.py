"""The SSH lab: load balancers and blue and green nodes as real hosts reached over SSH, on this machine.

    bluegreen lab up --lbs 2 --nodes 2      (make lab-up LB=2 N=2)
    bluegreen lab down                      (make lab-down)
    bluegreen lab status
    bluegreen lab exec HOST -- COMMAND...   (inside a host's namespaces, as root: for tests and debugging)

Each host is a set of Linux namespaces (network, PID, mount, UTS, IPC) held by a PID 1 of its own
(bluegreen/sshlab_init.py), plugged into the bridge `bglab0` (the machine is 10.87.0.1/24 on it):
lb-K at 10.87.0.(10+K), blue-I at 10.87.0.(100+I), green-I at 10.87.0.(200+I). Each has its own sshd
(key auth only, the user `deploy` with passwordless sudo), its own /etc, /opt, /var, /home, /root
(overlayfs; the upper layers in `<root>/hosts/<name>/upper/`, so every node's sink is a folder named
`sink` under `.lab/`, where `bluegreen verify` finds it), its own /run and /tmp, no default route and a
resolver that fails at once. The checkout is hidden from the hosts: only SSH brings them anything.

`up` writes the inventory (default inventories/lab/hosts.yml; its group_vars are inventories/lab's) and
`<root>/lab.json` (the PIDs it started); `down` ends the SSH control masters, kills each host's holder
(the kernel then kills every process of the host), deletes each veth and the bridge, by what lab.json
recorded, and removes the hosts' folders. Both are idempotent. Needs root.

Exit status: 0 done; 1 the lab could not be brought up or down (the reason is printed); 2 bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

CHECKOUT = Path(__file__).resolve().parent.parent
DEFAULT_ROOT = CHECKOUT / ".lab" / "sshlab"
DEFAULT_INVENTORY = CHECKOUT / "inventories" / "lab" / "hosts.yml"
LAB_GROUP_VARS = CHECKOUT / "inventories" / "lab" / "group_vars"
INIT = Path(__file__).resolve().parent / "sshlab_init.py"

BRIDGE = "bglab0"
NETWORK = ipaddress.ip_network("10.87.0.0/24")
CONTROLLER_ADDRESS = NETWORK.network_address + 1
FIRST_ADDRESS = {"lb": 10, "blue": 100, "green": 200}
MAX_LBS, MAX_NODES = 9, 54  # keeps every address in the /24 and in its own range
USER = "deploy"
TOOLS = (
    "ip",
    "unshare",
    "nsenter",
    "mount",
    "ssh",
    "ssh-keygen",
    "/usr/sbin/sshd",
    "sudo",
    "/usr/bin/python3",
)
# top-level folders a host needs from the machine (the system); any other one holding the checkout is hidden
SYSTEM_TREES = {
    "usr",
    "bin",
    "sbin",
    "lib",
    "lib32",
    "lib64",
    "etc",
    "opt",
    "var",
    "home",
    "root",
    "tmp",
    "run",
}
SSH_READY_SECONDS = 20.0
# a UNIX socket path is at most 107 bytes; ssh's ControlPath %C adds 40 characters and a temp suffix
CONTROL_PATH_MAX = 60


class LabError(Exception):
    """The lab cannot be brought up or down; the message says why."""


@dataclass
class Host:
    name: str
    group: str  # lb | blue | green
    address: str
    holder_pid: int = 0  # the `unshare` process: it holds the namespaces; killing it kills PID 1
    init_pid: int = 0  # PID 1 of the host, as the machine sees it (nsenter's target)

    @property
    def interface(self) -> str:
        return f"bgl-{self.name}"  # the machine's end of the host's veth (at most 15 characters)


def plan(lbs: int, nodes: int) -> list[Host]:
    if not 0 <= lbs <= MAX_LBS or not 0 <= nodes <= MAX_NODES or lbs + nodes == 0:
        raise ValueError(
            f"--lbs must be 0..{MAX_LBS} and --nodes 0..{MAX_NODES}, not both 0 (got {lbs}, {nodes})"
        )
    hosts = [Host(f"lb-{k}", "lb", "") for k in range(1, lbs + 1)]
    hosts += [Host(f"{color}-{i}", color, "") for color in ("blue", "green") for i in range(1, nodes + 1)]
    for host in hosts:
        number = int(host.name.rsplit("-", 1)[1])
        host.address = str(NETWORK.network_address + FIRST_ADDRESS[host.group] + number)
    return hosts


def call(*command: str, input_text: str | None = None) -> str:
    done = subprocess.run(command, input=input_text, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise LabError(f"{' '.join(command)}: {done.stderr.strip() or f'exit {done.returncode}'}")
    return done.stdout


class Lab:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.record = self.root / "lab.json"
        self.ssh_dir = self.root / "ssh"
        self.key = self.ssh_dir / "id_ed25519"
        self.known_hosts = self.ssh_dir / "known_hosts"
        self.control_dir = self.ssh_dir / "cp"

    # ---- the record -------------------------------------------------------------------------------
    def recorded(self) -> tuple[list[Host], dict]:
        if not self.record.is_file():
            return [], {}
        data = json.loads(self.record.read_text())
        return [Host(**host) for host in data["hosts"]], data

    def _write_record(self, hosts: list[Host], inventory: Path) -> None:
        data = {"bridge": BRIDGE, "inventory": str(inventory), "hosts": [asdict(host) for host in hosts]}
        temp = self.record.with_suffix(".tmp")
        temp.write_text(json.dumps(data, indent=2) + "\n")
        temp.replace(self.record)

    # ---- up ----------------------------------------------------------------------------------------
    def up(self, lbs: int, nodes: int, inventory: Path) -> list[Host]:
        hosts = plan(lbs, nodes)
        before, _ = self.recorded()
        if before:
            if all(alive(host) for host in before):
                if [h.name for h in before] == [h.name for h in hosts]:
                    self.write_inventory(before, inventory)
                    return before
                raise LabError(
                    f"a lab of {len(before)} hosts is up at {self.root}; run `bluegreen lab down` first"
                )
            self.down()  # what is left of a lab that died (the machine rebooted, a holder was killed)
        check_machine()
        owner = bridge_owner()
        if owner is not None:
            raise LabError(
                f"bridge {BRIDGE} exists already, made by {owner or 'someone else'}: bring it down first"
            )
        if len(str(self.control_dir)) > CONTROL_PATH_MAX:
            raise LabError(
                f"lab root {self.root} is too long for ssh's control sockets: choose a shorter --root"
            )
        self._prepare_keys()
        call("ip", "link", "add", BRIDGE, "type", "bridge")
        call("ip", "link", "set", BRIDGE, "alias", str(self.root))
        self._write_record(hosts, inventory)  # from here on, `down` can undo what exists
        call("ip", "addr", "add", f"{CONTROLLER_ADDRESS}/{NETWORK.prefixlen}", "dev", BRIDGE)
        call("ip", "link", "set", BRIDGE, "up")
        try:
            started = [self._start(host, hosts) for host in hosts]
            self._write_record(hosts, inventory)
            for host, holder in zip(hosts, started, strict=True):
                self._plug(host, holder)
            self._write_record(hosts, inventory)
            wait_for_ssh(hosts)
        except BaseException:
            self.down()
            raise
        self.write_known_hosts(hosts)
        self.write_inventory(hosts, inventory)
        return hosts

    def _prepare_keys(self) -> None:
        self.ssh_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.control_dir.mkdir(exist_ok=True, mode=0o700)
        if not self.key.is_file():
            call("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bluegreen-lab", "-f", str(self.key))

    def host_dir(self, host: Host) -> Path:
        return self.root / "hosts" / host.name

    def _start(self, host: Host, hosts: list[Host]) -> subprocess.Popen:
        folder = self.host_dir(host)
        shutil.rmtree(folder, ignore_errors=True)
        for tree in ("etc", "opt", "var", "home", "root"):
            (folder / "upper" / tree).mkdir(parents=True)
            (folder / "work" / tree).mkdir(parents=True)
        self._write_host_files(host, hosts, folder / "upper")
        config = folder / "init.json"
        config.write_text(json.dumps({"name": host.name, "host_dir": str(folder), "hide": hidden_trees()}))
        log = (folder / "init.log").open("ab")
        holder = subprocess.Popen(
            ["unshare", "--net", "--pid", "--mount", "--uts", "--ipc", "--fork", "--kill-child",
             "--mount-proc", "/usr/bin/python3", "-I", str(INIT), str(config)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, start_new_session=True, text=True,
        )  # fmt: skip
        log.close()
        host.holder_pid = holder.pid
        return holder

    def _plug(self, host: Host, holder: subprocess.Popen) -> None:
        """Once PID 1 says ready (its namespaces exist): the veth into its network, address, then go."""
        assert holder.stdout is not None and holder.stdin is not None
        line = holder.stdout.readline().strip()
        if line != "ready":
            log = (self.host_dir(host) / "init.log").read_text(errors="replace")[-2000:]
            raise LabError(f"host {host.name} did not start: {log.strip() or 'no output'}")
        host.init_pid = child_of(holder.pid)
        pid = str(host.holder_pid)
        call("ip", "link", "add", host.interface, "type", "veth", "peer", "name", "eth0", "netns", pid)
        call("ip", "link", "set", host.interface, "master", BRIDGE, "up")
        inside = f"addr add {host.address}/{NETWORK.prefixlen} dev eth0\nlink set eth0 up\nlink set lo up\n"
        call("nsenter", "-t", pid, "-n", "ip", "-batch", "-", input_text=inside)
        holder.stdin.write("go\n")
        holder.stdin.close()
        holder.stdout.close()

    def _write_host_files(self, host: Host, hosts: list[Host], upper: Path) -> None:
        etc = upper / "etc"
        lines = ["127.0.0.1 localhost", f"127.0.1.1 {host.name}", f"{CONTROLLER_ADDRESS} controller"]
        lines += [f"{other.address} {other.name}" for other in hosts]
        (etc / "hosts").write_text("\n".join(lines) + "\n")
        (etc / "hostname").write_text(host.name + "\n")
        # nothing listens on the loopback's port 53: a lookup fails at once instead of waiting on a timeout
        (etc / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        uid = free_id()
        for name, line in (
            ("passwd", f"{USER}:x:{uid}:{uid}:bluegreen lab:/home/{USER}:/bin/bash"),
            ("group", f"{USER}:x:{uid}:"),
            ("shadow", f"{USER}:*:20000:0:99999:7:::"),
        ):
            original = Path("/etc", name).read_text()
            (etc / name).write_text(original + line + "\n")
            shutil.copymode(Path("/etc", name), etc / name)
        shutil.chown(etc / "shadow", group=Path("/etc/shadow").group())
        sudoers = etc / "sudoers.d"
        sudoers.mkdir()
        (sudoers / USER).write_text(f"{USER} ALL=(ALL:ALL) NOPASSWD: ALL\n")
        (sudoers / USER).chmod(0o440)
        ssh = etc / "ssh"
        ssh.mkdir()
        call(
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            host.name,
            "-f",
            str(ssh / "ssh_host_ed25519_key"),
        )
        (ssh / "sshd_config").write_text(sshd_config(host.address))
        home = upper / "home" / USER
        (home / ".ssh").mkdir(parents=True)
        (home / ".ssh" / "authorized_keys").write_text(self.key.with_suffix(".pub").read_text())
        for path in (home, home / ".ssh", home / ".ssh" / "authorized_keys"):
            os.chown(path, uid, uid)
            path.chmod(0o700 if path.is_dir() else 0o600)

    def write_known_hosts(self, hosts: list[Host]) -> None:
        lines = []
        for host in hosts:
            key = (self.host_dir(host) / "upper/etc/ssh/ssh_host_ed25519_key.pub").read_text().split()
            lines.append(f"{host.address} {key[0]} {key[1]}")
        self.known_hosts.write_text("\n".join(lines) + "\n")

    def write_inventory(self, hosts: list[Host], inventory: Path) -> None:
        def members(group: str) -> dict:
            return {h.name: {"ansible_host": h.address} for h in hosts if h.group == group} or None

        ssh_args = (
            f"-o UserKnownHostsFile={self.known_hosts} -o StrictHostKeyChecking=yes "
            "-o ServerAliveInterval=5 -o ServerAliveCountMax=3 -o ConnectTimeout=5"
        )
        document = {
            "all": {
                "vars": {
                    "bluegreen_lab_root": str(self.root),
                    "ansible_host_key_checking": True,
                    "ansible_ssh_private_key_file": str(self.key),
                    "ansible_ssh_common_args": ssh_args,
                    "ansible_control_path_dir": str(self.control_dir),
                },
                "children": {
                    "lb": {"hosts": members("lb")},
                    "logplatform": {
                        "children": {"blue": {"hosts": members("blue")}, "green": {"hosts": members("green")}}
                    },
                },
            }
        }
        inventory.parent.mkdir(parents=True, exist_ok=True)
        if inventory.parent.resolve() != LAB_GROUP_VARS.parent.resolve():
            link = inventory.parent / "group_vars"
            if not link.exists():
                link.symlink_to(LAB_GROUP_VARS)
        header = (
            f"# Written by `bluegreen lab up` for the SSH lab at {self.root}: do not edit (rewritten).\n"
            "# Its variables are in inventories/lab/group_vars/.\n---\n"
        )
        temp = inventory.with_suffix(".tmp")
        temp.write_text(header + yaml.safe_dump(document, sort_keys=False, default_flow_style=False))
        temp.replace(inventory)

    # ---- down --------------------------------------------------------------------------------------
    def down(self) -> list[Host]:
        hosts, _ = self.recorded()
        self.close_control_masters()
        for host in hosts:
            kill_host(host)
        for host in hosts:
            # the kernel removes a veth with its namespace, a moment after the last process: either way
            subprocess.run(["ip", "link", "del", host.interface], capture_output=True, check=False)
            if link_exists(host.interface):
                raise LabError(f"link {host.interface} of host {host.name} could not be deleted")
        owner = bridge_owner()
        if owner is not None and owner == str(self.root):
            call("ip", "link", "del", BRIDGE)
        shutil.rmtree(self.root / "hosts", ignore_errors=True)
        self.record.unlink(missing_ok=True)
        return hosts

    def close_control_masters(self) -> None:
        """The ssh ControlPersist masters Ansible left (ansible_control_path_dir): each told to exit."""
        if not self.control_dir.is_dir():
            return
        for control in self.control_dir.iterdir():
            subprocess.run(
                ["ssh", "-o", f"ControlPath={control}", "-O", "exit", "lab-host"],
                capture_output=True, timeout=10, check=False,
            )  # fmt: skip
            control.unlink(missing_ok=True)

    def find(self, name: str) -> Host:
        hosts, _ = self.recorded()
        for host in hosts:
            if host.name == name:
                return host
        raise LabError(
            f"no host {name!r} in the lab at {self.root} (hosts: {', '.join(h.name for h in hosts) or '-'})"
        )


def sshd_config(address: str) -> str:
    return f"""# bluegreen SSH lab host: its own sshd, key authentication only
ListenAddress {address}
Port 22
HostKey /etc/ssh/ssh_host_ed25519_key
PidFile /run/sshd.pid
# with PAM, a logout would end what the session started (supervisord must outlive Ansible's session)
UsePAM no
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
UseDNS no
MaxStartups 200
MaxSessions 200
Subsystem sftp /usr/lib/openssh/sftp-server
"""


def check_machine() -> None:
    reason = unavailable()
    if reason:
        raise LabError(reason)


def unavailable() -> str | None:
    """Why this machine cannot run the SSH lab (None: it can): root, the tools, and namespaces and an
    overlay mount the kernel (or a container around us) allows."""
    if os.geteuid() != 0:
        return "the SSH lab needs root (network namespaces, mounts, a bridge)"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing on this machine: {', '.join(missing)} (scripts/bootstrap.sh installs them)"
    probe = (
        "d=$(mktemp -d) && mkdir $d/u $d/w $d/m && mount -t overlay lab-probe "
        "-o lowerdir=/etc,upperdir=$d/u,workdir=$d/w $d/m; r=$?; umount $d/m 2>/dev/null; rm -rf $d; exit $r"
    )
    namespaces = ["unshare", "--net", "--pid", "--mount", "--uts", "--ipc", "--fork", "sh", "-c", probe]
    done = subprocess.run(namespaces, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return f"no namespaces or overlay mount here: {done.stderr.strip() or done.returncode}"
    return None


def free_id() -> int:
    """A uid (and gid) for `deploy` that no user of the machine has (hosts start from its /etc)."""
    taken = {entry.pw_uid for entry in pwd.getpwall()}
    return next(uid for uid in range(2000, 60000) if uid not in taken)


# a host's own, empty at first (sshlab_init.py's FRESH and tmpfs mounts): a checkout under them is not there
OWN_TREES = {"home", "root", "tmp", "run"}


def hidden_trees(checkout: Path = CHECKOUT) -> list[str]:
    """What a host must not see of the machine: the checkout (the controller's), and the top-level folder
    holding it unless the system needs that folder (as /work here). Nothing under a tree the host has
    its own of (a clone in /tmp: the host's /tmp is a fresh tmpfs, without the folder to mount over)."""
    top = checkout.parts[1]
    if top in OWN_TREES:
        return []
    return [str(checkout)] + ([str(Path("/", top))] if top not in SYSTEM_TREES else [])


def child_of(pid: int) -> int:
    for _ in range(200):
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            if children:
                return int(children[0])
        time.sleep(0.01)
    raise LabError(f"unshare (pid {pid}) has no child")


def alive(host: Host) -> bool:
    return is_holder(host.holder_pid)


def running(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped by its parent, does not)."""
    try:
        return bool(pid) and Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def is_holder(pid: int) -> bool:
    """Whether `pid` is still one of our holders (not a recycled PID of something else)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(pid) and command[0].endswith(b"unshare") and str(INIT).encode() in command


def kill_host(host: Host) -> None:
    for pid in (host.init_pid, host.holder_pid):
        ours = is_holder(pid) if pid == host.holder_pid else _is_init(pid)
        if pid and ours:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (is_holder(host.holder_pid) or _is_init(host.init_pid)):
        time.sleep(0.02)


def _is_init(pid: int) -> bool:
    try:
        return bool(pid) and str(INIT).encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def link_exists(name: str) -> bool:
    return (
        Path("/sys/class/net", name).exists()
        or subprocess.run(["ip", "link", "show", name], capture_output=True, check=False).returncode == 0
    )


def bridge_owner() -> str | None:
    """None when there is no bridge; else the root of the lab that made it (its alias), or ''."""
    done = subprocess.run(["ip", "-j", "link", "show", BRIDGE], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return None
    return json.loads(done.stdout)[0].get("ifalias", "")


def wait_for_ssh(hosts: list[Host]) -> None:
    deadline = time.monotonic() + SSH_READY_SECONDS
    waiting = list(hosts)
    while waiting:
        for host in list(waiting):
            with (
                contextlib.suppress(OSError),
                socket.create_connection((host.address, 22), timeout=1) as conn,
            ):
                conn.settimeout(2)
                if conn.recv(4).startswith(b"SSH-"):
                    waiting.remove(host)
        if waiting and time.monotonic() > deadline:
            raise LabError(
                f"sshd did not answer in {SSH_READY_SECONDS:.0f} s on: {', '.join(h.name for h in waiting)}"
            )
        if waiting:
            time.sleep(0.02)


@contextlib.contextmanager
def reporting() -> Iterator[None]:
    try:
        yield
    except LabError as error:
        print(f"bluegreen lab: {error}", file=sys.stderr)
        raise SystemExit(1) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = sub.add_parser("up", help="bring the lab up (idempotent) and write its inventory")
    up.add_argument("--lbs", type=int, default=1, help="load-balancer hosts (default: %(default)s)")
    up.add_argument("--nodes", type=int, default=2, help="nodes per color (default: %(default)s)")
    up.add_argument(
        "--inventory", type=Path, default=DEFAULT_INVENTORY, help="inventory to write (default: %(default)s)"
    )
    down = sub.add_parser("down", help="stop every host, remove the network and the hosts' folders")
    status = sub.add_parser("status", help="the lab's hosts, addresses and whether each is up")
    execute = sub.add_parser("exec", help="run a command inside a host's namespaces, as root")
    execute.add_argument("host")
    execute.add_argument("command", nargs=argparse.REMAINDER)
    for each in (up, down, status, execute):
        each.add_argument(
            "--root", type=Path, default=DEFAULT_ROOT, help="the lab's folder (default: %(default)s)"
        )


def run_command(args: argparse.Namespace) -> int:  # noqa: PLR0911 - one return per action
    lab = Lab(args.root)
    if args.action == "up":
        started = time.monotonic()
        try:
            hosts = lab.up(args.lbs, args.nodes, args.inventory.resolve())
        except ValueError as error:
            print(f"bluegreen lab: {error}", file=sys.stderr)
            return 2
        print(f"lab up in {time.monotonic() - started:.1f} s: {len(hosts)} hosts, inventory {args.inventory}")
        for host in hosts:
            print(f"  {host.name:10} {host.address}")
        return 0
    if args.action == "down":
        hosts = lab.down()
        print(f"lab down: {len(hosts)} hosts stopped" if hosts else f"no lab at {lab.root}")
        return 0
    if args.action == "status":
        hosts, _ = lab.recorded()
        if not hosts:
            print(f"no lab at {lab.root}")
            return 1
        for host in hosts:
            print(f"  {host.name:10} {host.address:14} {'up' if alive(host) else 'DOWN'}")
        return 0 if all(alive(host) for host in hosts) else 1
    host = lab.find(args.host)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        print("bluegreen lab exec: give a command after the host", file=sys.stderr)
        return 2
    enter = ["nsenter", "-t", str(host.init_pid), "-m", "-u", "-i", "-n", "-p", "--"]
    return subprocess.run([*enter, *command], check=False).returncode


def run(args: argparse.Namespace) -> int:
    with reporting():
        return run_command(args)
