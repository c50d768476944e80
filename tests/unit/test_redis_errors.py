"""map_redis_errors: redis-py's errors, parsed from the server's real error replies, become the project's."""

from __future__ import annotations

import pytest
from redis._parsers.base import BaseParser

from common.errors import SinkCommandError, TransientSinkError
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
    "ERR max number of clients reached",
]
BUGS = [
    "WRONGTYPE Operation against a key holding the wrong kind of value",
    "ERR Error running script (call to f_0123): @user_script:1: user_script:1: bad argument",
    "NOPERM this user has no permissions to run the 'xadd' command",
    "BUSYGROUP Consumer Group name already exists",
]


@pytest.mark.parametrize("reply", NOT_NOW)
async def test_replies_that_mean_not_now_become_transient(reply: str) -> None:
    with pytest.raises(TransientSinkError) as raised:
        async with map_redis_errors("append"):
            raise BaseParser.parse_error(reply)
    assert raised.value.sink == "redis"
    assert str(raised.value).startswith("redis append: ")


@pytest.mark.parametrize("reply", BUGS)
async def test_replies_that_mean_a_wrong_command_become_command_errors(reply: str) -> None:
    with pytest.raises(SinkCommandError) as raised:
        async with map_redis_errors("append"):
            raise BaseParser.parse_error(reply)
    assert raised.value.sink == "redis"
    assert not isinstance(raised.value, TransientSinkError)


async def test_socket_errors_and_timeouts_become_transient() -> None:
    for error in (ConnectionResetError("reset by peer"), TimeoutError()):
        with pytest.raises(TransientSinkError):
            async with map_redis_errors("read"):
                raise error
