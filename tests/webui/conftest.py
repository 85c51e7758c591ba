"""Dashboard test plumbing: a throw-away project (real playbooks that run on localhost in a second or
two), its release store and state dir, users, and a logged-in Flask test client.

Nothing here touches the lab (.lab/, ports 8080/8081/8404/8090/9101-9202): every path is under
tmp_path and HAProxy stats point at a port nobody listens on unless a test starts its own HAProxy.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO
from webui import create_app
from webui.users import UserStore

PASSWORD = "correct horse battery"

# The test project's deploy.yml runs its stages through the real lifecycle of bluegreen_state (begin,
# stage, fail, end), as roles/bluegreen does, so its progress reaches the dashboard through the real
# events callback. Release 1.1.0 waits in stage validate until the test creates <project>/gate;
# release 6.6.6 fails a validate check (rescued, like the real stages) and the run ends with the one
# message that names stage, check, host and observed value.
DEPLOY = """
- name: Deploy (the test project's pipeline)
  hosts: lb
  gather_facts: false
  vars:
    state_dir: "{{ playbook_dir }}/../.lab/lb/state"
  tasks:
    - name: Begin the run, take the lock
      bluegreen_state:
        dir: "{{ state_dir }}"
        action: begin
        run_action: deploy
        version: "{{ bluegreen_version }}"
        controller: "{{ lookup('bluegreen_controller') }}"
        break_lock: "{{ bluegreen_break_lock | default(false) | bool }}"
      register: begun

    - name: Say what runs
      ansible.builtin.debug:
        msg: "deploying {{ bluegreen_version }} (break lock: {{ bluegreen_break_lock | default(false) }})"

    - name: Enter provision
      bluegreen_state: {dir: "{{ state_dir }}", action: stage, run: "{{ begun.run }}", stage: provision}

    - name: Install the release on the idle nodes
      ansible.builtin.debug:
        msg: "installing {{ bluegreen_version }}"

    - name: Enter validate
      bluegreen_state: {dir: "{{ state_dir }}", action: stage, run: "{{ begun.run }}", stage: validate}

    - name: Wait for the test to open the gate
      ansible.builtin.wait_for:
        path: "{{ playbook_dir }}/../gate"
        timeout: 60
      when: bluegreen_version == '1.1.0'

    - name: Check the node is ready
      block:
        - name: Check the node is ready
          ansible.builtin.fail:
            msg: "node green-1 not ready after 4s: /health/ready answered 503 {\\"status\\":\\"not-ready\\"}"
          when: bluegreen_version == '6.6.6'
      rescue:
        - name: Record the failure
          bluegreen_state:
            dir: "{{ state_dir }}"
            action: fail
            run: "{{ begun.run }}"
            failure:
              stage: validate
              check: health_ready
              host: green-1
              observed: "{{ ansible_failed_result.msg }}"
          register: failed_check

    - name: Switch and watch
      when: failed_check is not defined
      block:
        - name: Enter switch
          bluegreen_state: {dir: "{{ state_dir }}", action: stage, run: "{{ begun.run }}", stage: switch}

        - name: Switch live traffic in one runtime-API change
          ansible.builtin.debug:
            msg: "live traffic moved blue -> green"

        - name: Enter watch
          bluegreen_state: {dir: "{{ state_dir }}", action: stage, run: "{{ begun.run }}", stage: watch}

    - name: Enter finish
      bluegreen_state: {dir: "{{ state_dir }}", action: stage, run: "{{ begun.run }}", stage: finish}

    - name: End the run (history, lock)
      bluegreen_state: {dir: "{{ state_dir }}", action: end, run: "{{ begun.run }}"}
      register: ended

    - name: Fail the run with its message
      ansible.builtin.fail:
        msg: "{{ ended.message }}"
      when: ended.failed_run
"""

SWITCH = """
- name: Switch live traffic to bluegreen_color
  hosts: lb
  gather_facts: false
  tasks:
    - name: "[switch] Switch live traffic to {{ bluegreen_color }}"
      ansible.builtin.debug:
        msg: "switching to {{ bluegreen_color }}"
"""

ROLLBACK = """
- name: Roll live traffic back to the previous color
  hosts: lb
  gather_facts: false
  tasks:
    - name: "[switch] Roll back (break lock: {{ bluegreen_break_lock | default(false) }})"
      ansible.builtin.debug:
        msg: "rolling back"
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project dir with playbooks (no validate.yml), a local inventory, releases and a state dir."""
    root = tmp_path / "project"
    (root / "playbooks").mkdir(parents=True)
    (root / "playbooks" / "deploy.yml").write_text(DEPLOY)
    (root / "playbooks" / "switch.yml").write_text(SWITCH)
    (root / "playbooks" / "rollback.yml").write_text(ROLLBACK)
    # like a user's project that uses our plugins from this checkout
    plugins = REPO / "plugins"
    (root / "ansible.cfg").write_text(
        f"[defaults]\nlibrary = {plugins / 'modules'}\nmodule_utils = {plugins / 'module_utils'}\n"
        f"lookup_plugins = {plugins / 'lookup'}\ntest_plugins = {plugins / 'test'}\n"
    )
    inventory = root / "inventories" / "local"
    inventory.mkdir(parents=True)
    (inventory / "hosts.yml").write_text(
        "all:\n  children:\n    lb:\n      hosts:\n        lb-1:\n"
        f"          ansible_connection: local\n          ansible_python_interpreter: {sys.executable}\n"
    )
    for version in ("1.0.0", "1.1.0", "6.6.6"):
        (root / ".lab" / "releases" / version).mkdir(parents=True)
        (root / ".lab" / "releases" / version / "manifest.json").write_text(json.dumps({"version": version}))
    (root / ".lab" / "releases" / "2.0.0").mkdir()  # no manifest: not a release
    state = root / ".lab" / "lb" / "state"
    state.mkdir(parents=True)
    (state / "state.json").write_text(
        json.dumps(
            {
                "live": "blue",
                "previous": None,
                "versions": {"blue": "1.0.0", "green": "1.0.0"},
                "deployment": None,
                "warm_until": None,
                "updated_at": "2026-01-01T00:00:00.000000Z",
            }
        )
    )
    return root


@pytest.fixture
def config(project: Path, tmp_path: Path) -> dict:
    return {
        "PROJECT_DIR": str(project),
        "DATA_DIR": str(tmp_path / "webui-data"),
        "SECRET_KEY": "test-secret",
        # nobody listens there: the overview reports HAProxy as unreachable
        "HAPROXY_STATS_URL": f"http://127.0.0.1:{free_port()}/stats;csv",
        "POLL_INTERVAL": 0.2,
        "SSE_HEARTBEAT": 0.5,
        "OVERVIEW_STREAM_SECONDS": 5,
        "TESTING": True,
    }


@pytest.fixture(scope="session")
def users_file(tmp_path_factory) -> Path:
    """An operator (olivia) and a viewer (victor), hashed once per session (scrypt takes its time)."""
    path = tmp_path_factory.mktemp("users") / "users.json"
    users = UserStore(path)
    users.add("olivia", "operator", PASSWORD)
    users.add("victor", "viewer", PASSWORD)
    return path


@pytest.fixture
def app(config: dict, users_file: Path) -> Iterator:
    app = create_app(config)
    shutil.copy(users_file, app.config["USERS_FILE"])
    yield app
    bluegreen = app.extensions["bluegreen"]
    bluegreen.monitor.stop()
    for job in list(bluegreen.runs._jobs.values()):
        job.cancel_requested = True
        if job.thread is not None:
            job.thread.join(timeout=30)


def csrf(client) -> str:
    with client.session_transaction() as session:
        return session.get("csrf", "")


def login(client, name: str, password: str = PASSWORD):
    client.get("/login")
    return client.post("/login", data={"username": name, "password": password, "csrf_token": csrf(client)})


@pytest.fixture
def operator(app):
    client = app.test_client()
    assert login(client, "olivia").status_code == 302
    return client


@pytest.fixture
def viewer(app):
    client = app.test_client()
    assert login(client, "victor").status_code == 302
    return client


def post_action(client, **form):
    return client.post("/runs", data={"csrf_token": csrf(client), **form})


def refusal(client, response) -> tuple[int, str]:
    """A refused form POST (POST-redirect-GET): 303 to the overview, which shows the refusal once.
    Returns (the refusal's status, the overview page)."""
    assert response.status_code == 303, (response.status_code, response.get_data(as_text=True)[:1000])
    assert response.headers["Location"] == "/"
    page = client.get("/").get_data(as_text=True)
    match = re.search(r'data-testid="refusal-text" data-status="(\d+)"', page)
    assert match, page[:3000]
    return int(match.group(1)), page


def run_id_from(response) -> str:
    assert response.status_code == 303, response.get_data(as_text=True)[:2000]
    match = re.search(r"/runs/([^/]+)$", response.headers["Location"])
    assert match, response.headers["Location"]
    return match.group(1)


def wait_finished(app, run_id: str, timeout: float = 30) -> dict:
    db = app.extensions["bluegreen"].db
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = db.run(run_id)
        if run and run["finished"]:
            return run
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not finish in {timeout}s: {db.run(run_id)}")


def write_lock(state_dir: Path, pid: int, started: dt.datetime | None = None, **extra) -> dict:
    """A deploy.lock exactly as the controller writes it (see module_utils/bluegreen_state.py)."""
    started = started or dt.datetime.now(dt.UTC)
    lock = {
        "deployment_id": "20260101T120000Z-1.1.0",
        "action": "deploy",
        "version": "1.1.0",
        "user": "carol",
        "host": socket.gethostname(),
        "pid": pid,
        "ttl_seconds": 3600,
        "started_at": started.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        **extra,
    }
    (state_dir / "deploy.lock").write_text(json.dumps(lock, sort_keys=True) + "\n")
    return lock


class SSEReader:
    """Reads SSE messages from a streaming test-client response, one at a time."""

    def __init__(self, response) -> None:
        self.response = response
        self.chunks = iter(response.response)
        self.buffer = ""

    def next(self) -> dict | None:
        """The next message {"id", "event", "data"} (comments skipped), None at the end of the stream."""
        while True:
            while "\n\n" not in self.buffer:
                try:
                    chunk = next(self.chunks)
                except StopIteration:
                    return None
                self.buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
            block, self.buffer = self.buffer.split("\n\n", 1)
            message: dict = {"id": None, "event": "message", "data": None}
            for line in block.split("\n"):
                if line.startswith(":") or line.startswith("retry:"):
                    continue
                key, _, value = line.partition(": ")
                if key == "id":
                    message["id"] = int(value)
                elif key == "event":
                    message["event"] = value
                elif key == "data":
                    message["data"] = json.loads(value)
            if message["data"] is not None:
                return message

    def all(self) -> list[dict]:
        messages = []
        while (message := self.next()) is not None:
            messages.append(message)
        return messages

    def close(self) -> None:
        self.response.close()


def stream(client, url: str, last_event_id: int | None = None) -> SSEReader:
    headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
    response = client.get(url, headers=headers, buffered=False)
    assert response.status_code == 200, response.status_code
    assert response.mimetype == "text/event-stream"
    return SSEReader(response)
