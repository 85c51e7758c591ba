"""Bounded load for bluegreen_perf: batches of log entries at a capped rate, with the figures it measured.

Threads, each with its own keep-alive `http.client` connection, take send slots from one pacer. Slots
are at least 1/rate seconds apart and never catch up: a slot missed because every connection was busy
is dropped (counted as `missed_slots`), so the target never gets more than `rate` batches in any
second, however slow it is. That is what makes the load safe to point at the live color.

Latency is measured per request, from sending it to having read the whole answer, for every request
that got an HTTP answer (any status). A request that got no answer (refused, reset, timed out) is an
error and has no latency. Only the standard library.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import math
import threading
import time

from ansible.module_utils.bluegreen_checks import connection, percentile


class Pacer:
    """Hands out send times: at least 1/rate apart, all before `seconds` from start, no catching up."""

    def __init__(self, rate: float, seconds: float, start: float | None = None) -> None:
        if rate <= 0 or seconds <= 0:
            raise ValueError("rate and seconds must be > 0")
        self.gap = 1.0 / rate
        self.start = time.monotonic() if start is None else start
        self.end = self.start + seconds
        self.planned = math.ceil(rate * seconds - 1e-9)
        self._next = self.start
        self._count = 0
        self._lock = threading.Lock()

    def take(self) -> tuple[int, float] | None:
        """(sequence number, monotonic send time) of the next slot, or None when the time is up."""
        with self._lock:
            slot = max(self._next, time.monotonic())
            if slot >= self.end or self._count >= self.planned:
                return None
            self._next = slot + self.gap
            seq = self._count
            self._count += 1
            return seq, slot

    @property
    def taken(self) -> int:
        return self._count


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def log_batch(id_prefix: str, seq: int, size: int, service: str = "bluegreen-perf") -> bytes:
    """A JSON array of `size` valid entries with unique ids `<id_prefix>-<seq>-<i>`."""
    ts = utc_now()
    entries = [
        {
            "ts": ts,
            "level": "info",
            "service": service,
            "message": f"bluegreen perf probe {seq}/{i}",
            "id": f"{id_prefix}-{seq}-{i}",
        }
        for i in range(size)
    ]
    return json.dumps(entries, separators=(",", ":")).encode()


class _Worker(threading.Thread):
    def __init__(self, url: str, pacer: Pacer, timeout: float, body, headers: dict) -> None:
        super().__init__(daemon=True)
        self.url, self.pacer, self.timeout, self.body, self.headers = url, pacer, timeout, body, headers
        self.latencies: list[float] = []
        self.statuses: dict[str, int] = {}
        self.last_done = 0.0
        self.connections = 0

    def _count(self, key: str) -> None:
        self.statuses[key] = self.statuses.get(key, 0) + 1

    def run(self) -> None:
        conn = None
        path = "/"
        try:
            while True:
                slot = self.pacer.take()
                if slot is None:
                    return
                seq, at = slot
                payload = self.body(seq)
                delay = at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                if conn is None:
                    conn, path = connection(self.url, self.timeout)
                    self.connections += 1
                started = time.perf_counter()
                try:
                    conn.request("POST", path, body=payload, headers=self.headers)
                    resp = conn.getresponse()
                    resp.read()
                except (OSError, http.client.HTTPException) as exc:
                    self._count(f"error:{type(exc).__name__}")
                    conn.close()
                    conn = None
                else:
                    self.latencies.append(time.perf_counter() - started)
                    self._count(str(resp.status))
                    if resp.will_close:
                        conn.close()
                        conn = None
                self.last_done = time.monotonic()
        finally:
            if conn is not None:
                conn.close()


def run_load(
    url: str,
    *,
    rate: float,
    seconds: float,
    batch_size: int = 100,
    concurrency: int = 4,
    timeout: float = 10.0,
    id_prefix: str = "perf",
    service: str = "bluegreen-perf",
) -> dict:
    """POST batches to url at most `rate` per second for `seconds`; returns the figures measured."""
    pacer = Pacer(rate, seconds)
    headers = {"Content-Type": "application/json", "User-Agent": "bluegreen-perf"}

    def body(seq: int) -> bytes:
        return log_batch(id_prefix, seq, batch_size, service)

    workers = [_Worker(url, pacer, timeout, body, headers) for _ in range(concurrency)]
    for worker in workers:
        worker.start()
    for worker in workers:
        # every worker stops taking slots at the deadline; the last request may take `timeout`
        worker.join(seconds + timeout + 5)
    statuses: dict[str, int] = {}
    for worker in workers:
        for key, n in worker.statuses.items():
            statuses[key] = statuses.get(key, 0) + n
    latencies = sorted(ms for worker in workers for ms in worker.latencies)
    last_done = max((w.last_done for w in workers), default=pacer.start)
    return figures(
        statuses=statuses,
        latencies_s=latencies,
        elapsed=max(seconds, last_done - pacer.start),
        planned=pacer.planned,
        sent=pacer.taken,
        rate=rate,
        seconds=seconds,
        batch_size=batch_size,
        concurrency=concurrency,
        connections=sum(w.connections for w in workers),
    )


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 3)


def figures(
    *,
    statuses: dict[str, int],
    latencies_s: list[float],
    elapsed: float,
    planned: int,
    sent: int,
    rate: float,
    seconds: float,
    batch_size: int,
    concurrency: int,
    connections: int = 0,
) -> dict:
    """What a load run measured: counts, error rate, throughput and latency percentiles (ms)."""
    ok = sum(n for key, n in statuses.items() if key.isdigit() and 200 <= int(key) < 300)
    answered = sum(n for key, n in statuses.items() if key.isdigit())
    errors = sent - ok
    return {
        "rate": rate,
        "seconds": seconds,
        "batch_size": batch_size,
        "concurrency": concurrency,
        "connections": connections,
        "planned": planned,
        "sent": sent,
        "missed_slots": planned - sent,
        "answered": answered,
        "ok": ok,
        "errors": errors,
        "error_rate": round(errors / sent, 4) if sent else 0.0,
        "statuses": dict(sorted(statuses.items())),
        "elapsed_s": round(elapsed, 3),
        # over the sending window: never more than `rate`, and lower when slots were missed or failed
        "throughput_batches_per_s": round(ok / seconds, 2),
        "throughput_entries_per_s": round(ok * batch_size / seconds, 1),
        "p50_ms": _ms(percentile(latencies_s, 50)),
        "p90_ms": _ms(percentile(latencies_s, 90)),
        "p99_ms": _ms(percentile(latencies_s, 99)),
        "max_ms": _ms(latencies_s[-1] if latencies_s else None),
        "mean_ms": _ms(sum(latencies_s) / len(latencies_s) if latencies_s else None),
    }
