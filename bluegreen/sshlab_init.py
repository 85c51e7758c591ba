"""PID 1 of one SSH lab host (started by `bluegreen lab up`, bluegreen/sshlab.py, through `unshare`).

It runs in the host's own network, PID, mount, UTS and IPC namespaces, with the machine's interpreter
(/usr/bin/python3 -I: nothing of the checkout is imported, so the checkout can be hidden). In order:

1. gives the host its own /etc, /opt, /var, /home and /root: overlayfs over the machine's, the upper
   layer in the host's folder under the lab's root (what a role writes on one host is invisible on the
   others, and stays readable from the machine, e.g. every node's sink);
2. gives it its own /run and /tmp (tmpfs), and hides the checkout (tmpfs over it): a lab host, like a
   real one, sees nothing of the controller but what Ansible sends over SSH;
3. names itself (UTS), says `ready` on stdout and waits for `go` on stdin (the parent plugs its network
   in meanwhile: sshd must find its ListenAddress);
4. starts sshd in the foreground and reaps every orphan of the host (as PID 1 must) until it is killed.
   When it dies, the kernel kills every other process of the host: that is the teardown.

sshd may stop (a test stops it to make the host unreachable) without ending the host.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

# the machine's, with the host's changes on top: the system as installed (users, sshd, python, haproxy)
OVERLAID = ("etc", "opt", "var")
# empty at first: the host's own users' homes, nothing of the machine's (its root's keys, say)
FRESH = ("home", "root")


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def main(config_path: str) -> int:
    config = json.loads(Path(config_path).read_text(encoding="utf-8"))
    host_dir = config["host_dir"]
    for tree in OVERLAID:
        layers = f"lowerdir=/{tree},upperdir={host_dir}/upper/{tree},workdir={host_dir}/work/{tree}"
        mount("-t", "overlay", f"lab-{tree}", "-o", layers, f"/{tree}")
    for tree in FRESH:
        mount("--bind", f"{host_dir}/upper/{tree}", f"/{tree}")
    mount("-t", "tmpfs", "-o", "mode=0755,nosuid,nodev", "lab-run", "/run")
    mount("-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "lab-tmp", "/tmp")  # noqa: S108 - the host's own
    for folder, mode in ((Path("/run/sshd"), 0o755), (Path("/run/lock"), 0o1777)):
        folder.mkdir()
        folder.chmod(mode)
    for hidden in config["hide"]:
        mount("-t", "tmpfs", "-o", "mode=0755,size=1m", "lab-hidden", hidden)
    socket.sethostname(config["name"])
    os.chdir("/")

    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # stdout, like stderr, to the host's init.log from now on

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    # -e: sshd's log on stderr (the host's init.log); -D: in the foreground, a child of this process
    subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", "/etc/ssh/sshd_config"])
    while True:
        try:
            os.wait()
        except ChildProcessError:
            signal.pause()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
