"""HTTP routes and per-app state: ``create_app(config)`` builds a ready-to-run aiohttp app.

The app owns its sink (opened on start-up, flushed and closed on cleanup, i.e. after aiohttp has
stopped listening and waited for in-flight requests) and its metrics registry. Readiness is set
from outside (``State.mark_started`` / ``State.mark_draining``) by the process lifecycle in
``__main__``, which decides when the node may receive traffic.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from ._version import __version__
from .config import Config, config_digest, shared_config_digest
from .metrics import CONTENT_TYPE_LATEST, Metrics
from .sink import Sink, SinkError
from .validate import BatchRejected, Enrichment, body_format, format_ts, prepare_batch

__all__ = ["STATE", "State", "create_app"]

STARTING = "starting"
READY = "ready"
DRAINING = "draining"
NOT_READY = "not-ready"
SINK_FAILING = "sink-failing"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Marks a mirrored copy of a live batch (bluegreen's shadow traffic, sent by the load balancer to the
# idle color): processed like any batch, written to the shadow sink, never to the production sink.
# Stops the node without the drain grace (__main__.py); /version names it so that a controller only
# sends it to a release that handles it (any other release would die of it without flushing).
QUICK_STOP_SIGNAL = signal.SIGQUIT

SHADOW_HEADER = "X-Bluegreen-Shadow"
# On every POST /v1/logs answer: how many entries were written (0 when refused), so the load balancer
# can compare a shadow answer with the live one without parsing bodies.
ACCEPTED_HEADER = "X-Logplatform-Accepted"


class State:
    """What the handlers and the lifecycle share for one running service."""

    def __init__(self, config: Config) -> None:
        self.config = config
        # fault.report_version (TEST-ONLY) lets a deploy test see a "wrong version" node.
        self.version = config.fault.report_version or __version__
        self.started_at = format_ts(datetime.now(UTC))
        self.status = STARTING
        self.inflight = 0
        self.batches_ok = 0
        self.batches_rejected = 0
        self.batches_error = 0
        self.posts_seen = 0  # POST /v1/logs received, for fault.error_after_requests (TEST-ONLY)
        self.entries_accepted = 0
        self.shadow_batches = {"ok": 0, "rejected": 0, "error": 0}
        self.shadow_entries_accepted = 0
        self.metrics = Metrics(version=self.version, color=config.color, node=config.node)
        self.sink = Sink(
            config.sink_dir,
            config.node,
            fsync=config.fsync,
            on_commit=self.metrics.on_commit,
            on_health=self._sink_health,
        )
        self.shadow_sink = (
            Sink(
                config.shadow_sink_dir,
                config.node,
                fsync=config.fsync,
                on_commit=self.metrics.on_shadow_commit,
            )
            if config.shadow_sink_dir is not None
            else None
        )
        self.enrichment = Enrichment(color=config.color, version=self.version, node=config.node)
        self.shadow_enrichment = Enrichment(
            color=config.color, version=self.version, node=config.node, shadow=True
        )
        self.levels = frozenset(config.levels)
        self.version_body = orjson.dumps(
            {
                "version": self.version,
                "color": config.color,
                "node": config.node,
                "config_digest": config_digest(config),
                "shared_config_digest": shared_config_digest(config),
                "started_at": self.started_at,
                "quick_stop": QUICK_STOP_SIGNAL.name,
            }
        )

    def _set_status(self, status: str) -> None:
        self.status = status
        self.metrics.set_ready(self.readiness()[0] == READY)

    def _sink_health(self, failure: str | None) -> None:
        self.metrics.set_ready(self.readiness()[0] == READY)

    def readiness(self) -> tuple[str, str | None]:
        """(status, reason) for /health/ready: ready only when started, not draining, and the
        production sink's last commit succeeded. The shadow sink does not count: a failing one
        fails shadow batches (shadow errors, which fail the deploy's validation), not live traffic."""
        if self.status == READY and self.sink.failure is not None:
            return SINK_FAILING, self.sink.failure
        return self.status, None

    def mark_started(self) -> None:
        """Listening and the sink is open: ready (unless fault.never_ready, TEST-ONLY)."""
        if self.status == STARTING:
            self._set_status(NOT_READY if self.config.fault.never_ready else READY)

    def mark_draining(self) -> None:
        """Shutting down: still serving, but telling the load balancer to stop sending."""
        self._set_status(DRAINING)

    def counts(self) -> dict[str, int]:
        """Totals for the "stopped" log line."""
        return {
            "batches_ok": self.batches_ok,
            "batches_rejected": self.batches_rejected,
            "batches_error": self.batches_error,
            "entries_accepted": self.entries_accepted,
            "sink_commits": self.sink.commits,
            "sink_bytes": self.sink.bytes_written,
            "shadow_batches_ok": self.shadow_batches["ok"],
            "shadow_entries_accepted": self.shadow_entries_accepted,
        }


STATE = web.AppKey("state", State)


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def _answer(data: Any, status: int, accepted: int = 0) -> web.Response:
    """A POST /v1/logs answer, with the number of entries written in ACCEPTED_HEADER."""
    return _json(data, status, {ACCEPTED_HEADER: str(accepted)})


def _is_shadow(request: web.Request) -> bool:
    """True for shadow traffic; a marker other than "1" is refused rather than guessed at."""
    marker = request.headers.get(SHADOW_HEADER)
    if marker is None:
        return False
    if marker.strip() != "1":
        raise BatchRejected(400, "invalid_field", f"{SHADOW_HEADER} must be 1 when present, got {marker!r}")
    return True


async def _read_body(request: web.Request, limit: int) -> bytes:
    """Read the body, refusing it as soon as it grows past ``limit`` (chunked bodies too)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise BatchRejected(413, "body_too_large", f"body is larger than the limit of {limit} bytes")
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def ingest(request: web.Request) -> web.Response:
    """POST /v1/logs: 200 only once every entry of the batch is durably in the sink.

    Shadow traffic (X-Bluegreen-Shadow: 1) takes exactly the same path, but is written, marked
    ``"_shadow": true``, to the shadow sink and counted in the shadow metrics only.
    """
    state = request.app[STATE]
    config = state.config
    fault = config.fault
    try:
        shadow = _is_shadow(request)
    except BatchRejected as exc:
        state.batches_rejected += 1
        state.metrics.record_rejected(exc.code)
        return _answer(exc.to_json(), exc.status)
    if fault.extra_latency_ms:
        await asyncio.sleep(fault.extra_latency_ms / 1000)
    state.posts_seen += 1
    erroring = fault.error_rate and state.posts_seen > fault.error_after_requests
    if erroring and random.random() < fault.error_rate:  # noqa: S311 - not cryptographic
        _count_error(state, shadow)
        return _answer({"error": "injected fault (fault.error_rate, TEST-ONLY); nothing written"}, 500)
    sink = state.shadow_sink if shadow else state.sink
    if sink is None:
        _count_error(state, shadow)
        return _answer(
            {"error": "shadow traffic refused: this node has no shadow_sink_dir; nothing written"}, 503
        )

    try:
        # Cheap refusals first, before reading a byte of the body. A missing Content-Type
        # reads as application/octet-stream here, which body_format treats as "sniff".
        content_type = request.content_type.lower()
        length = request.content_length
        if length is not None and length > config.max_body_bytes:
            raise BatchRejected(
                413, "body_too_large", f"body is larger than the limit of {config.max_body_bytes} bytes"
            )
        fmt = body_format(content_type)  # 415 for text/html and the like
        body = await _read_body(request, config.max_body_bytes)
        batch = prepare_batch(
            body,
            fmt,
            max_entries=config.max_batch_entries,
            levels=state.levels,
            enrichment=state.shadow_enrichment if shadow else state.enrichment,
            ingested_at=format_ts(datetime.now(UTC)),
        )
    except BatchRejected as exc:
        if shadow:
            state.shadow_batches["rejected"] += 1
            state.metrics.record_shadow("rejected")
        else:
            state.batches_rejected += 1
            state.metrics.record_rejected(exc.code)
        return _answer(exc.to_json(), exc.status)

    try:
        if not fault.lose_writes:  # TEST-ONLY: a release that acks without writing
            await sink.append(batch.data, batch.count)
    except SinkError as exc:
        _count_error(state, shadow)
        return _answer({"error": str(exc)}, 500)

    if shadow:
        state.shadow_batches["ok"] += 1
        state.shadow_entries_accepted += batch.count
        state.metrics.record_shadow("ok", batch.count)
    else:
        state.batches_ok += 1
        state.entries_accepted += batch.count
        state.metrics.record_accepted(batch.counts)
    return _answer({"accepted": batch.count}, 200, batch.count)


def _count_error(state: State, shadow: bool) -> None:
    if shadow:
        state.shadow_batches["error"] += 1
        state.metrics.record_shadow("error")
    else:
        state.batches_error += 1
        state.metrics.record_error()


async def health_live(request: web.Request) -> web.Response:
    """GET /health/live: the process is up and its event loop answers."""
    return _json({"status": "live"})


async def health_ready(request: web.Request) -> web.Response:
    """GET /health/ready: 200 only when started, not draining and the sink writes (what the lb checks)."""
    status, reason = request.app[STATE].readiness()
    body = {"status": status} if reason is None else {"status": status, "reason": reason}
    return _json(body, 200 if status == READY else 503)


async def version(request: web.Request) -> web.Response:
    """GET /version: what runs here and with which config."""
    return web.Response(body=request.app[STATE].version_body, content_type="application/json")


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics: Prometheus text format."""
    body = request.app[STATE].metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@web.middleware
async def _observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """In-flight gauge and latency histogram, once per request."""
    state = request.app[STATE]
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    if SHADOW_HEADER in request.headers:
        route = "shadow:" + route  # shadow traffic has its own latency series
    state.inflight += 1
    state.metrics.inflight.inc()
    began = time.perf_counter()
    try:
        return await handler(request)
    finally:
        state.inflight -= 1
        state.metrics.inflight.dec()
        state.metrics.request_duration.labels(route).observe(time.perf_counter() - began)


async def _sink_lifecycle(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    await state.sink.start()
    if state.shadow_sink is not None:
        try:
            await state.shadow_sink.start()
        except BaseException:
            await state.sink.close()
            raise
    yield
    # Runs after the listener is closed and in-flight requests are done (AppRunner.cleanup).
    try:
        if state.shadow_sink is not None:
            await state.shadow_sink.close()
    finally:
        await state.sink.close()


def create_app(config: Config) -> web.Application:
    """The service as an aiohttp app; its state is ``app[STATE]``."""
    app = web.Application(middlewares=[_observe])
    app[STATE] = State(config)
    app.cleanup_ctx.append(_sink_lifecycle)
    app.router.add_post("/v1/logs", ingest)
    app.router.add_get("/health/live", health_live)
    app.router.add_get("/health/ready", health_ready)
    app.router.add_get("/version", version)
    app.router.add_get("/metrics", metrics)
    return app
