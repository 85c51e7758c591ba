"""The dashboard in a real browser (Playwright, Debian's chromium) against the real one-machine lab.

The real server (`python -m webui`, waitress) runs as a subprocess with its own users file and data
dir, pointed at the lab's state dir, release store and HAProxy. One deploy and one rollback in all:

1. a CLI playbook holds the deploy lock: Deploy shows the holder and starts nothing;
2. an operator logs in and deploys; the browser is closed mid-run; the run goes on without it;
   a new browser replays the run page from the start and follows it live to the end; the overview,
   open the whole time in another tab, shows the live color flip;
3. the operator rolls back; the overview flips back.

Screenshots of the overview and the run pages go to tests/artifacts/. Runs on a lab other modules may
have used before it (on its xdist worker), whatever color they left live, and leaves it on that color.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import pytest
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

from tests.conftest import REPO
from tests.integration.lab import (
    STATE_DIR,
    Loadgen,
    build_release,
    haproxy_live,
    history,
    state,
)
from tests.webui.cli_lock import CliLock
from tests.webui.conftest import free_port
from webui.users import UserStore

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # root on CI
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = REPO / "tests" / "artifacts"
OPERATOR, PASSWORD = "olga", "browser test password"
VERSION = "1.1.0"
WATCH_SECONDS = 6
RUN_DEADLINE_MS = 240_000  # a deploy takes 30-50 s on an idle machine; CI shares 2 cores
expect.set_options(timeout=20_000)  # every other wait: the page's own updates, on a busy machine


def other(color: str) -> str:
    return "green" if color == "blue" else "blue"


@dataclass
class Dashboard:
    url: str
    proc: subprocess.Popen
    data_dir: Path
    log: Path

    def run_row(self, run_id: str) -> dict:
        """The run as the dashboard's database has it (read-only; the browser may be gone)."""
        with sqlite3.connect(f"file:{self.data_dir / 'webui.sqlite3'}?mode=ro", uri=True) as db:
            status = db.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
            seq = db.execute("SELECT MAX(seq) FROM events WHERE run_id = ?", (run_id,)).fetchone()
        return {"status": status[0] if status else None, "events": seq[0] or 0}

    def run_count(self) -> int:
        with sqlite3.connect(f"file:{self.data_dir / 'webui.sqlite3'}?mode=ro", uri=True) as db:
            return db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]


@pytest.fixture(scope="module")
def dashboard(lab, tmp_path_factory) -> Iterator[Dashboard]:
    """`python -m webui` against the lab, with an operator; stopped by PID at the end."""
    build_release(VERSION)
    root = tmp_path_factory.mktemp("webui-lab")
    UserStore(root / "users.json").add(OPERATOR, "operator", PASSWORD)
    port = free_port()
    config = root / "webui.toml"
    config.write_text(
        f'port = {port}\ndata_dir = "{root / "data"}"\nusers_file = "{root / "users.json"}"\n'
        f"poll_interval = 0.5\nsse_heartbeat = 2.0\nwatch_seconds = {WATCH_SECONDS}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLUEGREEN_WEBUI_")}
    log = root / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "webui", "--config", str(config)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{url}/login", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"dashboard not up after 60 s: {log.read_text()[-3000:]}"
            time.sleep(0.2)
        yield Dashboard(url, proc, root / "data", log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/bootstrap.sh dev installs Debian's chromium")
    with sync_playwright() as pw:
        yield pw


def launch(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)


def login(page: Page, dashboard: Dashboard, path: str = "/") -> None:
    page.goto(f"{dashboard.url}{path}")
    expect(page.get_by_test_id("login-form")).to_be_visible()
    page.get_by_test_id("login-username").fill(OPERATOR)
    page.get_by_test_id("login-password").fill(PASSWORD)
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("current-user")).to_have_text(f"{OPERATOR} (operator)")


def press(page: Page, action: str, confirm: str) -> None:
    """Click an action's button and accept the confirmation dialog, checking what it asks."""
    page.get_by_test_id(f"{action}-button").click()
    expect(page.get_by_test_id("confirm-dialog")).to_be_visible()
    expect(page.get_by_test_id("confirm-text")).to_contain_text(confirm)
    page.get_by_test_id("confirm-ok").click()


def run_id_of(page: Page) -> str:
    page.wait_for_url(re.compile(r"/runs/[^/]+$"))
    return page.url.rsplit("/", 1)[1]


def wait_for(predicate, what: str, timeout: float = 120, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what}: not seen within {timeout} s")


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_deploy_while_a_cli_playbook_holds_the_lock_shows_the_holder_and_starts_nothing(
    dashboard, playwright, tmp_path
):
    before = (state(), len(history()))
    holder = CliLock(tmp_path, REPO / "inventories" / "local", STATE_DIR)
    browser = launch(playwright)
    try:
        page = browser.new_page()
        login(page, dashboard)
        lock = page.get_by_test_id("lock-holder")
        expect(lock).to_have_attribute("data-held", "true")
        expect(lock).to_contain_text(holder.lock["deployment_id"])
        page.get_by_test_id("deploy-version").select_option(VERSION)
        press(page, "deploy", f"Deploy {VERSION}")
        # POST-redirect-GET: back on the overview, which names the holder
        page.wait_for_url(f"{dashboard.url}/")
        expect(page.get_by_test_id("refusal-text")).to_have_attribute("data-status", "409")
        expect(page.get_by_test_id("refusal-text")).to_contain_text(
            f"the deploy lock is held by deployment {holder.lock['deployment_id']}"
        )
        shown = page.get_by_test_id("refused-lock-holder")
        for value in (holder.lock["deployment_id"], holder.lock["user"], str(holder.proc.pid)):
            expect(shown).to_contain_text(value)
        shot(page, "overview-refused-lock")
        assert dashboard.run_count() == 0
        holder.release()
        # the overview's stream notices the lock is free, without a reload
        expect(lock).to_have_attribute("data-held", "false", timeout=15_000)
        expect(page.get_by_test_id("deploy-button")).to_be_enabled()
    finally:
        browser.close()
        holder.stop()
    assert dashboard.run_count() == 0
    assert (state()["live"], state()["versions"], state()["deployment"]) == (
        before[0]["live"],
        before[0]["versions"],
        None,
    )
    assert len(history()) == before[1]


def test_deploy_from_the_browser_outlives_the_browser_and_replays_then_follows_live(
    dashboard, playwright, tmp_path
):
    first_live = state()["live"]
    target = other(first_live)
    load = Loadgen(tmp_path / "load", rate=40, batch=5)
    try:
        # --- first browser: log in, deploy, watch the first stages, close the browser mid-run
        browser = launch(playwright)
        try:
            page = browser.new_page()
            login(page, dashboard)
            expect(page.get_by_test_id("live-color")).to_have_attribute("data-color", first_live)
            page.get_by_test_id("deploy-version").select_option(VERSION)
            press(page, "deploy", f"Deploy {VERSION} to the idle color")
            run_id = run_id_of(page)
            expect(page.get_by_test_id("run-user")).to_contain_text(OPERATOR)
            expect(page.get_by_test_id("stream-state")).to_have_attribute("data-state", "live")
            expect(page.get_by_test_id("event-log")).to_contain_text(f"deploy accepted for {OPERATOR}")
            expect(page.get_by_test_id("stage-step-preflight")).to_have_attribute(
                "data-state", "ok", timeout=RUN_DEADLINE_MS
            )
            expect(page.get_by_test_id("stage-step-provision")).to_have_attribute(
                "data-state", "running", timeout=RUN_DEADLINE_MS
            )
            seen = int(page.get_by_test_id("event-log").get_attribute("data-last-seq") or 0)
            assert seen > 0
        finally:
            browser.close()
        assert dashboard.run_row(run_id)["status"] == "running"

        # --- no browser: the run goes on (the controller's state.json and the dashboard's store move)
        wait_for(
            lambda: dashboard.run_row(run_id)["events"] >= seen + 10,
            "new events of the run while no browser is open",
            timeout=RUN_DEADLINE_MS / 1000,
        )
        assert (state().get("deployment") or {}).get("id"), "the controller's deployment is in progress"

        # --- a new browser: the overview in one tab, the run page in another
        browser = launch(playwright)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            overview = context.new_page()
            login(overview, dashboard)
            assert dashboard.run_row(run_id)["status"] == "running"
            run = context.new_page()
            run.goto(f"{dashboard.url}/runs/{run_id}")
            log = run.get_by_test_id("event-log")
            # replayed from the start: the first event, the first stage's tasks ...
            expect(log).to_contain_text(f"deploy accepted for {OPERATOR}")
            expect(log).to_contain_text("[1/6 preflight] Take the deploy lock")
            expect(run.get_by_test_id("stream-state")).to_have_attribute("data-state", "live")
            # ... then followed live to the end, no reload
            expect(run.get_by_test_id("run-status")).to_have_attribute(
                "data-status", "successful", timeout=RUN_DEADLINE_MS
            )
            for stage in ("preflight", "provision", "validate", "switch", "watch", "finish"):
                expect(run.get_by_test_id(f"stage-step-{stage}")).to_have_attribute("data-state", "ok")
            expect(run.get_by_test_id("run-result")).to_contain_text("Finished successfully")
            # from the progress events: each stage's duration on a timeline, stage 3's checks as a table
            for stage in ("preflight", "provision", "validate", "switch", "watch", "finish"):
                expect(run.get_by_test_id(f"timeline-{stage}")).to_have_attribute("data-state", "ok")
                expect(run.get_by_test_id(f"timeline-{stage}")).to_contain_text(" s")
            checks = run.locator('[data-testid="checks"] tbody tr')
            expect(checks.first).to_be_visible()
            assert checks.count() >= 15
            assert run.locator('[data-testid="checks"] tr[data-verdict="fail"]').count() == 0
            expect(run.locator('[data-testid="checks"] tr[data-check="health_ready"]').first).to_contain_text(
                "pass"
            )
            expect(run.get_by_test_id("checks-summary")).to_contain_text("0 failed")
            expect(run.get_by_test_id("stream-state")).to_have_attribute("data-state", "ended")
            expect(run.get_by_test_id("current-task")).to_have_text("-")
            last = int(log.get_attribute("data-last-seq") or 0)
            assert last == dashboard.run_row(run_id)["events"]
            assert log.inner_text().count(f"deploy accepted for {OPERATOR}") == 1  # nothing twice
            shot(run, "run-deploy")

            # the overview tab, never reloaded, shows the flip live
            expect(overview.get_by_test_id("live-color")).to_have_attribute("data-color", target)
            expect(overview.get_by_test_id("live-version")).to_have_text(VERSION)
            expect(overview.get_by_test_id("idle-color")).to_have_attribute("data-color", first_live)
            expect(overview.get_by_test_id("lock-holder")).to_have_attribute("data-held", "false")
            expect(overview.locator("#recent-runs tr", has_text=run_id)).to_contain_text("successful")
            expect(overview.locator("#backend-" + target + " .b-req")).not_to_have_text(
                re.compile(r"^(-|0\.0)$"), timeout=15_000
            )
            shot(overview, "overview-after-deploy")
        finally:
            browser.close()
    finally:
        load.stop()
    assert state()["live"] == haproxy_live() == target
    last = history()[-1]
    assert (last["action"], last["result"], last["version"]) == ("deploy", "ok", VERSION)
    assert last["actor"] == OPERATOR  # the dashboard user, beside the OS user
    assert last["user"]
    report = load.verify()
    assert report["failed_requests_total"] == 0, report["failed_requests"]
    assert report["lost"] == 0, report["lost_sample"]


def test_rollback_from_the_browser_flips_the_overview_back(dashboard, playwright):
    live = state()["live"]
    previous = state()["previous"]
    assert previous == other(live), state()
    browser = launch(playwright)
    try:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        login(page, dashboard)
        expect(page.get_by_test_id("live-color")).to_have_attribute("data-color", live)
        press(page, "rollback", "Roll live traffic back")
        run_id = run_id_of(page)
        expect(page.get_by_test_id("run-status")).to_have_attribute(
            "data-status", "successful", timeout=RUN_DEADLINE_MS
        )
        expect(page.get_by_test_id("event-log")).to_contain_text("live traffic moved")
        shot(page, "run-rollback")
        page.get_by_test_id("nav-overview").click()
        expect(page.get_by_test_id("live-color")).to_have_attribute("data-color", previous)
        expect(page.get_by_test_id("recent-runs")).to_contain_text(run_id)
        shot(page, "overview-after-rollback")
        page.get_by_test_id("nav-history").click()
        expect(page.locator("body")).to_contain_text(run_id)
    finally:
        browser.close()
    assert state()["live"] == haproxy_live() == previous
    last = history()[-1]
    assert (last["action"], last["result"], last["actor"]) == ("rollback", "ok", OPERATOR)


@pytest.mark.parametrize(
    "target",
    ["/\\evil.example/", "/history\r\nSet-Cookie: stolen=1", "//evil.example/"],
    ids=["backslash", "crlf", "two-slashes"],
)
def test_a_login_with_a_foreign_next_stays_on_the_dashboard(dashboard, playwright, target):
    """In Chromium: the login form posts to /login?next=<target>; the browser lands on the overview of
    this dashboard, logged in (before: a 500 for CR/LF, a 404 page for the quoted backslash)."""
    browser = launch(playwright)
    try:
        page = browser.new_page()
        page.goto(f"{dashboard.url}/login?{urlencode({'next': target})}")
        page.get_by_test_id("login-username").fill(OPERATOR)
        page.get_by_test_id("login-password").fill(PASSWORD)
        page.get_by_test_id("login-submit").click()
        expect(page.get_by_test_id("current-user")).to_have_text(f"{OPERATOR} (operator)")
        assert page.url == f"{dashboard.url}/"
    finally:
        browser.close()
