"""Driving the one-machine lab from tests: playbook runs, recaps, processes, sinks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import orjson
import yaml

from tests.conftest import LAB, REPO, VENV_BIN, Playbook, PlaybookRun
from tests.conftest import run_playbook as run_in_repo
from tests.conftest import start_playbook as start_in_repo
from tests.lab_namespace import CONTROLLER_CACHES, controller_caches_lock, host_network

LIVE_URL = "http://127.0.0.1:8080"
PREVIEW_URL = "http://127.0.0.1:8081"
STATS_URL = "http://127.0.0.1:8404/stats;csv"
HAPROXY_DIR = LAB / "lb" / "haproxy"
NODES = {"blue-1": 9101, "blue-2": 9102, "green-1": 9201, "green-2": 9202}


def run_playbook(name: str, *args: str, timeout: float = 600) -> PlaybookRun:
    """playbooks/<name> on the lab (the one helper: tests/conftest.py)."""
    return run_in_repo(f"playbooks/{name}", *args, timeout=timeout)


def start_playbook(name: str, *args: str) -> Playbook:
    """playbooks/<name> in the background, in a session of its own (kill() stops it with its workers)."""
    return start_in_repo(f"playbooks/{name}", *args, new_session=True)


def supervisord_pids() -> list[int]:
    """PIDs of every supervisord the lab started, from their pid files."""
    pids = []
    for pidfile in LAB.glob("**/supervisor/supervisord.pid"):
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            continue
        if Path(f"/proc/{pid}").exists():
            pids.append(pid)
    return pids


def lab_ran_here() -> bool:
    """Whether .lab/ holds more than the controller's caches (the release store, the tools' environments)."""
    return LAB.is_dir() and any(path.name not in CONTROLLER_CACHES for path in LAB.iterdir())


def stop_lab(purge: bool = False) -> None:
    """Stop the lab with the teardown playbook; anything left is stopped by PID."""
    run_playbook("teardown.yml", *(["-e", "bluegreen_purge=true"] if purge else []))
    for pid in supervisord_pids():
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while supervisord_pids() and time.monotonic() < deadline:
        time.sleep(0.2)


def sink_lines(root: Path = LAB) -> list[dict]:
    """Every line of every node's sink under root."""
    lines = []
    for path in sorted(root.glob("**/sink/*.ndjson")):
        with path.open("rb") as fh:
            lines.extend(orjson.loads(line) for line in fh if line.strip())
    return lines


def sink_ids(root: Path = LAB) -> list[str]:
    return [line["id"] for line in sink_lines(root) if "id" in line]


STATE_DIR = LAB / "lb" / "state"


def state() -> dict:
    return orjson.loads((STATE_DIR / "state.json").read_bytes())


def history() -> list[dict]:
    path = STATE_DIR / "history.jsonl"
    return (
        [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
        if path.exists()
        else []
    )


def runtime(command: str) -> str:
    """One HAProxy runtime API command (raw socket: the tests do not use the code they check)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(HAPROXY_DIR / "admin.sock"))
        sock.sendall(command.encode() + b"\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data.decode()


def haproxy_live() -> str:
    """The live color HAProxy routes to, from its map in memory."""
    for line in runtime(f"show map {HAPROXY_DIR / 'live.map'}").splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[1] == "live":
            return fields[2]
    raise AssertionError("HAProxy has no live entry in its map")


def backend_requests(color: str) -> int:
    """Total requests HAProxy sent to a color's backend (stot of its BACKEND row)."""
    for line in runtime("show stat").splitlines():
        fields = line.split(",")
        if len(fields) > 7 and fields[0] == f"bg_{color}" and fields[1] == "BACKEND":
            return int(fields[7])
    raise AssertionError(f"no backend bg_{color} in HAProxy's stats")


def _run_controller_command(*argv: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{' '.join(argv[:4])} ... failed:\n{result.stderr[-3000:]}"


def build_release(version: str, *options: str) -> None:
    """`bluegreen release <version> <options>` (into the lab's release store unless options say otherwise),
    unless it is built. pip needs the network, and the stores may be shared by several workers' labs: one
    build at a time, in the machine's network."""
    with host_network(), controller_caches_lock(LAB):
        _run_controller_command(str(VENV_BIN / "bluegreen"), "release", version, *options)


def _setting(path: str, name: str) -> str:
    return str(yaml.safe_load((REPO / path).read_text())[name])


def fill_controller_caches() -> None:
    """What site.yml builds on the controller from the package index, built beforehand for a lab that has
    no network (tests/lab_namespace.py), the same way: the initial release (site.yml's first play) and
    supervisor's environment (roles/supervisor/tasks/install.yml); site.yml then finds both built."""
    build_release(_setting("inventories/local/group_vars/all.yml", "bluegreen_initial_version"))
    supervisor = _setting("roles/supervisor/defaults/main.yml", "supervisor_version")
    build_release(supervisor, "--package", "supervisor", "--store", str(LAB / "tools" / "supervisor"))


class Loadgen:
    """bluegreen loadgen in the background through the live frontend (default: the local lab's; `urls`:
    these, round-robin, e.g. every lb of the SSH lab); stop() then verify()."""

    def __init__(
        self,
        out: Path,
        rate: int = 200,
        batch: int = 10,
        urls: Sequence[str] = (f"{LIVE_URL}/v1/logs",),
        sinks: str = "",
    ) -> None:
        self.out = out
        self.sinks = sinks  # a glob for `bluegreen verify --sinks`; "" = its default (.lab/**/sink)
        self.proc = subprocess.Popen(
            [
                *(str(VENV_BIN / "bluegreen"), "loadgen", "--rate", str(rate), "--batch", str(batch)),
                *("--out", str(out), "--quiet"),
                *(arg for url in urls for arg in ("--url", url)),
            ],
            cwd=REPO,
        )
        deadline = time.monotonic() + 10
        while not (out / "requests.ndjson").exists() and time.monotonic() < deadline:
            time.sleep(0.1)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def verify(self) -> dict:
        result = subprocess.run(
            [
                *(str(VENV_BIN / "bluegreen"), "verify", "--run", str(self.out), "--json"),
                *(("--sinks", self.sinks) if self.sinks else ()),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        return orjson.loads(result.stdout)


def status_text(run: PlaybookRun) -> str:
    """What status.yml showed the operator: the lines of its status event (one per lb)."""
    shown = run.of_type("status")
    assert shown, f"status.yml wrote no status event:\n{run.tail()}"
    return "\n".join(line for event in shown for line in event["lines"])


def haproxy_processes() -> dict:
    """HAProxy's master pid, its reload counter and its workers' pids, from the master CLI (`show proc`)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(HAPROXY_DIR / "master.sock"))
        sock.sendall(b"show proc\n")
        sock.shutdown(socket.SHUT_WR)  # the master CLI answers once the command is complete
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    master, workers = None, []
    for line in data.decode().splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[1] == "master":
            master = {"pid": int(fields[0]), "reloads": int(fields[2])}
        elif len(fields) >= 3 and fields[1] == "worker":
            workers.append(int(fields[0]))
    assert master, f"no master in HAProxy's show proc: {data.decode()!r}"
    return {**master, "workers": sorted(workers)}


def server_rows(color: str) -> dict[str, dict[str, str]]:
    """The servers of a color's backend as HAProxy's `show stat` lists them now (name -> row)."""
    lines = runtime("show stat").removeprefix("# ").splitlines()
    header = lines[0].split(",")
    rows = {}
    for line in lines[1:]:
        row = dict(zip(header, line.split(","), strict=False))
        if row.get("pxname") == f"bg_{color}" and row["svname"] not in ("FRONTEND", "BACKEND"):
            rows[row["svname"]] = row
    return rows
