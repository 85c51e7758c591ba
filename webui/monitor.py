"""The overview's poller: every POLL_INTERVAL it reads state.json, the lock and HAProxy's stats, works
out rates, and keeps a bounded history for the chart. One poller per app, started on first use;
the overview streams and the API read its latest sample.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any

from webui import haproxy_stats
from webui.controller_state import (
    COLORS,
    ControllerState,
    StateError,
    abandoned_run,
    compare_lbs,
    describe_failure,
    describe_holder,
    other_color,
    seconds_until,
)

log = logging.getLogger("webui.monitor")


class Monitor:
    def __init__(self, config: dict) -> None:
        self.config = config
        self.controller = ControllerState(config["STATE_DIR"])
        # several lbs: each one's state dir, for its live color (LB_STATE_DIRS)
        self.lbs = {name: ControllerState(path) for name, path in (config.get("LB_STATE_DIRS") or {}).items()}
        self.interval = float(config["POLL_INTERVAL"])
        points = max(2, int(config["CHART_SECONDS"] / self.interval))
        self.chart: collections.deque[dict] = collections.deque(maxlen=points)
        self.latest: dict | None = None
        self.seq = 0
        self._cond = threading.Condition()
        self._start_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._previous: dict[str, Any] | None = None  # last backend summaries and node counters

    # --- lifecycle ------------------------------------------------------------------------------
    def ensure_started(self) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._loop, name="webui-monitor", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                sample = self.collect()
            except Exception as exc:  # the poller must outlive any one bad sample
                log.exception("overview sample failed")
                sample = {"at": time.time(), "error": f"overview sample failed: {exc}"}
            with self._cond:
                self.seq += 1
                sample["seq"] = self.seq
                self.latest = sample
                if "point" in sample:
                    self.chart.append(sample["point"])
                self._cond.notify_all()
            self._stop.wait(max(0.05, self.interval - (time.monotonic() - started)))

    def wait_after(self, seq: int, timeout: float) -> dict | None:
        """The latest sample once it is newer than seq (None on timeout)."""
        with self._cond:
            if self._cond.wait_for(lambda: self.seq > seq, timeout=timeout):
                return self.latest
            return None

    def chart_points(self) -> list[dict]:
        with self._cond:
            return list(self.chart)

    # --- one sample -----------------------------------------------------------------------------
    def collect(self) -> dict:
        now = time.time()
        sample: dict[str, Any] = {"at": now}
        sample.update(self.state_summary())
        sample.update(self._traffic(now))
        point = {"t": round(now, 2)}
        for color in COLORS:
            backend = sample["backends"].get(color) or {}
            point[color] = backend.get("req_per_s")
            point[f"{color}_5xx"] = backend.get("err_per_s")
        sample["point"] = point
        return sample

    def state_summary(self) -> dict:
        out: dict[str, Any] = {"state": None, "state_error": None, "live": None, "idle": None}
        try:
            lock = self.controller.lock()
        except OSError as exc:
            lock = {"error": str(exc)}
        out["lock"] = lock
        try:
            state = self.controller.state()
        except (StateError, OSError) as exc:
            out["state_error"] = str(exc)
            state = None
        if state is None and out["state_error"] is None:
            out["state_error"] = f"no state.json in {self.config['STATE_DIR']}: the lab is not up"
        if state:
            live = state["live"]
            idle = other_color(live)
            versions = state.get("versions") or {}
            out.update(
                state=state,
                live={"color": live, "version": versions.get(live)},
                idle={"color": idle, "version": versions.get(idle)},
                deployment=state.get("deployment"),
                # the last run's failure as `fail` stored it, and a running deployment nobody runs any more
                failure=state.get("failure"),
                failure_text=describe_failure(state["failure"]) if state.get("failure") else None,
                abandoned=abandoned_run(state, lock if lock and "error" not in lock else None),
                warm_until=state.get("warm_until"),
                warm_seconds_left=seconds_until(state.get("warm_until")),
            )
        out["lock_text"] = describe_holder(lock) if lock else None
        if self.lbs:
            out.update(self.lbs_summary())
        return out

    def lbs_summary(self) -> dict:
        """Several lbs: each one's live color and versions (its state.json) and whether they agree, as
        status.yml judges it (bluegreen_status_view.compare_lbs)."""
        lbs, seen = [], {}
        for name, controller in self.lbs.items():
            try:
                state = controller.state()
                error = None if state else "no state.json"
            except (StateError, OSError) as exc:
                state, error = None, str(exc)
            live = (state or {}).get("live")
            versions = (state or {}).get("versions") or {}
            lbs.append({"name": name, "live": live, "version": versions.get(live), "error": error})
            seen[name] = {"state_live": live, "versions": versions} if state else None
        agreement = compare_lbs(seen)
        return {"lbs": lbs, "lbs_agree": agreement["agree"], "lbs_disagreement": agreement["disagreement"]}

    def _traffic(self, now: float) -> dict:
        backends: dict[str, dict] = {}
        out: dict[str, Any] = {"haproxy": {"ok": False, "error": None}, "backends": backends}
        try:
            rows = haproxy_stats.fetch_rows(self.config["HAPROXY_STATS_URL"])
        except haproxy_stats.StatsError as exc:
            out["haproxy"]["error"] = str(exc)
            self._previous = None
            return out
        out["haproxy"]["ok"] = True
        summaries = haproxy_stats.summarize(rows)
        previous = self._previous or {}
        seconds = now - previous["at"] if previous else 0.0
        counters: dict[str, float] = {}
        for color in COLORS:
            name = f"bg_{color}"
            summary = summaries.get(name)
            if summary is None or "counters" not in summary:
                continue
            row = haproxy_stats.backend_row(rows, name) or {}
            servers = haproxy_stats.servers(rows, name)
            backend = {
                "status": summary.get("status"),
                "servers_up": summary["servers_up"],
                "servers_total": summary["servers_total"],
                "rate": int(row.get("rate") or 0),
                "stot": summary["counters"]["stot"],
                "hrsp_5xx": summary["counters"]["hrsp_5xx"],
                "queue": summary.get("qcur"),
                "req_per_s": None,
                "err_per_s": None,
                "error_rate": None,
                "entries_per_s": None,
                "servers": servers,
            }
            before = previous.get("summaries", {}).get(name)
            if before and "counters" in before and seconds > 0:
                rates = haproxy_stats.interval_rates(before, summary, seconds)
                backend["req_per_s"] = rates["req_per_s"]
                backend["err_per_s"] = round(rates["errors"] / seconds, 2)
                backend["error_rate"] = rates["error_rate"]
            if self.config["NODE_METRICS"]:
                self._node_rates(backend, servers, previous, counters, seconds)
            backends[color] = backend
        self._previous = {"at": now, "summaries": summaries, "counters": counters}
        return out

    @staticmethod
    def _node_rates(
        backend: dict, servers: list[dict], previous: dict, counters: dict[str, float], seconds: float
    ) -> None:
        total = None
        for server in servers:
            if not server["addr"] or server["status"] not in ("UP", "NOLB", "DRAIN"):
                continue
            value = haproxy_stats.node_entries(server["addr"])
            if value is None:
                continue
            counters[server["name"]] = value
            before = previous.get("counters", {}).get(server["name"])
            if before is not None and seconds > 0 and value >= before:
                server["entries_per_s"] = round((value - before) / seconds, 1)
                total = (total or 0.0) + server["entries_per_s"]
        backend["entries_per_s"] = total
