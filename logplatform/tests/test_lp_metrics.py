"""logplatform.metrics: per-app registry, batch-level counting, service label cap."""

from __future__ import annotations

import prometheus_client
from logplatform.metrics import OTHER_SERVICE, Metrics


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_counts_per_service_and_level_once_per_batch() -> None:
    m = Metrics(version="1.2.3", color="green", node="green-1")
    m.record_accepted({("api", "info"): 7, ("api", "error"): 2})
    m.record_accepted({("api", "info"): 3})
    assert value(m, "logplatform_entries_accepted_total", service="api", level="info") == 10
    assert value(m, "logplatform_entries_accepted_total", service="api", level="error") == 2
    assert value(m, "logplatform_batches_total", result="ok") == 2
    m.record_rejected("malformed_json")
    m.record_error()
    assert value(m, "logplatform_batches_total", result="rejected") == 1
    assert value(m, "logplatform_batches_total", result="error") == 1
    assert value(m, "logplatform_rejects_total", reason="malformed_json") == 1
    assert value(m, "logplatform_rejects_total", reason="reserved_key") == 0  # exists from the start


def test_service_label_values_are_capped() -> None:
    m = Metrics(version="1", color="blue", node="blue-1", max_services=3)
    for n in range(5):
        m.record_accepted({(f"svc{n}", "info"): 1})
    m.record_accepted({("svc0", "info"): 1, ("svc9", "warn"): 4})
    assert value(m, "logplatform_entries_accepted_total", service="svc0", level="info") == 2
    assert value(m, "logplatform_entries_accepted_total", service="svc2", level="info") == 1
    assert value(m, "logplatform_entries_accepted_total", service="svc3", level="info") is None
    assert value(m, "logplatform_entries_accepted_total", service=OTHER_SERVICE, level="info") == 2
    assert value(m, "logplatform_entries_accepted_total", service=OTHER_SERVICE, level="warn") == 4


def test_sink_commit_ready_and_info() -> None:
    m = Metrics(version="1.2.3", color="green", node="green-1")
    m.on_commit(1000, 3, 30, 0.002)
    m.on_commit(500, 1, 10, 0.001)
    assert value(m, "logplatform_sink_bytes_total") == 1500
    assert value(m, "logplatform_sink_group_commit_batches_sum") == 4
    assert value(m, "logplatform_sink_group_commit_entries_sum") == 40
    assert value(m, "logplatform_sink_fsync_duration_seconds_count") == 2
    assert value(m, "logplatform_ready") == 0
    m.set_ready(True)
    assert value(m, "logplatform_ready") == 1
    assert value(m, "logplatform_build_info", version="1.2.3", color="green", node="green-1") == 1
    text = m.exposition().decode()
    assert 'logplatform_build_info{color="green",node="green-1",version="1.2.3"} 1.0' in text


def test_each_app_has_its_own_registry() -> None:
    a = Metrics(version="1", color="blue", node="a")
    b = Metrics(version="1", color="blue", node="b")  # would raise "Duplicated timeseries" if shared
    a.record_accepted({("api", "info"): 5})
    assert value(b, "logplatform_entries_accepted_total", service="api", level="info") is None
    assert prometheus_client.REGISTRY.get_sample_value("logplatform_ready") is None
