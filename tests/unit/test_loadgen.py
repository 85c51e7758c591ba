"""`bluegreen loadgen` against a real HTTP server (tests/unit/sinkserver.py) that writes a real sink."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest

from bluegreen import loadgen
from bluegreen.loadgen import LoadgenConfig, LoadgenError, run_loadgen
from tests.unit.sinkserver import running_server

BLUEGREEN = [sys.executable, "-m", "bluegreen.cli"]
ROOT = Path(__file__).resolve().parents[2]


def requests_of(out: Path) -> list[dict]:
    lines = (out / "requests.ndjson").read_bytes().splitlines()
    return sorted((orjson.loads(line) for line in lines), key=lambda r: r["seq"])


def summary_of(out: Path) -> dict:
    return orjson.loads((out / "summary.json").read_bytes())


def sink_ids(sink: Path, run_id: str) -> list[str]:
    ids = []
    for f in sink.glob("*.ndjson"):
        for line in f.read_bytes().splitlines():
            entry = orjson.loads(line)
            if entry["id"].startswith(f"{run_id}-"):
                ids.append(entry["id"])
    return ids


def assert_contiguous(recs: list[dict], batch: int) -> None:
    """The records cover seq 0..n-1 exactly once, one batch each."""
    assert [r["seq"] for r in recs] == [i * batch for i in range(len(recs))]
    assert {r["count"] for r in recs} == {batch}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("sink")) as s:
        yield s


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("slow-sink"), "--delay", "0.5") as s:
        yield s


def test_open_loop_sends_on_schedule_and_records_every_request(server, tmp_path):
    out = tmp_path / "run"
    s = run_loadgen(
        LoadgenConfig(
            out=out, urls=[server.url], rate=200, batch=5, duration=0.5, run_id="lg-open", quiet=True
        )
    )

    recs = requests_of(out)
    assert len(recs) == 100  # 200 batches/s for 0.5 s
    assert_contiguous(recs, 5)
    assert {(r["status"], r["kind"], r["served_by"]) for r in recs} == {(200, "ok", "blue-1")}
    starts = sorted(r["t_start"] for r in recs)
    assert 0.45 < starts[-1] - starts[0] < 0.6  # spread over the duration, not sent in a burst
    assert all(r["latency_s"] > 0 for r in recs)

    assert (s.entries, s.sent_entries, s.acked_entries, s.requests) == (500, 500, 500, 100)
    assert s.failed_requests == {}
    assert summary_of(out)["acked_entries"] == 500
    assert summary_of(out)["run_id"] == "lg-open"
    assert s.schedule_lag_s["scheduled_batches"] == 100
    assert s.schedule_lag_s["max"] < 0.05
    assert 190 < s.schedule_lag_s["achieved_batches_per_s"] < 210
    assert s.latency_s["p99"] is not None

    # the server wrote exactly the ids the load generator says it sent
    assert sorted(sink_ids(server.sink, "lg-open")) == sorted(f"lg-open-{i}" for i in range(500))
    assert orjson.loads((out / "run.json").read_bytes())["urls"] == [server.url]


def test_failed_requests_are_classified_by_kind(tmp_path):
    with running_server(tmp_path / "sink", "--fail-every", "3") as srv:
        out = tmp_path / "run"
        s = run_loadgen(LoadgenConfig(out=out, urls=[srv.url], rate=100, batch=4, duration=0.3, quiet=True))
        stats = srv.stats()
    recs = requests_of(out)
    assert_contiguous(recs, 4)
    failed = [r for r in recs if r["kind"] != "ok"]
    assert {(r["kind"], r["status"]) for r in failed} == {("http-503", 503)}
    assert len(failed) == stats["failed"] == 10  # 30 requests, every third refused
    assert s.failed_requests == {"http-503": {"requests": 10, "entries": 40}}
    assert s.acked_entries == 4 * stats["ok"] == len(sink_ids(tmp_path / "sink", s.run_id))


def test_connection_refused_is_a_connect_error_and_exit_1(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "run"
    argv = ["loadgen", "--url", f"http://127.0.0.1:{port}/v1/logs", "--out", str(out)]
    argv += ["--rate", "50", "--duration", "0.2", "--quiet"]
    proc = subprocess.run(
        [*BLUEGREEN, *argv], check=False, cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 1, proc.stderr
    recs = requests_of(out)
    assert len(recs) == 10
    assert {(r["kind"], r["status"]) for r in recs} == {("connect-error", None)}
    assert summary_of(out)["failed_requests"] == {"connect-error": {"requests": 10, "entries": 100}}


def test_backpressure_is_recorded_as_failure_not_skipped(slow_server, tmp_path):
    out = tmp_path / "run"
    s = run_loadgen(
        LoadgenConfig(
            out=out,
            urls=[slow_server.url],
            rate=50,
            batch=2,
            duration=0.2,
            max_inflight=2,
            timeout=5,
            quiet=True,
        )
    )
    recs = requests_of(out)
    assert_contiguous(recs, 2)  # the seqs of refused batches are used up, not skipped
    kinds = [r["kind"] for r in recs]
    assert kinds.count("ok") == 2
    assert kinds.count("client-backpressure") == 8
    assert (s.entries, s.sent_entries, s.acked_entries) == (20, 4, 4)
    assert s.failed_requests == {"client-backpressure": {"requests": 8, "entries": 16}}


def test_timeout_and_unanswered_when_drain_gives_up(slow_server, tmp_path):
    s1 = run_loadgen(
        LoadgenConfig(
            out=tmp_path / "a", urls=[slow_server.url], rate=20, duration=0.1, timeout=0.1, quiet=True
        )
    )
    assert s1.failed_requests == {"timeout": {"requests": 2, "entries": 20}}
    assert {r["status"] for r in requests_of(tmp_path / "a")} == {None}

    s2 = run_loadgen(
        LoadgenConfig(
            out=tmp_path / "b",
            urls=[slow_server.url],
            rate=20,
            duration=0.1,
            timeout=5,
            drain_timeout=0.05,
            quiet=True,
        )
    )
    assert s2.failed_requests == {"unanswered": {"requests": 2, "entries": 20}}
    assert s2.elapsed_s < 0.4  # did not wait for the 0.5 s answers


def test_closed_loop_uses_the_same_recording(server, tmp_path):
    out = tmp_path / "run"
    s = run_loadgen(
        LoadgenConfig(
            out=out, urls=[server.url], closed_loop=True, concurrency=4, batch=50, duration=0.3, quiet=True
        )
    )
    recs = requests_of(out)
    assert len(recs) == s.requests > 8
    assert_contiguous(recs, 50)
    assert {r["kind"] for r in recs} == {"ok"}
    assert s.mode == "closed-loop"
    assert s.schedule_lag_s == {}
    assert s.acked_entries == 50 * len(recs)
    assert s.throughput["acked_entries_per_s"] > 0


def test_stop_event_ends_an_open_ended_run(server, tmp_path):
    stop = threading.Event()
    result = {}
    t = threading.Thread(
        target=lambda: result.update(
            s=run_loadgen(LoadgenConfig(out=tmp_path / "run", urls=[server.url], rate=100, quiet=True), stop)
        )
    )
    t.start()
    time.sleep(0.4)
    stop.set()
    t.join(timeout=5)
    assert not t.is_alive()
    s = result["s"]
    assert s.stopped_by == "stop"
    assert s.requests == len(requests_of(tmp_path / "run")) > 20
    assert s.failed_requests == {}


def test_sigterm_stops_scheduling_drains_and_writes_summary(server, tmp_path):
    out = tmp_path / "run"
    argv = ["loadgen", "--url", server.url, "--rate", "200", "--out", str(out), "--run-id", "lg-sig"]
    proc = subprocess.Popen([*BLUEGREEN, *argv], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        requests = out / "requests.ndjson"
        deadline = time.monotonic() + 10
        while not (requests.exists() and requests.stat().st_size > 0):  # flushed while running
            assert time.monotonic() < deadline, "requests.ndjson never got a line"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err
    assert "sent" in err and "p99" in err  # the progress line
    s = summary_of(out)
    assert s["stopped_by"] == "SIGTERM"
    recs = requests_of(out)
    assert_contiguous(recs, 10)
    assert len(recs) == s["requests"]
    assert s["acked_entries"] == s["entries"] == len(sink_ids(server.sink, "lg-sig"))


def test_bad_arguments_and_reused_out_dir_exit_2(server, tmp_path, capsys):
    from bluegreen.cli import main  # noqa: PLC0415

    out = tmp_path / "run"
    (out).mkdir()
    (out / "requests.ndjson").write_text("")
    assert main(["loadgen", "--url", server.url, "--out", str(out), "--duration", "0.1", "--quiet"]) == 2
    assert "requests.ndjson exists" in capsys.readouterr().err
    assert main(["loadgen", "--out", str(tmp_path / "x"), "--run-id", "no spaces"]) == 2
    assert "--run-id" in capsys.readouterr().err
    with pytest.raises(LoadgenError, match="--rate"):
        run_loadgen(LoadgenConfig(out=tmp_path / "y", rate=0))
    assert loadgen.__doc__ and "open loop" in loadgen.__doc__.lower()


def free_port_url() -> str:
    """A loopback URL where nothing listens (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/v1/logs"


@pytest.fixture(scope="module")
def two_lbs(tmp_path_factory):
    """Two independent servers, each with its own sink and name, standing in for two load balancers."""
    with (
        running_server(tmp_path_factory.mktemp("lb1-sink"), node="lb-1") as a,
        running_server(tmp_path_factory.mktemp("lb2-sink"), node="lb-2") as b,
    ):
        yield a, b


def test_several_urls_get_the_requests_round_robin(two_lbs, tmp_path):
    from bluegreen.cli import main  # noqa: PLC0415
    from bluegreen.verify import verify  # noqa: PLC0415

    a, b = two_lbs
    out = tmp_path / "run"
    argv = ["loadgen", "--url", a.url, "--url", b.url, "--out", str(out), "--run-id", "lg-two"]
    assert main([*argv, "--rate", "200", "--batch", "5", "--duration", "0.5", "--quiet"]) == 0

    recs = requests_of(out)
    assert len(recs) == 100
    assert_contiguous(recs, 5)
    # per request, in schedule order: batch k went to URL k mod 2, and that server answered it
    assert [r["url"] for r in recs] == [a.url, b.url] * 50
    assert all(r["served_by"] == ("lb-1" if r["url"] == a.url else "lb-2") for r in recs)
    assert {r["kind"] for r in recs} == {"ok"}

    s = summary_of(out)
    assert s["urls"] == [a.url, b.url]
    assert orjson.loads((out / "run.json").read_bytes())["urls"] == [a.url, b.url]
    one_half = {"requests": 50, "ok_requests": 50, "failed_requests": 0, "acked_entries": 250}
    assert s["by_url"] == {a.url: one_half, b.url: one_half}
    assert s["served_by"] == {"lb-1": 50, "lb-2": 50}

    # each server holds exactly its half of the ids: even batches on the first, odd on the second
    assert sorted(sink_ids(a.sink, "lg-two")) == sorted(f"lg-two-{i}" for i in range(500) if i // 5 % 2 == 0)
    assert sorted(sink_ids(b.sink, "lg-two")) == sorted(f"lg-two-{i}" for i in range(500) if i // 5 % 2 == 1)

    # bluegreen verify finds every acked id across both sinks and counts the requests per URL
    report = verify([out], [str(a.sink), str(b.sink)])
    assert report["verdict"] == "PASS", report["reasons"]
    assert (report["acked_entries"], report["lost"]) == (500, 0)
    assert report["runs"][0]["urls"] == [a.url, b.url]
    assert report["requests_by_url"] == {a.url: 50, b.url: 50}
    assert report["failed_requests_by_url"] == {}


def test_an_unreachable_url_costs_exactly_its_share(two_lbs, tmp_path, capsys):
    from bluegreen.cli import main  # noqa: PLC0415

    a, _ = two_lbs
    dead = free_port_url()
    out = tmp_path / "run"
    s = run_loadgen(LoadgenConfig(out=out, urls=[a.url, dead], rate=100, batch=4, duration=0.4, quiet=True))

    assert s.requests == 40
    assert s.by_url[a.url] == {"requests": 20, "ok_requests": 20, "failed_requests": 0, "acked_entries": 80}
    assert s.by_url[dead] == {"requests": 20, "ok_requests": 0, "failed_requests": 20, "acked_entries": 0}
    assert s.failed_requests == {"connect-error": {"requests": 20, "entries": 80}}
    assert {r["url"] for r in requests_of(out) if r["kind"] == "connect-error"} == {dead}

    # verify: nothing acked is lost, the failures are counted against the dead URL, exit 1
    assert main(["verify", "--run", str(out), "--sinks", str(a.sink)]) == 1
    text = capsys.readouterr().out
    assert "requests by url" in text
    assert f"{dead}" in text and "20  (20 failed)" in text
    assert re.search(r"LOST \(acked, in no sink\)\s+0\n", text)
    assert "FAIL: 20 failed requests (connect-error: 20)" in text


def test_a_stalled_url_does_not_hold_the_other_urls_connections(tmp_path):
    """--connections is per URL: requests to a healthy lb never wait for a connection a stalled lb holds."""
    with (
        running_server(tmp_path / "fast", node="lb-1") as fast,
        running_server(tmp_path / "slow", "--delay", "1.5", node="lb-2") as slow,
    ):
        s = run_loadgen(
            LoadgenConfig(
                out=tmp_path / "run",
                urls=[slow.url, fast.url],
                rate=20,
                batch=2,
                duration=0.5,
                connections=2,
                timeout=10,
                quiet=True,
            )
        )
    assert s.failed_requests == {}
    fast_latencies = [r["latency_s"] for r in requests_of(tmp_path / "run") if r["url"] == fast.url]
    assert len(fast_latencies) == 5
    # sharing 2 connections with the stalled one, they would have waited ~1.4 s or more for a free one
    assert max(fast_latencies) < 1.0


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ("ftp://127.0.0.1/v1/logs", "must be an http:// or https:// URL"),
        ("http:///v1/logs", "names no host"),
        ("http://127.0.0.1:99999/v1/logs", "cannot be parsed"),
        ("http://127.0.0.1:8080/v1/ logs", "contains white space"),
        ("http://127.0.0.1:0/v1/logs", "port 0"),
    ],
)
def test_a_bad_url_among_several_is_refused_by_name(two_lbs, tmp_path, capsys, bad, problem):
    from bluegreen.cli import main  # noqa: PLC0415

    a, b = two_lbs
    out = tmp_path / "run"
    before = a.stats()["requests"], b.stats()["requests"]
    assert (
        main(
            [
                "loadgen",
                "--url",
                a.url,
                "--url",
                bad,
                "--url",
                b.url,
                "--out",
                str(out),
                "--duration",
                "0.2",
                "--quiet",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert f"--url {bad!r}: {problem}" in err
    assert not out.exists()  # refused before anything was written or sent
    assert (a.stats()["requests"], b.stats()["requests"]) == before


def test_a_url_given_twice_is_refused(two_lbs, tmp_path):
    a, b = two_lbs
    with pytest.raises(LoadgenError, match=r"given twice"):
        run_loadgen(LoadgenConfig(out=tmp_path / "run", urls=[a.url, b.url, a.url], duration=0.1))
    with pytest.raises(LoadgenError, match="not one string"):
        run_loadgen(LoadgenConfig(out=tmp_path / "run", urls=a.url, duration=0.1))
    with pytest.raises(LoadgenError, match="at least one URL"):
        run_loadgen(LoadgenConfig(out=tmp_path / "run", urls=[], duration=0.1))
    assert not (tmp_path / "run").exists()
