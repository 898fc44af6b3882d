"""Fixtures for node-runtime tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ringbolt.server.process import LocalCluster, find_base_port


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Three real node processes, two shards, fsync on."""
    data_dir = tmp_path_factory.mktemp("cluster")
    local = LocalCluster(3, data_dir, find_base_port(3, start=21000), shards=2)
    with local:
        local.start()
        local.wait_for_leader(0, 30.0)
        local.wait_for_leader(1, 30.0)
        yield local


