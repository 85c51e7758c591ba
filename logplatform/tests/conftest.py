"""Fixtures that run the real service as a subprocess on a free loopback port.

Every process a test starts is stopped by PID in the fixture's ``finally`` (SIGTERM, then SIGKILL
if it does not exit), whatever the test did.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from lp_helpers import Service, launcher, stop_process


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """Factory: ``start_service(**config_overrides)`` -> running Service; all stopped after."""
    start, started = launcher(tmp_path)
    try:
        yield start
    finally:
        for proc in started:
            stop_process(proc)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One node shared by a module's read-mostly tests (small limits, to test them cheaply)."""
    start, started = launcher(tmp_path_factory.mktemp("node"))
    try:
        yield start(max_body_bytes=4096, max_batch_entries=20)
    finally:
        for proc in started:
            stop_process(proc)
