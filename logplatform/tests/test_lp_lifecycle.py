"""Process lifecycle of the real service: graceful drain on SIGTERM, start-up, fault injection."""

from __future__ import annotations

import asyncio
import collections
import re
import resource
import signal
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
from lp_helpers import Service, entry

Start = Callable[..., Service]


def counts_from_log(log: str) -> dict[str, int]:
    match = re.search(r"stopped: (.*)", log)
    assert match, log
    return {k: int(v) for k, v in (pair.split("=") for pair in match.group(1).split())}


async def post(session: aiohttp.ClientSession, svc: Service, entries: list[dict[str, Any]]) -> int:
    async with session.post(f"http://127.0.0.1:{svc.port}/v1/logs", json=entries) as resp:
        await resp.read()
        return resp.status


def test_sigterm_mid_stream_loses_no_acknowledged_entry(start_service: Start) -> None:
    svc = start_service(drain_grace_seconds=0.6, shutdown_timeout_seconds=5.0)
    # (time the request was sent, ids) of each batch answered 200. The send time, not the answer's: the
    # event loop may run a client's answer, read before the exit, after the waiter thread's return
    # took `exited_at` (seen under load in CI)
    acked: list[tuple[float, list[str]]] = []
    failures: collections.Counter[str] = collections.Counter()
    readiness: list[tuple[float, int, str]] = []
    stop = asyncio.Event()

    async def client(n: int) -> None:
        # Each client: its own session with one keep-alive connection, batches back to back.
        connector = aiohttp.TCPConnector(limit=1)
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            seq = 0
            while not stop.is_set():
                batch = [entry(i, id=f"c{n}-{seq}-{i}") for i in range(20)]
                seq += 1
                sent_at = time.monotonic()
                try:
                    status = await post(session, svc, batch)
                except aiohttp.ClientError as exc:
                    failures[type(exc).__name__] += 1
                    await asyncio.sleep(0.01)
                    continue
                if status == 200:
                    acked.append((sent_at, [e["id"] for e in batch]))
                else:
                    failures[f"http {status}"] += 1

    async def poll_ready() -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while not stop.is_set():
                try:
                    async with session.get(f"http://127.0.0.1:{svc.port}/health/ready") as resp:
                        readiness.append((time.monotonic(), resp.status, (await resp.json())["status"]))
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)

    async def scenario() -> tuple[float, float, int]:
        tasks = [asyncio.create_task(client(n)) for n in range(8)]
        tasks.append(asyncio.create_task(poll_ready()))
        await asyncio.sleep(0.8)
        sigterm_at = time.monotonic()
        svc.terminate()
        code = await asyncio.to_thread(svc.wait_exit, 20)
        exited_at = time.monotonic()
        await asyncio.sleep(0.2)  # the clients keep trying against the closed port meanwhile
        stop.set()
        await asyncio.gather(*tasks)
        return sigterm_at, exited_at, code

    sigterm_at, exited_at, code = asyncio.run(scenario())

    assert code == 0, svc.log()
    acked_ids = [i for _, ids in acked for i in ids]
    sink_ids = svc.sink_ids()
    assert len(acked) > 20, "the stream did not get going"
    # The promise: every id answered 200 is in the sink, once.
    assert set(acked_ids) <= set(sink_ids)
    assert len(sink_ids) == len(set(sink_ids))
    # Draining kept serving: 200s after SIGTERM, after the health check already said "draining".
    draining_seen = [t for t, status, state in readiness if status == 503 and state == "draining"]
    assert draining_seen, readiness
    assert any(t > draining_seen[0] for t, _ in acked)
    assert all(status == 200 for t, status, _ in readiness if t < sigterm_at)
    # Nothing sent after the process was gone was answered 200; later attempts failed to connect.
    assert all(t <= exited_at for t, _ in acked)
    assert failures, "clients should have seen the closed listener"
    # The server's own accounting matches the sink exactly.
    counts = counts_from_log(svc.log())
    assert counts["entries_accepted"] == len(sink_ids)
    assert counts["batches_ok"] >= len(acked)
    log = svc.log()
    assert log.index("received SIGTERM") < log.index("draining") < log.index("closing the listener")
    assert log.index("closing the listener") < log.index("stopped:")


def test_in_flight_requests_finish_after_the_listener_closed(start_service: Start) -> None:
    svc = start_service(
        drain_grace_seconds=0.0, shutdown_timeout_seconds=5.0, fault={"extra_latency_ms": 700}
    )
    batches = [[entry(i, id=f"slow-{n}-{i}") for i in range(5)] for n in range(4)]

    async def one(batch: list[dict[str, Any]]) -> int:
        async with aiohttp.ClientSession() as session:
            return await post(session, svc, batch)

    async def scenario() -> tuple[list[int], bool, int]:
        pending = [asyncio.create_task(one(b)) for b in batches]
        await asyncio.sleep(0.25)  # all four are inside the handler, sleeping
        svc.terminate()
        await asyncio.sleep(0.2)
        try:  # the listener is closed while the four are still in flight
            socket.create_connection(("127.0.0.1", svc.port), timeout=1).close()
            refused = False
        except ConnectionRefusedError:
            refused = True
        statuses = await asyncio.gather(*pending)
        code = await asyncio.to_thread(svc.wait_exit, 20)
        return statuses, refused, code

    statuses, refused, code = asyncio.run(scenario())
    assert statuses == [200, 200, 200, 200]
    assert refused
    assert code == 0
    assert set(svc.sink_ids()) == {e["id"] for b in batches for e in b}
    assert "waiting up to 5.0s for 4 in-flight request(s)" in svc.log()


def test_requests_beyond_shutdown_timeout_are_cut_never_acknowledged(start_service: Start) -> None:
    svc = start_service(
        drain_grace_seconds=0.0, shutdown_timeout_seconds=0.5, fault={"extra_latency_ms": 5000}
    )
    batch = [entry(0)]

    async def scenario() -> tuple[int | str, int, float]:
        async with aiohttp.ClientSession() as session:
            task = asyncio.create_task(post(session, svc, batch))
            await asyncio.sleep(0.3)
            began = time.monotonic()
            svc.terminate()
            code = await asyncio.to_thread(svc.wait_exit, 20)
            took = time.monotonic() - began
            try:
                result: int | str = await task
            except aiohttp.ClientError as exc:
                result = type(exc).__name__
            return result, code, took

    result, code, took = asyncio.run(scenario())
    assert result != 200
    assert code == 0
    assert took < 3.0  # bounded by shutdown_timeout_seconds, not by the 5 s request
    assert svc.sink_ids() == []


def test_sigint_is_a_clean_stop_too(start_service: Start) -> None:
    svc = start_service()
    batch = [entry(i) for i in range(3)]
    assert svc.post_json(batch).status == 200
    svc.proc.send_signal(signal.SIGINT)
    assert svc.wait_exit(10) == 0
    assert "received SIGINT" in svc.log()
    assert counts_from_log(svc.log())["entries_accepted"] == 3
    assert svc.sink_ids() == [e["id"] for e in batch]


def test_sigquit_stops_without_the_drain_grace_and_loses_nothing(start_service: Start) -> None:
    # the controller's restart of an idle node: no load balancer routes to it, so no grace to wait
    svc = start_service(drain_grace_seconds=30.0, shutdown_timeout_seconds=5.0)
    assert svc.get("/version").json()["quick_stop"] == "SIGQUIT"
    batch = [entry(i) for i in range(5)]
    assert svc.post_json(batch).status == 200
    started = time.monotonic()
    svc.proc.send_signal(signal.SIGQUIT)
    assert svc.wait_exit(20) == 0
    assert time.monotonic() - started < 15  # the 30 s grace was skipped
    assert "received SIGQUIT" in svc.log()
    assert "still serving for 0.00s" in svc.log()
    assert counts_from_log(svc.log())["entries_accepted"] == 5
    assert svc.sink_ids() == [e["id"] for e in batch]


def test_sigquit_during_the_grace_cuts_it_short(start_service: Start) -> None:
    svc = start_service(drain_grace_seconds=30.0, shutdown_timeout_seconds=5.0)
    started = time.monotonic()
    svc.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    while "draining:" not in svc.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "still serving for 30.00s" in svc.log()
    svc.proc.send_signal(signal.SIGQUIT)
    assert svc.wait_exit(20) == 0
    assert time.monotonic() - started < 15
    assert "stopped:" in svc.log()


def test_restart_repairs_a_partial_line_and_appends(start_service: Start, tmp_path: Any) -> None:
    sink_dir = tmp_path / "shared-sink"
    sink_dir.mkdir()
    today = datetime.now(UTC).date().isoformat()
    path = sink_dir / f"blue-1-{today}.ndjson"
    path.write_bytes(b'{"id":"old-1"}\n{"id":"old-2","message":"cut sho')
    svc = start_service(sink_dir=str(sink_dir))
    assert "dropped 32 bytes" in svc.log()
    batch = [entry(0)]
    assert svc.post_json(batch).status == 200
    assert svc.sink_ids() == ["old-1", batch[0]["id"]]


def test_start_log_line(start_service: Start) -> None:
    svc = start_service()
    line = next(line for line in svc.log().splitlines() if "start:" in line)
    for part in ("version=", "color=blue", "node=blue-1", f"listen=127.0.0.1:{svc.port}", "config_digest="):
        assert part in line
    assert "ready: listening on" in svc.log()


def test_port_in_use_exits_1(start_service: Start) -> None:
    first = start_service()
    second = start_service(wait="none", listen_port=first.port)
    assert second.wait_exit(15) == 1
    assert f"cannot listen on 127.0.0.1:{first.port}" in second.log()
    assert first.get("/health/ready").status == 200


def test_bad_config_exits_2_naming_the_key(start_service: Start) -> None:
    svc = start_service(wait="none", listen_port_typo=1)
    assert svc.wait_exit(15) == 2
    assert "listen_port_typo" in svc.log()


# -- TEST-ONLY fault injection -----------------------------------------------------------------


def test_fault_crash_on_start_exits_3(start_service: Start) -> None:
    svc = start_service(wait="none", fault={"crash_on_start": True})
    assert svc.wait_exit(15) == 3
    assert "crash_on_start" in svc.log()
    assert "ready" not in svc.log().replace("before ready", "")


def test_fault_never_ready_serves_but_stays_503(start_service: Start) -> None:
    svc = start_service(wait="listening", fault={"never_ready": True})
    ready = svc.get("/health/ready")
    assert (ready.status, ready.json()) == (503, {"status": "not-ready"})
    assert svc.get("/health/live").status == 200
    assert svc.post_json([entry(0)]).status == 200


def test_fault_error_rate_answers_500_and_writes_nothing(start_service: Start) -> None:
    svc = start_service(fault={"error_rate": 1.0})
    resp = svc.post_json([entry(0), entry(1)])
    assert resp.status == 500
    assert "fault" in resp.json()["error"]
    assert svc.sink_lines() == []
    assert b'logplatform_batches_total{result="error"} 1.0' in svc.get("/metrics").body


def test_fault_report_version_and_extra_latency(start_service: Start) -> None:
    svc = start_service(fault={"report_version": "9.9.9", "extra_latency_ms": 300})
    assert svc.get("/version").json()["version"] == "9.9.9"
    began = time.monotonic()
    assert svc.post_json([entry(0)]).status == 200
    assert time.monotonic() - began >= 0.3
    assert svc.sink_lines()[0]["_version"] == "9.9.9"
    assert b'version="9.9.9"' in svc.get("/metrics").body


def test_default_limits_take_10000_entries_and_refuse_more(start_service: Start) -> None:
    svc = start_service()  # default max_body_bytes (8 MiB) and max_batch_entries (10000)
    batch = [entry(i, message="m" * 100) for i in range(10_000)]  # about 2 MB, over aiohttp's 1 MiB default
    resp = svc.post_json(batch)
    assert (resp.status, resp.json()) == (200, {"accepted": 10_000})
    too_many = [*batch[:9_999], entry(1), entry(2)]
    resp = svc.post_json(too_many)
    assert resp.status == 413
    assert "10000" in resp.json()["error"]
    assert len(svc.sink_lines()) == 10_000


def test_fault_error_after_requests_serves_the_first_batches_then_500(start_service: Start) -> None:
    svc = start_service(fault={"error_rate": 1.0, "error_after_requests": 2})
    statuses = [svc.post_json([entry(n, id=f"after-{n}")]).status for n in range(4)]
    assert statuses == [200, 200, 500, 500]
    assert sorted(line["id"] for line in svc.sink_lines()) == ["after-0", "after-1"]


def test_fault_lose_writes_acks_and_writes_nothing(start_service: Start) -> None:
    svc = start_service(fault={"lose_writes": True})
    resp = svc.post_json([entry(0), entry(1)])
    assert (resp.status, resp.json()) == (200, {"accepted": 2})
    assert svc.sink_lines() == []


def wait_ready_status(svc: Service, status: int, timeout: float = 15.0) -> dict[str, Any]:
    """Poll /health/ready (and nothing else: no batch is sent) until it answers ``status``."""
    deadline = time.monotonic() + timeout
    while True:
        resp = svc.get("/health/ready")
        if resp.status == status:
            return resp.json()
        assert time.monotonic() < deadline, f"/health/ready stayed {resp.status} {resp.body!r}"
        time.sleep(0.1)


def test_failing_sink_makes_the_node_unready_until_its_sink_writes_again(start_service: Start) -> None:
    """A real OS error: the node's file size limit (RLIMIT_FSIZE, set from outside with prlimit) stops
    the sink file from growing, so writes fail with EFBIG like on a full disk. While commits fail the
    node says 503 on /health/ready (the lb stops sending it traffic); once the sink can write again it
    turns ready by itself, with no batch sent meanwhile."""
    svc = start_service()
    first = [entry(0)]
    assert svc.post_json(first).status == 200
    (sink_file,) = svc.sink_dir.glob("*.ndjson")
    unlimited = resource.RLIM_INFINITY
    resource.prlimit(svc.proc.pid, resource.RLIMIT_FSIZE, (sink_file.stat().st_size, unlimited))
    try:
        lost = [entry(1), entry(2)]
        resp = svc.post_json(lost)
        assert resp.status == 500
        assert "sink write failed" in resp.json()["error"]
        ready = wait_ready_status(svc, 503, timeout=5)
        assert ready["status"] == "sink-failing"
        assert "File too large" in ready["reason"]
        assert b"logplatform_ready 0.0" in svc.get("/metrics").body
        time.sleep(3)  # several probes meanwhile: the sink still cannot grow, so still not ready
        assert svc.get("/health/ready").status == 503
    finally:
        resource.prlimit(svc.proc.pid, resource.RLIMIT_FSIZE, (unlimited, unlimited))
    assert wait_ready_status(svc, 200) == {"status": "ready"}
    assert b"logplatform_ready 1.0" in svc.get("/metrics").body
    last = [entry(3)]
    assert svc.post_json(last).status == 200
    assert svc.sink_ids() == [first[0]["id"], last[0]["id"]]  # whole lines, nothing of the failed batch
    assert "sink: writes work again" in svc.log()
