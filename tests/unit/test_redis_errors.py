"""map_redis_errors: redis-py's errors, parsed from the server's real error replies, become the project's."""

from __future__ import annotations

import pytest
from redis._parsers.base import BaseParser
from redis.exceptions import RedisClusterException, SlotNotCoveredError

from common.errors import SinkCommandError, SinkError, TransientSinkError
from common.redis_client import map_redis_errors

# error replies as redis-server sends them; redis-py's own parser turns each into the exception it raises
NOT_NOW = [
    "OOM command not allowed when used memory > 'maxmemory'.",
    "READONLY You can't write against a read only replica.",
    "LOADING Redis is loading the dataset in memory",
    "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
    "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
    "TRYAGAIN Multiple keys request during rehashing of slot",
    "CLUSTERDOWN The cluster is down",
    "NOREPLICAS Not enough good replicas to write.",
    "ERR max number of clients reached",
]
BUGS = [
    "WRONGTYPE Operation against a key holding the wrong kind of value",
    "ERR Error running script (call to f_0123): @user_script:1: user_script:1: bad argument",
    "NOPERM this user has no permissions to run the 'xadd' command",
    "BUSYGROUP Consumer Group name already exists",
]


@pytest.mark.parametrize(
    ("reply", "expected"),
    [(reply, TransientSinkError) for reply in NOT_NOW] + [(reply, SinkCommandError) for reply in BUGS],
)
async def test_not_now_replies_are_transient_and_wrong_commands_are_command_errors(
    reply: str, expected: type[SinkError]
) -> None:
    with pytest.raises(SinkError) as raised:
        async with map_redis_errors("append"):
            raise BaseParser.parse_error(reply)
    assert type(raised.value) is expected
    assert raised.value.sink == "redis" and str(raised.value).startswith("redis append: ")


async def test_socket_errors_and_timeouts_become_transient() -> None:
    for error in (ConnectionResetError("reset by peer"), TimeoutError()):
        with pytest.raises(TransientSinkError):
            async with map_redis_errors("read"):
                raise error


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (RedisClusterException("Redis Cluster cannot be connected. Please provide at least one reachable node"),
         TransientSinkError),
        (SlotNotCoveredError("Slot 13650 is not covered by the cluster"), TransientSinkError),
        (RedisClusterException("EVALSHA - all keys must map to the same key slot"), SinkCommandError),
    ],
)  # fmt: skip
async def test_a_cluster_clients_own_errors_are_mapped_too(error: Exception, expected: type[SinkError]) -> None:
    with pytest.raises(expected):
        async with map_redis_errors("append"):
            raise error
