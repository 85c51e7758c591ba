"""Command line and process lifecycle: ``logplatform --config /path/logplatform.toml``.

Exit codes: 0 clean stop after SIGTERM/SIGINT/SIGQUIT; 1 could not start (sink, port) or could not
flush on stop; 2 bad command line or config; 3 fault.crash_on_start (TEST-ONLY).

Shutdown order, on SIGTERM or SIGINT:
  1. draining: /health/ready answers 503 while requests are still served, for
     drain_grace_seconds, so the load balancer's health check takes the node out first;
  2. stop listening, close idle keep-alive connections, let in-flight requests finish (at most
     shutdown_timeout_seconds; after that aiohttp cancels them, and they never got a 200);
  3. flush and fsync the sink, close it; exit 0.
SIGQUIT skips step 1: the controller sends it to restart a node that takes no traffic (a node of the
idle color, which no load balancer routes to), where waiting for health checks only wastes the grace.
Steps 2 and 3 are the same, so nothing accepted is lost either way. ``/version`` says
``"quick_stop": "SIGQUIT"`` so that a controller never sends it to a release that does not handle it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ._version import __version__
from .config import Config, ConfigError, config_digest, effective_config, load_config, shared_config_digest

# The server's modules (aiohttp, prometheus_client, the app) are imported where the server starts, not
# here: `--check-config`, which the controller runs on every node at every deploy, then starts in half
# the time (it only reads and digests the file).

log = logging.getLogger("logplatform")

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_CONFIG = 2
EXIT_FAULT_CRASH = 3


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="logplatform", description="Log-ingestion service: POST /v1/logs into a durable NDJSON sink."
    )
    parser.add_argument("--config", required=True, type=Path, help="path to logplatform.toml")
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="validate the config, print the effective config and its digests as JSON, exit",
    )
    parser.add_argument("--version", action="version", version=f"logplatform {__version__}")
    return parser.parse_args(argv)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up, absent on some platforms
    except ImportError:
        return None
    return uvloop.new_event_loop


async def serve(config: Config) -> int:
    """Run the service until SIGTERM/SIGINT, then drain and stop; returns the exit code."""
    from aiohttp import web  # noqa: PLC0415 - the server's imports (see the top of this file)

    from .app import QUICK_STOP_SIGNAL, STATE, create_app  # noqa: PLC0415
    from .sink import SinkError  # noqa: PLC0415

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    skip_grace = asyncio.Event()

    def on_signal(name: str) -> None:
        if name == QUICK_STOP_SIGNAL.name:
            skip_grace.set()  # also cuts a grace already running short
        if stop.is_set():
            log.info("received %s again: already draining", name)
            return
        log.info("received %s", name)
        stop.set()

    # Installed before anything else, so a signal during start-up still means a clean stop.
    for sig in (signal.SIGTERM, signal.SIGINT, QUICK_STOP_SIGNAL):
        loop.add_signal_handler(sig, on_signal, sig.name)

    app = create_app(config)
    state = app[STATE]
    runner = web.AppRunner(
        app,
        access_log=None,  # one log line per request would cost more than the request itself
        handle_signals=False,  # ours above, so the drain order is explicit
        shutdown_timeout=config.shutdown_timeout_seconds,
    )
    try:
        await runner.setup()  # opens (and repairs) the sink
    except (OSError, SinkError) as exc:
        # the error names the path: sink_dir or shadow_sink_dir
        log.error(
            "cannot open the sinks (sink_dir %s, shadow_sink_dir %s): %s",
            config.sink_dir,
            config.shadow_sink_dir,
            exc,
        )
        return EXIT_RUNTIME
    site = web.TCPSite(runner, config.listen_host, config.listen_port, backlog=1024)
    try:
        await site.start()
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", config.listen_host, config.listen_port, exc)
        await runner.cleanup()
        return EXIT_RUNTIME

    state.mark_started()
    if state.status == "ready":
        log.info(
            "ready: listening on %s:%d, sink %s", config.listen_host, config.listen_port, state.sink.path
        )
    else:
        log.warning(
            "listening on %s:%d but NOT ready: fault.never_ready is set (TEST-ONLY)",
            config.listen_host,
            config.listen_port,
        )

    await stop.wait()
    state.mark_draining()
    grace = 0.0 if skip_grace.is_set() else config.drain_grace_seconds
    log.info("draining: /health/ready answers 503, still serving for %.2fs", grace)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(skip_grace.wait(), grace)

    log.info(
        "closing the listener; waiting up to %.1fs for %d in-flight request(s)",
        config.shutdown_timeout_seconds,
        state.inflight,
    )
    try:
        # Stop listening -> close idle connections -> wait for in-flight handlers (bounded by
        # shutdown_timeout) -> app cleanup, which flushes, fsyncs and closes the sink.
        await runner.cleanup()
    except (OSError, SinkError) as exc:
        log.error("stopped, but flushing the sink failed: %s; counts %s", exc, _fmt_counts(state.counts()))
        return EXIT_RUNTIME
    log.info("stopped: %s", _fmt_counts(state.counts()))
    return EXIT_OK


def _fmt_counts(counts: dict[str, int]) -> str:
    return " ".join(f"{k}={v}" for k, v in counts.items())


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point (``logplatform``); returns the process exit code."""
    args = _parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        log.error("config error: %s", exc)
        return EXIT_CONFIG

    if args.check_config:
        report = {
            "config_digest": config_digest(config),
            "shared_config_digest": shared_config_digest(config),
            "config": effective_config(config),
        }
        sys.stdout.write(json.dumps(report, indent=2, sort_keys=True) + "\n")
        return EXIT_OK

    log.info(
        "start: version=%s color=%s node=%s listen=%s:%d config_digest=%s fsync=%s",
        config.fault.report_version or __version__,
        config.color,
        config.node,
        config.listen_host,
        config.listen_port,
        config_digest(config),
        config.fsync,
    )
    if config.fault.crash_on_start:
        log.error("fault.crash_on_start is set (TEST-ONLY): exiting %d before ready", EXIT_FAULT_CRASH)
        return EXIT_FAULT_CRASH

    import prometheus_client  # noqa: PLC0415 - the server's imports (see the top of this file)

    # Process-wide switch: the *_created series double the /metrics size and nobody graphs them.
    prometheus_client.disable_created_metrics()
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(serve(config))


if __name__ == "__main__":
    sys.exit(main())
