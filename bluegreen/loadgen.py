"""Send steady, sequence-numbered log traffic and record the answer to every request.

Open loop (the default): a schedule starts one batch every 1/--rate seconds, whatever earlier batches
are doing, so a slow or stalled service shows up as latency and failures, not as a quietly lower
rate. At most --max-inflight requests are outstanding; a batch the schedule cannot start because of
that bound is recorded as a failed request of kind `client-backpressure`, never skipped. How late the
schedule started its batches is measured and reported (schedule_lag_s in summary.json).

Closed loop (--closed-loop --concurrency N, for benchmarks): N workers each send the next batch as
soon as the previous answer arrives; the same sending and recording code is used.

Several load balancers: --url may be given more than once. Requests go round-robin, per request, in
schedule order: the batch that starts at seq s goes to URL number (s / --batch) mod (number of URLs),
so every URL gets the same share (within one request) whatever the answers, and an unreachable one
costs exactly its share as failed requests. Each URL has its own --connections keep-alive connections
(a stalled lb cannot hold the others' connections). Each request line names its URL; run.json and
summary.json list every URL (`urls`), and summary.json counts requests per URL (`by_url`).

Every entry gets the id <run-id>-<seq> (seq from 0, contiguous over the run). Nothing is retried.
The run directory (--out) receives run.json at the start, requests.ndjson (one line per request,
flushed at least every second, so a killed run still leaves its evidence) and summary.json at the end;
`bluegreen verify --run DIR` checks them against the sinks.

SIGINT/SIGTERM stop the schedule, wait up to --drain-timeout for the answers in flight, write the
results and exit; a second signal stops waiting. Exit status: 0 when every request was acked, 1 when
any request failed, 2 on bad arguments or an unusable --out directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import errno
import math
import os
import secrets
import signal
import sys
import threading
import time
import urllib.parse
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bluegreen.evidence import (
    REQUESTS_FILE,
    RUN_FILE,
    RUN_ID_RE,
    SERVED_BY_HEADERS,
    SUMMARY_FILE,
    write_atomic,
)

DEFAULT_URL = "http://127.0.0.1:8080/v1/logs"
PROGRESS_INTERVAL_S = 1.0
FLUSH_INTERVAL_S = 0.5
_TICK_S = 0.1  # how often stop requests (signals, threading.Event) and the deadline are looked at
_LATE_S = 0.010  # a batch started this much after its slot counts as "late" in the summary
_MIN_SLEEP_S = 0.001  # event-loop timers have 1 ms resolution: below it, wake up and send what is due
# uvloop's loop.time() is cached per iteration with 1 ms resolution: latencies need a finer clock
_now = time.perf_counter


class LoadgenError(Exception):
    """Bad configuration or an unusable output directory (CLI exit status 2)."""


def url_problem(url: str) -> str | None:
    """Why `url` cannot be an ingest URL (None when it can): http(s), a host, a valid port, no blanks."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        return "must be an http:// or https:// URL"
    if any(c.isspace() for c in url):
        return "contains white space"
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"cannot be parsed: {exc}"
    if not parts.hostname:
        return "names no host"
    return "port 0 is not a port to send to" if port == 0 else None


@dataclass
class LoadgenConfig:
    """What to send, where, and how fast. Mirrors the command-line options."""

    out: Path
    urls: Sequence[str] = (DEFAULT_URL,)  # several: requests go round-robin over them
    rate: float = 200.0
    batch: int = 10
    connections: int = 16
    duration: float | None = None
    run_id: str | None = None
    timeout: float = 10.0
    max_inflight: int = 512
    drain_timeout: float = 15.0
    closed_loop: bool = False
    concurrency: int = 16
    service: str = "loadgen"
    quiet: bool = False

    def validate(self) -> None:
        if self.run_id is not None and not RUN_ID_RE.match(self.run_id):
            raise LoadgenError(f"--run-id {self.run_id!r}: use 1-64 of [A-Za-z0-9._-], starting alnum")
        if isinstance(self.urls, str):
            raise LoadgenError(f"urls {self.urls!r}: give a list of URLs, not one string")
        if not self.urls:
            raise LoadgenError("--url: give at least one URL")
        seen: set[str] = set()
        for url in self.urls:
            problem = url_problem(url)
            if problem:
                raise LoadgenError(f"--url {url!r}: {problem}")
            if url in seen:
                raise LoadgenError(f"--url {url!r} is given twice: name each load balancer once")
            seen.add(url)
        checks = [
            (self.rate > 0, "--rate must be > 0"),
            (self.batch >= 1, "--batch must be >= 1"),
            (self.connections >= 1, "--connections must be >= 1"),
            (self.duration is None or self.duration > 0, "--duration must be > 0"),
            (self.timeout > 0, "--timeout must be > 0"),
            (self.max_inflight >= 1, "--max-inflight must be >= 1"),
            (self.drain_timeout >= 0, "--drain-timeout must be >= 0"),
            (self.concurrency >= 1, "--concurrency must be >= 1"),
            (bool(RUN_ID_RE.match(self.service)), "--service: use [A-Za-z0-9._-]"),
        ]
        for ok, message in checks:
            if not ok:
                raise LoadgenError(message)


@dataclass
class LoadgenSummary:
    """The run's figures; written as summary.json."""

    run_id: str
    mode: str
    urls: list[str]
    rate: float | None
    batch: int
    connections: int
    max_inflight: int
    concurrency: int | None
    timeout_s: float
    started: float
    ended: float
    elapsed_s: float
    stopped_by: str
    requests: int
    entries: int  # ids assigned (contiguous seq 0..entries-1), including batches never sent
    sent_entries: int  # entries of requests put on the wire
    acked_entries: int  # entries of requests answered 200
    ok_requests: int
    failed_requests: dict[str, dict[str, int]]  # kind -> {"requests": n, "entries": m}
    latency_s: dict[str, float | None]  # over requests that got an HTTP answer
    schedule_lag_s: dict[str, float | int | None]  # open loop: start time minus scheduled slot
    throughput: dict[str, float]
    served_by: dict[str, int]
    by_url: dict[
        str, dict[str, int]
    ]  # url -> {"requests", "ok_requests", "failed_requests", "acked_entries"}
    out: str = ""
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def failed_request_count(self) -> int:
        return sum(v["requests"] for v in self.failed_requests.values())

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def percentile(sorted_values: Any, q: float) -> float | None:
    """Nearest-rank percentile of an already sorted sequence (None when empty)."""
    n = len(sorted_values)
    if n == 0:
        return None
    return float(sorted_values[min(n - 1, max(0, math.ceil(q * n) - 1))])


def _dist(values: Any) -> dict[str, float | None]:
    s = sorted(values)
    return {
        "p50": percentile(s, 0.50),
        "p90": percentile(s, 0.90),
        "p99": percentile(s, 0.99),
        "max": float(s[-1]) if s else None,
        "mean": (math.fsum(s) / len(s)) if s else None,
    }


class _Run:
    """One load-generator run: the sender, the schedules, the recorder, the progress line."""

    def __init__(self, cfg: LoadgenConfig, run_id: str, stop: threading.Event | None) -> None:
        self.cfg = cfg
        self.run_id = run_id
        self.external_stop = stop
        self.loop = asyncio.get_running_loop()
        self.next_seq = 0
        self.inflight = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.stopping = False
        self.stopped_by = "duration" if cfg.duration else "stop"
        self.hard_stop = asyncio.Event()
        self.schedule_start = self.schedule_end = 0.0
        # recording
        self.pending: list[bytes] = []
        self.requests_file = (cfg.out / REQUESTS_FILE).open("xb")
        # figures
        self.requests = 0
        self.ok_requests = 0
        self.sent_entries = 0
        self.acked_entries = 0
        self.failed: dict[str, list[int]] = {}
        self.latencies = array("d")
        self.lags = array("d")
        self.served_by: Counter[str] = Counter()
        self.urls = tuple(cfg.urls)
        # url -> [requests, ok requests, failed requests, acked entries]
        self.by_url: dict[str, list[int]] = {url: [0, 0, 0, 0] for url in self.urls}
        self.window_latencies: list[float] = []
        self.window_requests = 0
        self.window_lag_max = 0.0
        self.mono0 = _now()
        self.unix0 = time.time()
        # body template: one entry, "%d" placeholders for the seq; ts and message are per batch
        self.entry_tmpl = (
            b'{"ts":%.6f,"level":"info","service":"'
            + cfg.service.encode()
            + b'","message":"loadgen run '
            + run_id.encode()
            + b' seq %d","id":"'
            + run_id.encode()
            + b'-%d"}'
        )

    # --- building and sending -------------------------------------------------------------------

    def allocate(self) -> int:
        seq = self.next_seq
        self.next_seq += self.cfg.batch
        return seq

    def url_of(self, seq: int) -> str:
        """The URL of the batch starting at `seq`: round-robin over the URLs in schedule order."""
        return self.urls[(seq // self.cfg.batch) % len(self.urls)]

    def body(self, seq: int, count: int, ts: float) -> bytes:
        tmpl = self.entry_tmpl
        return b"[" + b",".join([tmpl % (ts, s, s) for s in range(seq, seq + count)]) + b"]"

    async def send(self, session: aiohttp.ClientSession, seq: int, count: int) -> None:
        """Send one batch, classify the outcome, record one line. Never raises except cancellation."""
        t0 = _now()
        t_unix = self.unix0 + (t0 - self.mono0)
        url = self.url_of(seq)
        status: int | None = None
        served_by: str | None = None
        self.inflight += 1
        self.sent_entries += count
        try:
            async with session.post(url, data=self.body(seq, count, t_unix)) as resp:
                status = resp.status
                served_by = _served_by(resp.headers)
                raw = await resp.read()
            kind = f"http-{status}"
            if status == 200:
                kind = "ok" if _accepted(raw) == count else "bad-ack"
        except asyncio.CancelledError:
            self.record(
                seq,
                count,
                t_unix,
                _now() - t0,
                status=status,
                kind="unanswered",
                served_by=served_by,
                url=url,
            )
            raise
        except Exception as exc:  # every failure is evidence: classified, recorded, never raised
            kind = _classify(exc)
        finally:
            self.inflight -= 1
        self.record(seq, count, t_unix, _now() - t0, status=status, kind=kind, served_by=served_by, url=url)

    def record(
        self,
        seq: int,
        count: int,
        t_unix: float,
        latency: float,
        *,
        status: int | None,
        kind: str,
        served_by: str | None,
        url: str,
    ) -> None:
        self.pending.append(
            orjson.dumps(
                {
                    "seq": seq,
                    "count": count,
                    "t_start": round(t_unix, 6),
                    "latency_s": round(latency, 6),
                    "status": status,
                    "kind": kind,
                    "served_by": served_by,
                    "url": url,
                }
            )
            + b"\n"
        )
        per_url = self.by_url[url]
        per_url[0] += 1
        if status == 200:
            per_url[3] += count
        per_url[1 if kind == "ok" else 2] += 1
        self.requests += 1
        self.window_requests += 1
        if status is not None:
            self.latencies.append(latency)
            self.window_latencies.append(latency)
        if status == 200:
            self.acked_entries += count
        if kind == "ok":
            self.ok_requests += 1
        else:
            f = self.failed.setdefault(kind, [0, 0])
            f[0] += 1
            f[1] += count
        if served_by is not None:
            self.served_by[served_by] += 1

    # --- schedules --------------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def open_loop(self, session: aiohttp.ClientSession) -> None:
        cfg = self.cfg
        interval = 1.0 / cfg.rate
        t0 = self.schedule_start = _now()
        end = t0 + cfg.duration if cfg.duration else math.inf
        i = 0
        while not self.stopping:
            self.schedule_end = _now()
            due = t0 + i * interval
            if due >= end:
                break
            now = _now()
            if due > now:
                await asyncio.sleep(max(_MIN_SLEEP_S, min(due - now, _TICK_S)))
                continue
            lag = now - due
            self.lags.append(lag)
            self.window_lag_max = max(self.window_lag_max, lag)
            seq = self.allocate()
            if self.inflight >= cfg.max_inflight:
                t_unix = self.unix0 + (now - self.mono0)
                self.record(
                    seq,
                    cfg.batch,
                    t_unix,
                    0.0,
                    status=None,
                    kind="client-backpressure",
                    served_by=None,
                    url=self.url_of(seq),
                )
            else:
                self._spawn(self.send(session, seq, cfg.batch))
            i += 1
            if i % 64 == 0:  # when catching up, let answers be processed too
                await asyncio.sleep(0)

    async def closed_loop(self, session: aiohttp.ClientSession) -> None:
        cfg = self.cfg
        end = _now() + cfg.duration if cfg.duration else math.inf

        async def worker() -> None:
            while not self.stopping and _now() < end:
                await self.send(session, self.allocate(), cfg.batch)

        workers = [self.loop.create_task(worker()) for _ in range(cfg.concurrency)]
        for w in workers:
            self.tasks.add(w)
            w.add_done_callback(self.tasks.discard)
        await asyncio.gather(*workers, return_exceptions=True)

    # --- housekeeping -----------------------------------------------------------------------------

    def request_stop(self, by: str) -> None:
        if self.stopping:
            self.hard_stop.set()
            return
        self.stopping = True
        self.stopped_by = by

    def flush(self) -> None:
        if self.pending:
            data = b"".join(self.pending)
            self.pending.clear()
            self.requests_file.write(data)
        self.requests_file.flush()

    async def ticker(self) -> None:
        last_flush = last_progress = _now()
        while True:
            await asyncio.sleep(_TICK_S)
            if self.external_stop is not None and self.external_stop.is_set():
                self.request_stop("stop")
            now = _now()
            if now - last_flush >= FLUSH_INTERVAL_S:
                self.flush()
                last_flush = now
            if now - last_progress >= PROGRESS_INTERVAL_S:
                self.progress(now - last_progress)
                last_progress = now

    def progress(self, window: float) -> None:
        lat = sorted(self.window_latencies)
        p99 = percentile(lat, 0.99)
        if not self.cfg.quiet:
            failed = sum(v[0] for v in self.failed.values())
            kinds = ",".join(f"{k}:{v[0]}" for k, v in sorted(self.failed.items()))
            line = (
                f"[loadgen {self.run_id}] {_now() - self.mono0:7.1f}s "
                f"sent {self.sent_entries} acked {self.acked_entries} failed {failed}"
                f"{' (' + kinds + ')' if kinds else ''} "
                f"req/s {self.window_requests / window:.0f} "
                f"p99 {'-' if p99 is None else f'{p99 * 1000:.1f}ms'} "
                f"inflight {self.inflight}"
            )
            if not self.cfg.closed_loop:
                line += f" lag {self.window_lag_max * 1000:.1f}ms"
            print(line, file=sys.stderr, flush=True)
        self.window_latencies = []
        self.window_requests = 0
        self.window_lag_max = 0.0

    async def drain(self) -> None:
        """Wait for the answers in flight (up to drain_timeout or a second signal), then cancel."""
        if self.tasks:
            waiter = asyncio.gather(*list(self.tasks), return_exceptions=True)
            hard = self.loop.create_task(self.hard_stop.wait())
            await asyncio.wait({waiter, hard}, timeout=self.cfg.drain_timeout, return_when="FIRST_COMPLETED")
            hard.cancel()
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(waiter, return_exceptions=True)


def _served_by(headers: Any) -> str | None:
    for name in SERVED_BY_HEADERS:
        value = headers.get(name)
        if value:
            return value
    return None


def _accepted(raw: bytes) -> int | None:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if isinstance(doc, dict) and isinstance(doc.get("accepted"), int):
        return doc["accepted"]
    return None


# exception type -> failure kind; first match wins, so the specific aiohttp errors come before the
# generic ones they subclass
_EXCEPTION_KINDS: tuple[tuple[type[BaseException], str], ...] = (
    (aiohttp.ClientConnectorError, "connect-error"),
    (aiohttp.ServerDisconnectedError, "disconnected"),
    (TimeoutError, "timeout"),
    (ConnectionResetError, "connection-reset"),
    (BrokenPipeError, "connection-reset"),
    (aiohttp.ClientPayloadError, "payload-error"),
)


def _classify(exc: BaseException) -> str:
    """Failure kind of an exception raised while sending (see bluegreen.evidence.KINDS)."""
    for exc_type, kind in _EXCEPTION_KINDS:
        if isinstance(exc, exc_type):
            return kind
    if isinstance(exc, aiohttp.ClientOSError) and exc.errno in (errno.ECONNRESET, errno.EPIPE):
        return "connection-reset"
    return "client-error"


async def run_async(
    cfg: LoadgenConfig, stop: threading.Event | None = None, *, handle_signals: bool = True
) -> LoadgenSummary:
    """Run the load generator in the current event loop until cfg.duration, `stop` or a signal.

    With `handle_signals` (and in the main thread) SIGINT/SIGTERM stop the run while it lasts; the
    default handlers are restored afterwards. Raises LoadgenError for bad config or --out.
    """
    cfg.validate()
    run_id = cfg.run_id or secrets.token_hex(4)
    cfg.out.mkdir(parents=True, exist_ok=True)
    if (cfg.out / REQUESTS_FILE).exists():
        raise LoadgenError(f"{cfg.out / REQUESTS_FILE} exists: use a new --out directory for each run")
    mode = "closed-loop" if cfg.closed_loop else "open-loop"
    params = {
        "run_id": run_id,
        "mode": mode,
        "urls": list(cfg.urls),
        "rate": None if cfg.closed_loop else cfg.rate,
        "batch": cfg.batch,
        "connections": cfg.connections,
        "max_inflight": cfg.max_inflight,
        "concurrency": cfg.concurrency if cfg.closed_loop else None,
        "timeout_s": cfg.timeout,
        "duration_s": cfg.duration,
        "started": time.time(),
        "pid": os.getpid(),
    }
    try:
        write_atomic(cfg.out / RUN_FILE, orjson.dumps(params, option=orjson.OPT_INDENT_2))
        run = _Run(cfg, run_id, stop)
    except OSError as exc:
        raise LoadgenError(f"cannot write to --out {cfg.out}: {exc}") from exc

    loop = run.loop
    signals: list[signal.Signals] = []
    if handle_signals and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, run.request_stop, sig.name)
            signals.append(sig)
    # --connections per URL: a stalled lb holds at most its own share of the pool
    connector = aiohttp.TCPConnector(
        limit=cfg.connections * len(run.urls), limit_per_host=cfg.connections, keepalive_timeout=60.0
    )
    session = aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=cfg.timeout),
        headers={"Content-Type": "application/json"},
        skip_auto_headers=("Accept-Encoding",),
    )
    ticker = loop.create_task(run.ticker())
    started = run.unix0
    if not cfg.quiet:
        what = f"concurrency {cfg.concurrency}" if cfg.closed_loop else f"{cfg.rate:g} batches/s"
        print(
            f"[loadgen {run_id}] {mode} {what} x {cfg.batch} entries -> {' + '.join(run.urls)}"
            f"{' (round-robin)' if len(run.urls) > 1 else ''}; evidence in {cfg.out}",
            file=sys.stderr,
            flush=True,
        )
    try:
        schedule = run.closed_loop(session) if cfg.closed_loop else run.open_loop(session)
        sched_task = loop.create_task(schedule)
        while not sched_task.done() and not run.stopping:
            await asyncio.wait({sched_task}, timeout=_TICK_S)
        if not cfg.closed_loop:
            await sched_task  # the open-loop schedule notices a stop within one tick
        await run.drain()  # answers in flight (closed loop: the workers' current requests)
        await sched_task
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        await session.close()
        run.flush()
        os.fsync(run.requests_file.fileno())
        run.requests_file.close()
    ended = time.time()
    elapsed = ended - started
    summary = LoadgenSummary(
        run_id=run_id,
        mode=mode,
        urls=list(run.urls),
        rate=None if cfg.closed_loop else cfg.rate,
        batch=cfg.batch,
        connections=cfg.connections,
        max_inflight=cfg.max_inflight,
        concurrency=cfg.concurrency if cfg.closed_loop else None,
        timeout_s=cfg.timeout,
        started=started,
        ended=ended,
        elapsed_s=elapsed,
        stopped_by=run.stopped_by,
        requests=run.requests,
        entries=run.next_seq,
        sent_entries=run.sent_entries,
        acked_entries=run.acked_entries,
        ok_requests=run.ok_requests,
        failed_requests={k: {"requests": v[0], "entries": v[1]} for k, v in sorted(run.failed.items())},
        latency_s=_dist(run.latencies),
        schedule_lag_s=_lag_summary(run) if not cfg.closed_loop else {},
        throughput={
            "requests_per_s": run.requests / elapsed if elapsed else 0.0,
            "acked_entries_per_s": run.acked_entries / elapsed if elapsed else 0.0,
        },
        served_by=dict(run.served_by.most_common()),
        by_url={
            url: {"requests": r, "ok_requests": ok, "failed_requests": failed, "acked_entries": acked}
            for url, (r, ok, failed, acked) in run.by_url.items()
        },
        out=str(cfg.out),
        versions={"aiohttp": aiohttp.__version__, "loop": type(loop).__module__},
    )
    write_atomic(cfg.out / SUMMARY_FILE, orjson.dumps(summary.to_dict(), option=orjson.OPT_INDENT_2))
    if not cfg.quiet:
        print(format_summary(summary), file=sys.stderr, flush=True)
    return summary


def _lag_summary(run: _Run) -> dict[str, float | int | None]:
    lags = run.lags
    d: dict[str, float | int | None] = dict(_dist(lags))
    d["late_batches"] = sum(1 for x in lags if x > _LATE_S)
    d["late_threshold_s"] = _LATE_S
    d["scheduled_batches"] = len(lags)
    span = run.schedule_end - run.schedule_start
    d["schedule_span_s"] = span
    # batches the schedule started per second while it ran (the target is the rate)
    d["achieved_batches_per_s"] = len(lags) / span if span > 0 else 0.0
    return d


def run_loadgen(
    cfg: LoadgenConfig, stop: threading.Event | None = None, *, handle_signals: bool = True
) -> LoadgenSummary:
    """Run the load generator to completion in a fresh event loop (uvloop when importable).

    Stops at cfg.duration, when `stop` is set, or on SIGINT/SIGTERM (see `run_async`). Returns the
    summary also written to cfg.out/summary.json.
    """
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up

        factory: Any = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency, but the tool works without it
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(run_async(cfg, stop, handle_signals=handle_signals))


def format_summary(s: LoadgenSummary) -> str:
    def ms(v: float | int | None) -> str:
        return "-" if v is None else f"{v * 1000:.1f}ms"

    lat = s.latency_s
    lines = [
        f"[loadgen {s.run_id}] done ({s.stopped_by}) after {s.elapsed_s:.1f}s: {s.requests} requests, "
        f"{s.entries} entries, {s.sent_entries} sent, {s.acked_entries} acked, "
        f"{s.failed_request_count} failed requests",
        f"  latency p50 {ms(lat['p50'])} p90 {ms(lat['p90'])} p99 {ms(lat['p99'])} max {ms(lat['max'])}; "
        f"{s.throughput['acked_entries_per_s']:.0f} acked entries/s",
    ]
    for kind, v in s.failed_requests.items():
        lines.append(f"  failed {kind}: {v['requests']} requests ({v['entries']} entries)")
    if len(s.by_url) > 1:
        for url, v in s.by_url.items():
            lines.append(
                f"  {url}: {v['requests']} requests, {v['ok_requests']} ok, {v['failed_requests']} failed, "
                f"{v['acked_entries']} entries acked"
            )
    if s.schedule_lag_s:
        lag = s.schedule_lag_s
        lines.append(
            f"  schedule lag p50 {ms(lag['p50'])} p99 {ms(lag['p99'])} max {ms(lag['max'])}; "
            f"{lag['late_batches']} of {lag['scheduled_batches']} batches started more than "
            f"{ms(lag['late_threshold_s'])} late; {lag['achieved_batches_per_s']:.1f} batches/s"
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--out", type=Path, required=True, help="run directory to write (must not hold a run)"
    )
    parser.add_argument(
        "--url",
        action="append",
        dest="urls",
        metavar="URL",
        help=f"ingest URL; give it once per load balancer to spread the requests over them round-robin "
        f"(default: {DEFAULT_URL})",
    )
    parser.add_argument("--rate", type=float, default=200.0, help="batches per second (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=10, help="entries per batch (default: %(default)s)")
    parser.add_argument(
        "--connections", type=int, default=16, help="keep-alive connections per URL (default: %(default)s)"
    )
    parser.add_argument(
        "--duration", type=float, default=None, help="seconds to run (default: until SIGINT/SIGTERM)"
    )
    parser.add_argument("--run-id", default=None, help="id prefix of every entry (default: random hex)")
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds per request (default: %(default)s)"
    )
    parser.add_argument(
        "--max-inflight",
        type=int,
        default=512,
        help="open loop: most requests outstanding; beyond it a batch fails as client-backpressure "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=15.0,
        help="seconds to wait for answers in flight when stopping (default: %(default)s)",
    )
    parser.add_argument(
        "--closed-loop",
        action="store_true",
        help="benchmark mode: --concurrency workers each send the next batch when the last is answered",
    )
    parser.add_argument(
        "--concurrency", type=int, default=16, help="closed loop: number of workers (default: %(default)s)"
    )
    parser.add_argument(
        "--service", default="loadgen", help="the entries' `service` field (default: %(default)s)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress line on stderr")


def config_from_args(args: argparse.Namespace) -> LoadgenConfig:
    return LoadgenConfig(
        out=args.out,
        urls=tuple(args.urls or (DEFAULT_URL,)),
        rate=args.rate,
        batch=args.batch,
        connections=args.connections,
        duration=args.duration,
        run_id=args.run_id,
        timeout=args.timeout,
        max_inflight=args.max_inflight,
        drain_timeout=args.drain_timeout,
        closed_loop=args.closed_loop,
        concurrency=args.concurrency,
        service=args.service,
        quiet=args.quiet,
    )


def run(args: argparse.Namespace) -> int:
    try:
        summary = run_loadgen(config_from_args(args))
    except LoadgenError as exc:
        print(f"bluegreen loadgen: {exc}", file=sys.stderr)
        return 2
    return 0 if summary.failed_request_count == 0 and summary.requests > 0 else 1
