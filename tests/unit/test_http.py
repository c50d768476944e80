"""request_json retries what is transient, honours Retry-After, and gives up on what is permanent."""

from __future__ import annotations

import time

import httpx
import msgspec
import pytest

from common.config import HttpSettings
from common.errors import PermanentSourceError, TransientSourceError
from common.http import RateLimiter, request_json

SETTINGS = HttpSettings(max_attempts=4, backoff_base_s=0.001, backoff_max_s=0.002)


def scripted(responses: list[httpx.Response | Exception]) -> tuple[httpx.AsyncClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        item = responses.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    return httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://api"), seen


async def test_transient_failures_are_retried_until_success() -> None:
    client, seen = scripted(
        [
            httpx.Response(503, text="busy"),
            httpx.ReadTimeout("slow"),
            httpx.Response(200, content=b'[{"id": "1"'),  # truncated body
            httpx.Response(200, json=[{"id": "1"}]),
        ]
    )
    assert await request_json(client, "GET", "/markets", settings=SETTINGS, what="markets") == [{"id": "1"}]
    assert len(seen) == 4


async def test_a_typed_decoder_gets_the_body_and_its_error_on_a_truncated_body_is_retried() -> None:
    class Item(msgspec.Struct):
        id: str

    decoder = msgspec.json.Decoder(list[Item])
    client, seen = scripted([httpx.Response(200, content=b'[{"id": "1"'), httpx.Response(200, json=[{"id": "1"}])])
    reply = await request_json(client, "GET", "/markets", settings=SETTINGS, what="markets", decode=decoder.decode)
    assert reply == [Item(id="1")] and len(seen) == 2


async def test_retry_after_is_honoured() -> None:
    client, seen = scripted([httpx.Response(429, headers={"Retry-After": "0.3"}), httpx.Response(200, json={})])
    started = time.monotonic()
    await request_json(client, "GET", "/events", settings=SETTINGS, what="events")
    assert time.monotonic() - started >= 0.3
    assert len(seen) == 2


async def test_permanent_errors_are_not_retried() -> None:
    client, seen = scripted([httpx.Response(422, text="offset is not allowed on keyset endpoints")])
    with pytest.raises(PermanentSourceError, match="HTTP 422"):
        await request_json(client, "GET", "/markets/keyset", settings=SETTINGS, what="markets keyset")
    assert len(seen) == 1


async def test_gives_up_after_max_attempts_with_a_transient_error() -> None:
    client, seen = scripted([httpx.Response(500)] * 4)
    with pytest.raises(TransientSourceError, match="HTTP 500"):
        await request_json(client, "GET", "/x", settings=SETTINGS, what="x")
    assert len(seen) == 4


async def test_error_messages_never_carry_the_url() -> None:
    client, _ = scripted([httpx.Response(404)])
    with pytest.raises(PermanentSourceError) as info:
        await request_json(client, "POST", "/v2/SECRETKEY", settings=SETTINGS, what="eth_getLogs")
    assert "SECRETKEY" not in str(info.value)


async def test_rate_limiter_spaces_requests() -> None:
    limiter = RateLimiter(rate_per_s=50, burst=1)
    started = time.monotonic()
    for _ in range(11):
        await limiter.acquire()
    assert time.monotonic() - started >= 0.19  # 10 waits of 20 ms after the first token


async def test_errors_carry_the_http_status() -> None:
    client, _ = scripted([httpx.Response(503, text="keyset pagination is not configured")])
    with pytest.raises(TransientSourceError) as info:
        await request_json(client, "GET", "/markets/keyset", settings=HttpSettings(max_attempts=1), what="keyset")
    assert info.value.status == 503


async def test_a_json_body_is_sent_as_json_on_every_attempt() -> None:
    client, seen = scripted([httpx.Response(503, text="busy"), httpx.Response(200, json={"ok": True})])
    body = [{"jsonrpc": "2.0", "id": 7, "method": "eth_getBlockByNumber", "params": ["0x10", False]}]
    assert await request_json(client, "POST", "/rpc", settings=SETTINGS, what="rpc", json=body) == {"ok": True}
    assert len(seen) == 2
    for request in seen:
        assert request.headers["Content-Type"] == "application/json"
        assert msgspec.json.decode(request.content) == body
