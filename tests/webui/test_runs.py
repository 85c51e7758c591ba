"""Runs with the real ansible-runner and real playbooks: the event stream replays, resumes and follows
live; a run outlives its viewers; one run at a time; a failed deploy ends with the playbook's message."""

from __future__ import annotations

import time
from pathlib import Path

from tests.webui.conftest import login, post_action, refusal, run_id_from, stream, wait_finished

WAIT_TASK = "Wait for the test to open the gate"


def read_until(reader, predicate, limit: int = 500) -> list[dict]:
    messages = []
    for _ in range(limit):
        message = reader.next()
        assert message is not None, f"stream ended before the expected event; got {messages[-3:]}"
        messages.append(message)
        if predicate(message):
            return messages
    raise AssertionError("expected event not seen")


def test_stream_replays_resumes_and_follows_a_run_that_outlives_its_viewers(operator, app, project: Path):
    run_id = run_id_from(post_action(operator, action="deploy", version="1.1.0"))
    page = operator.get(f"/runs/{run_id}").get_data(as_text=True)
    for step in ("preflight", "provision", "validate", "switch", "watch", "finish"):
        assert f'data-testid="stage-step-{step}"' in page

    # a browser watches until the run waits at stage 3, then goes away
    first = stream(operator, f"/runs/{run_id}/events")
    seen = read_until(
        first, lambda m: m["data"].get("task") == WAIT_TASK and m["data"]["event"] == "runner_on_start"
    )
    first.close()
    assert [m["id"] for m in seen] == list(range(1, len(seen) + 1))
    assert seen[0]["data"]["event"] == "accepted"
    assert seen[0]["data"]["user"] == "olivia"
    # progress comes from the events callback: each stage starts, and ends before the next one starts
    progress = [(m["data"]["type"], m["data"].get("stage")) for m in seen if m["data"]["event"] == "progress"]
    assert progress == [
        ("playbook_start", None),
        ("run_start", "preflight"),
        ("stage_start", "preflight"),
        ("stage_end", "preflight"),
        ("stage_start", "provision"),
        ("stage_end", "provision"),
        ("stage_start", "validate"),
    ]
    # the runner's events say which stage they belong to
    assert [m["data"]["stage"] for m in seen if m["data"].get("task") == WAIT_TASK][-1] == "validate"

    # nobody watches: the run goes on, still waiting at the gate
    time.sleep(0.5)
    run = app.extensions["bluegreen"].db.run(run_id)
    assert run["status"] == "running"
    assert not run["finished"]

    # one run at a time: a second action is refused, naming the running one
    status, page = refusal(operator, post_action(operator, action="rollback"))
    assert status == 409
    assert f"run {run_id} (deploy) is in progress" in page
    assert len(app.extensions["bluegreen"].db.runs()) == 1

    # reconnect with Last-Event-ID: the stream resumes right after it, replaying nothing twice ...
    last = seen[-1]["id"]
    resumed = stream(operator, f"/runs/{run_id}/events", last_event_id=last)
    (project / "gate").touch()  # ... and follows the run live once it moves on
    rest = resumed.all()
    assert rest[0]["id"] == last + 1
    assert [m["id"] for m in rest] == list(range(last + 1, last + 1 + len(rest)))
    end = rest[-1]
    assert end["event"] == "end"
    assert end["data"]["status"] == "successful"
    assert end["data"]["rc"] == 0
    assert end["data"]["failure"] is None
    assert end["data"]["stages"] == {
        "preflight": "ok",
        "provision": "ok",
        "validate": "ok",
        "switch": "ok",
        "watch": "ok",
        "finish": "ok",
    }
    live_tasks = [m["data"].get("task") for m in rest if m["data"]["event"] == "playbook_on_task_start"]
    assert live_tasks[0] == "Check the node is ready"
    assert live_tasks[-1] == "Fail the run with its message"
    ends = {m["data"]["stage"]: m["data"] for m in rest if m["data"].get("type") == "stage_end"}
    assert [(name, e["result"]) for name, e in ends.items()] == [
        ("validate", "ok"),
        ("switch", "ok"),
        ("watch", "ok"),
        ("finish", "ok"),
    ]
    assert ends["validate"]["duration_s"] > 0  # it waited at the gate
    run_end = [m["data"] for m in rest if m["data"].get("type") == "run_end"]
    assert run_end[0]["result"] == "ok"
    assert "1.1.0 is live on green" in run_end[0]["message"]

    # reopening the page later replays the whole run from the start, ending with the same result
    replay = stream(operator, f"/runs/{run_id}/events").all()
    assert [m["id"] for m in replay] == list(range(1, end["id"] + 1))
    assert [m["data"] for m in replay] == [m["data"] for m in seen] + [m["data"] for m in rest]
    # resuming after the end still tells how the run ended
    after_end = stream(operator, f"/runs/{run_id}/events", last_event_id=end["id"]).all()
    assert [(m["event"], m["id"]) for m in after_end] == [("end", end["id"])]

    run = wait_finished(app, run_id)
    assert (run["status"], run["rc"], run["user"], run["action"]) == ("successful", 0, "olivia", "deploy")
    # the validated version, and the logged-in user for the controller's lock and history
    assert run["extravars"] == {"bluegreen_version": "1.1.0", "bluegreen_actor": "olivia"}
    # the full log, the JSON events and the history page
    log = operator.get(f"/runs/{run_id}/log").get_data(as_text=True)
    assert "TASK [Wait for the test to open the gate]" in log
    assert "# result: successful (rc 0)" in log
    events = operator.get(f"/api/runs/{run_id}/events").get_json()["events"]
    assert len(events) == end["id"]
    assert any(e["raw"] and e["raw"].get("runner_ident") == run_id for e in events)
    history = operator.get("/history").get_data(as_text=True)
    assert run_id in history
    assert "olivia" in history
    # ansible-runner's own artifacts for this ident
    artifacts = Path(app.config["DATA_DIR"]) / "runs" / run_id / "artifacts" / run_id
    assert (artifacts / "rc").read_text() == "0"


def test_failed_deploy_ends_with_the_playbooks_message(operator, app):
    run_id = run_id_from(post_action(operator, action="deploy", version="6.6.6"))
    messages = stream(operator, f"/runs/{run_id}/events").all()
    end = messages[-1]
    assert end["event"] == "end"
    result = end["data"]
    assert result["status"] == "failed"
    assert result["rc"] == 2
    failure = result["failure"]
    assert failure.startswith("deploy of 6.6.6 failed in stage validate:")
    assert 'check "health_ready" on green-1' in failure
    assert "not ready after 4s: /health/ready answered 503" in failure
    assert "Traffic never moved: blue stays live." in failure
    assert result["failed_stage"] == "validate"
    assert result["stages"] == {
        "preflight": "ok",
        "provision": "ok",
        "validate": "failed",
        "switch": "skipped",
        "watch": "skipped",
        "finish": "ok",
    }
    failed = [m["data"] for m in messages if m["data"].get("failed")]
    assert [f["task"] for f in failed] == ["Check the node is ready", "Fail the run with its message"]
    # the failure as the run recorded it (bluegreen_state fail), in the progress events
    (recorded,) = [m["data"] for m in messages if m["data"].get("type") == "failure"]
    assert (recorded["stage"], recorded["check"], recorded["host"]) == ("validate", "health_ready", "green-1")
    assert recorded["observed"].startswith("node green-1 not ready after 4s")
    run = app.extensions["bluegreen"].db.run(run_id)
    assert (run["status"], run["failure"], run["failed_stage"]) == ("failed", failure, "validate")
    history = operator.get("/history").get_data(as_text=True)
    assert "deploy of 6.6.6 failed in stage validate" in history
    # and a viewer may watch it, too
    client = app.test_client()
    login(client, "victor")
    assert stream(client, f"/runs/{run_id}/events").all()[-1]["data"] == result
