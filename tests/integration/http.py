"""A tiny HTTP client for tests (stdlib only, so a test never depends on the code it checks)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # names lower-cased: HTTP header names are case-insensitive
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


def request(
    url: str,
    data: bytes | None = None,
    content_type: str = "application/json",
    timeout: float = 30,
    headers: dict[str, str] | None = None,
) -> Response:
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if data is not None:
        req.add_header("Content-Type", content_type)
    for name, value in (headers or {}).items():
        req.add_header(name, value)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return Response(resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read())
    except urllib.error.HTTPError as err:
        return Response(err.code, {k.lower(): v for k, v in err.headers.items()}, err.read())


def post_entries(url: str, entries: list[dict], ndjson: bool = False) -> Response:
    if ndjson:
        body = "".join(json.dumps(e) + "\n" for e in entries).encode()
        return request(url, body, "application/x-ndjson")
    return request(url, json.dumps(entries).encode())
