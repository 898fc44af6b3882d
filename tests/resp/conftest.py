"""Fixtures: a LocalService behind a real loopback RESP server (see resp_harness)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from resp_harness import ServerThread, start_server


@pytest.fixture(params=["asyncio", "uvloop"])
def server(request: pytest.FixtureRequest) -> Iterator[ServerThread]:
    running = start_server(use_uvloop=request.param == "uvloop")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def shared_server() -> Iterator[ServerThread]:
    running = start_server(use_uvloop=True)
    yield running
    running.stop()
