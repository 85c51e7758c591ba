"""A small stand-in for logplatform's ingest endpoint, for the evidence tools' tests.

It speaks the service's contract: `POST /v1/logs` with a JSON array or NDJSON of entries; `200
{"accepted": n}` after every entry of the batch is appended (and fsynced) to the sink file
`<sink>/<node>-YYYY-MM-DD.ndjson` as the entry plus `_color`, `_version`, `_node`, `_ingested_at`;
`400` for a malformed batch, with nothing written. Faults for the tests to provoke:

  --fail-every N             every Nth request is answered 503 and nothing is written
  --write-then-fail-every N  every Nth request is written and then answered 500 (a lying server)
  --delay S                  wait S seconds before handling each request

`GET /stats` returns what the server did. Run as a script it prints `PORT <n>` once it listens.
`running_server()` starts it as a subprocess and stops it by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiohttp import web

REQUIRED = ("ts", "level", "service", "message")


def _parse(body: bytes) -> list[dict]:
    text = body.strip()
    if text.startswith(b"["):
        entries = orjson.loads(text)
    else:
        entries = [orjson.loads(line) for line in text.splitlines() if line.strip()]
    if not isinstance(entries, list) or not entries:
        raise ValueError("expected a non-empty JSON array or NDJSON")
    for e in entries:
        if not isinstance(e, dict) or any(k not in e for k in REQUIRED):
            raise ValueError(f"entry misses one of {REQUIRED}")
    return entries


def make_app(args: argparse.Namespace) -> web.Application:
    sink = Path(args.sink)
    sink.mkdir(parents=True, exist_ok=True)
    stats = {"requests": 0, "ok": 0, "failed": 0, "written_entries": 0, "lied": 0}
    lock = asyncio.Lock()

    async def ingest(request: web.Request) -> web.Response:
        stats["requests"] += 1
        n = stats["requests"]
        body = await request.read()
        if args.delay:
            await asyncio.sleep(args.delay)
        headers = {"X-Served-By": args.node}
        if args.fail_every and n % args.fail_every == 0:
            stats["failed"] += 1
            return web.json_response({"error": "injected failure"}, status=503, headers=headers)
        try:
            entries = _parse(body)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400, headers=headers)
        now = time.time()
        extra = {"_color": args.color, "_version": args.version, "_node": args.node, "_ingested_at": now}
        data = b"".join(orjson.dumps({**e, **extra}) + b"\n" for e in entries)
        path = sink / f"{args.node}-{time.strftime('%Y-%m-%d', time.gmtime(now))}.ndjson"
        async with lock:
            with path.open("ab") as f:
                f.write(data)
                f.flush()
                if args.fsync:
                    os.fsync(f.fileno())
        stats["written_entries"] += len(entries)
        if args.write_then_fail_every and n % args.write_then_fail_every == 0:
            stats["lied"] += 1
            return web.json_response({"error": "injected failure after write"}, status=500, headers=headers)
        stats["ok"] += 1
        return web.json_response({"accepted": len(entries)}, headers=headers)

    async def get_stats(_request: web.Request) -> web.Response:
        return web.json_response(stats)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/logs", ingest)
    app.router.add_get("/stats", get_stats)
    return app


async def _serve(args: argparse.Namespace) -> None:
    runner = web.AppRunner(make_app(args), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.port, reuse_address=True)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"PORT {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sink", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--node", default="blue-1")
    p.add_argument("--color", default="blue")
    p.add_argument("--version", default="1.0.0")
    p.add_argument("--fail-every", type=int, default=0)
    p.add_argument("--write-then-fail-every", type=int, default=0)
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--fsync", action=argparse.BooleanOptionalAction, default=True)
    args = p.parse_args(argv)
    try:
        import uvloop  # noqa: PLC0415

        uvloop.run(_serve(args))
    except ImportError:
        asyncio.run(_serve(args))


@dataclass
class Server:
    url: str
    base: str
    sink: Path
    node: str
    proc: subprocess.Popen

    def stats(self) -> dict:
        import urllib.request  # noqa: PLC0415

        with urllib.request.urlopen(f"{self.base}/stats", timeout=5) as r:
            return orjson.loads(r.read())


@contextlib.contextmanager
def running_server(sink: Path, *extra: str, node: str = "blue-1", color: str = "blue") -> Iterator[Server]:
    """Start the stand-in server as a subprocess on a free loopback port; stop it by PID on exit."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "--sink", str(sink), "--node", node, "--color", color, *extra],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("PORT "):
            raise RuntimeError(f"stand-in server did not start (said {line!r}, exit {proc.poll()})")
        base = f"http://127.0.0.1:{int(line.split()[1])}"
        yield Server(url=f"{base}/v1/logs", base=base, sink=sink, node=node, proc=proc)
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stdout:
            proc.stdout.close()


if __name__ == "__main__":
    main()
