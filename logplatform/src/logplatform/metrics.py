"""Prometheus metrics, on a registry owned by one app (never the process-global one).

Nothing here is called per entry: handlers aggregate a batch's counts first and call
``record_accepted`` once per batch, which increments once per (service, level) pair.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    generate_latest,
)

__all__ = ["BATCH_RESULTS", "CONTENT_TYPE_LATEST", "OTHER_SERVICE", "REJECT_REASONS", "Metrics"]

BATCH_RESULTS = ("ok", "rejected", "error")
# Every code validate.BatchRejected can carry, so each series exists (at 0) from the start.
REJECT_REASONS = (
    "unsupported_media_type",
    "body_too_large",
    "too_many_entries",
    "empty_batch",
    "malformed_json",
    "not_an_array",
    "not_an_object",
    "missing_field",
    "invalid_field",
    "reserved_key",
    "too_deep",
)
OTHER_SERVICE = "_other"

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_FSYNC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_GROUP_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_GROUP_ENTRY_BUCKETS = (1, 10, 100, 1000, 10_000, 100_000, 1_000_000)


class Metrics:
    """All metrics of one service instance, registered on ``self.registry``."""

    def __init__(self, *, version: str, color: str, node: str, max_services: int = 1000) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.max_services = max_services
        self._services: set[str] = set()
        # (service, level) -> counter child; bounded so unbounded service names cannot grow it.
        self._entry_children: dict[tuple[str, str], Any] = {}
        self._max_children = 4 * max_services

        self.entries_accepted = Counter(
            "logplatform_entries_accepted",
            f"Entries durably written, by service (capped at {max_services} values, then "
            f"'{OTHER_SERVICE}') and level.",
            ["service", "level"],
            registry=reg,
        )
        self.batches = Counter(
            "logplatform_batches", "POST /v1/logs batches by result.", ["result"], registry=reg
        )
        self.rejects = Counter(
            "logplatform_rejects", "Batches refused with 4xx, by reason.", ["reason"], registry=reg
        )
        self.request_duration = Histogram(
            "logplatform_request_duration_seconds",
            "Time from request start to response, by route.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self.sink_bytes = Counter(
            "logplatform_sink_bytes", "Bytes durably appended to the sink.", registry=reg
        )
        self.fsync_duration = Histogram(
            "logplatform_sink_fsync_duration_seconds",
            "Duration of each sink fsync (one per group commit).",
            buckets=_FSYNC_BUCKETS,
            registry=reg,
        )
        self.group_commit_batches = Histogram(
            "logplatform_sink_group_commit_batches",
            "Batches made durable by one write+fsync.",
            buckets=_GROUP_BATCH_BUCKETS,
            registry=reg,
        )
        self.group_commit_entries = Histogram(
            "logplatform_sink_group_commit_entries",
            "Entries made durable by one write+fsync.",
            buckets=_GROUP_ENTRY_BUCKETS,
            registry=reg,
        )
        # Shadow traffic (X-Bluegreen-Shadow: 1, mirrored live batches) is counted here only, never
        # in the production series above, so the new color's figures stay its own.
        self.shadow_batches = Counter(
            "logplatform_shadow_batches",
            "Shadow POST /v1/logs batches (mirrored live traffic) by result.",
            ["result"],
            registry=reg,
        )
        self.shadow_entries = Counter(
            "logplatform_shadow_entries_accepted",
            "Shadow entries durably written to the shadow sink.",
            registry=reg,
        )
        self.shadow_sink_bytes = Counter(
            "logplatform_shadow_sink_bytes", "Bytes durably appended to the shadow sink.", registry=reg
        )
        self.inflight = Gauge("logplatform_inflight_requests", "Requests being handled.", registry=reg)
        self.ready = Gauge("logplatform_ready", "1 when /health/ready answers 200, else 0.", registry=reg)
        self.info = Info("logplatform_build", "Version, color and node of this instance.", registry=reg)
        self.info.info({"version": version, "color": color, "node": node})
        ProcessCollector(registry=reg)  # CPU, memory, open fds of this process

        for result in BATCH_RESULTS:
            self.batches.labels(result)
        for reason in REJECT_REASONS:
            self.rejects.labels(reason)
        for result in BATCH_RESULTS:
            self.shadow_batches.labels(result)
        self._batch_ok = self.batches.labels("ok")
        self._batch_rejected = self.batches.labels("rejected")
        self._batch_error = self.batches.labels("error")

    def service_label(self, service: str) -> str:
        """The label value for ``service``: itself while fewer than max_services are known."""
        if service in self._services:
            return service
        if len(self._services) < self.max_services:
            self._services.add(service)
            return service
        return OTHER_SERVICE

    def record_accepted(self, counts: dict[tuple[str, str], int]) -> None:
        """One accepted batch: counts per (service, level)."""
        self._batch_ok.inc()
        children = self._entry_children
        for key, n in counts.items():
            child = children.get(key)
            if child is None:
                # labels() validates and locks on every call; look each pair up once.
                child = self.entries_accepted.labels(self.service_label(key[0]), key[1])
                if len(children) < self._max_children:
                    children[key] = child
            child.inc(n)

    def record_rejected(self, reason: str) -> None:
        self._batch_rejected.inc()
        self.rejects.labels(reason).inc()

    def record_error(self) -> None:
        self._batch_error.inc()

    def record_shadow(self, result: str, entries: int = 0) -> None:
        """One shadow batch: its result (ok, rejected, error) and the entries written."""
        self.shadow_batches.labels(result).inc()
        if entries:
            self.shadow_entries.inc(entries)

    def on_shadow_commit(self, nbytes: int, nbatches: int, nentries: int, fsync_seconds: float) -> None:
        """Shadow sink callback after each group commit."""
        self.shadow_sink_bytes.inc(nbytes)

    def on_commit(self, nbytes: int, nbatches: int, nentries: int, fsync_seconds: float) -> None:
        """Sink callback after each group commit (signature of sink.CommitObserver)."""
        self.sink_bytes.inc(nbytes)
        self.fsync_duration.observe(fsync_seconds)
        self.group_commit_batches.observe(nbatches)
        self.group_commit_entries.observe(nentries)

    def set_ready(self, ready: bool) -> None:
        self.ready.set(1 if ready else 0)

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric above."""
        return generate_latest(self.registry)
