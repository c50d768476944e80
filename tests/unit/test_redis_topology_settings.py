"""Where Redis is: REDIS_URL, TLS, Sentinel, Cluster and the key prefix. Bad combinations stop at start with a
message naming the settings; no message or description ever holds a password; with `{pm}:` every key a script gets
hashes to one Redis Cluster slot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from common import keys
from common.config import RedisSettings, hash_tag, load
from common.errors import ConfigError
from common.redis_client import make_redis, make_sync_redis
from pipeline.launch.plan import LaunchError, need_embedded_redis

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cr%40t-pw"  # percent-escaped "@" in a URL


def settings_from(monkeypatch: pytest.MonkeyPatch, **env: str) -> RedisSettings:
    """The settings of exactly these REDIS_* variables."""
    for name in list(os.environ):
        if name.startswith("REDIS_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load(RedisSettings)


def test_url_sets_address_user_password_db_and_tls(monkeypatch) -> None:
    settings = settings_from(monkeypatch, REDIS_URL=f"rediss://app:{SECRET}@cache.example:6380/3")
    assert (settings.host, settings.port, settings.db, settings.username, settings.tls) == (
        "cache.example", 6380, 3, "app", True,
    )  # fmt: skip
    assert settings.password is not None and settings.password.get_secret_value() == "s3cr@t-pw"
    assert settings.describe() == "rediss://app@cache.example:6380/3"
    assert "s3cr" not in repr(settings) and "s3cr" not in str(settings)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REDIS_URL": "http://h:1"}, "REDIS_URL must look like redis://"),
        ({"REDIS_URL": "redis://h/zero"}, "REDIS_URL: the path must be a database number"),
        ({"REDIS_URL": f"redis://u:{SECRET}@h", "REDIS_HOST": "other"}, "REDIS_URL and REDIS_HOST both say"),
        ({"REDIS_SENTINELS": "a:26379"}, "REDIS_SENTINELS and REDIS_SENTINEL_MASTER go together"),
        ({"REDIS_SENTINEL_MASTER": "pm"}, "REDIS_SENTINELS and REDIS_SENTINEL_MASTER go together"),
        ({"REDIS_SENTINELS": "a:26379,b", "REDIS_SENTINEL_MASTER": "pm"}, "REDIS_SENTINELS: 'b' is not host:port"),
        (
            {
                "REDIS_SENTINELS": "a:1",
                "REDIS_SENTINEL_MASTER": "pm",
                "REDIS_CLUSTER": "true",
                "REDIS_KEY_PREFIX": "{pm}:",
            },
            "REDIS_SENTINELS and REDIS_CLUSTER=true exclude each other",
        ),
        ({"REDIS_CLUSTER": "true"}, "REDIS_CLUSTER=true needs REDIS_KEY_PREFIX with a hash tag"),
        ({"REDIS_CLUSTER": "true", "REDIS_KEY_PREFIX": "{}:"}, "needs REDIS_KEY_PREFIX with a hash tag"),
        ({"REDIS_CLUSTER": "true", "REDIS_KEY_PREFIX": "{pm}:", "REDIS_DB": "2"}, "REDIS_DB=2: a Redis Cluster"),
        ({"REDIS_TLS_CA_FILE": "/etc/hostname"}, "REDIS_TLS_CA_FILE is set but TLS is off"),
        ({"REDIS_TLS": "true", "REDIS_TLS_CA_FILE": "/no/such/ca.pem"}, "REDIS_TLS_CA_FILE: no such file"),
        ({"REDIS_KEY_PREFIX": "pm*"}, "REDIS_KEY_PREFIX 'pm*': at most 64 characters, no whitespace"),
    ],
)
def test_bad_combinations_stop_with_the_settings_named_and_no_secret(monkeypatch, env, message) -> None:
    with pytest.raises(ConfigError) as raised:
        settings_from(monkeypatch, **env)
    assert message in str(raised.value)
    assert "s3cr" not in str(raised.value)


def test_sentinel_and_cluster_describe_themselves_without_secrets(monkeypatch) -> None:
    sentinel = settings_from(
        monkeypatch, REDIS_SENTINELS="10.0.0.1:26379, 10.0.0.2:26379", REDIS_SENTINEL_MASTER="pm",
        REDIS_PASSWORD="s3cr-pw", REDIS_SENTINEL_PASSWORD="s3cr-sentinel",
    )  # fmt: skip
    assert sentinel.topology == "sentinel"
    assert sentinel.describe() == "sentinel pm via 10.0.0.1:26379, 10.0.0.2:26379 (redis, db 0)"
    cluster = settings_from(monkeypatch, REDIS_CLUSTER="true", REDIS_KEY_PREFIX="{pm}:", REDIS_HOST="node-3")
    assert (cluster.topology, cluster.describe()) == ("cluster", "cluster via redis://node-3:6379/0")


def test_the_factory_builds_the_client_each_deployment_needs(monkeypatch) -> None:
    """No server needed: Sentinel and standalone clients connect lazily (a cluster client asks at first use)."""
    sentinel = settings_from(monkeypatch, REDIS_SENTINELS="127.0.0.1:1", REDIS_SENTINEL_MASTER="pm",
                             REDIS_USERNAME="app", REDIS_PASSWORD="pw")  # fmt: skip
    client = make_redis(sentinel)
    assert type(client.connection_pool).__name__ == "SentinelConnectionPool"
    assert client.connection_pool.connection_kwargs["username"] == "app"
    tls = settings_from(monkeypatch, REDIS_URL="rediss://127.0.0.1:1/2", REDIS_TLS_CA_FILE=__file__)
    sync_client = make_sync_redis(tls, timeout_s=1)
    kwargs = sync_client.connection_pool.connection_kwargs
    assert (kwargs["ssl_ca_certs"], kwargs["ssl_check_hostname"], kwargs["db"]) == (__file__, True, 2)
    assert sync_client.connection_pool.connection_class is redis.SSLConnection
    assert isinstance(make_redis(tls), aioredis.Redis)


@pytest.mark.parametrize(("prefix", "tag"), [("", None), ("pm:", None), ("{pm}:", "pm"), ("{}x{a}", None)])
def test_hash_tag_is_what_redis_cluster_hashes(prefix: str, tag: str | None) -> None:
    assert hash_tag(prefix) == tag


# Every key each script gets, by call site (common/streams.py, common/dead_letters.py, common/unique_insert.py).
SLOT_PROBE = """
import json
from redis.crc import key_slot
from common import keys
streams = [keys.STREAM_MARKETS, keys.STREAM_EVENTS, keys.STREAM_ORDER_EVENTS, keys.STREAM_TRADES]
calls = {
    "append_page goldsky": [keys.STREAM_ORDER_EVENTS, keys.STREAM_DLQ, keys.STATE_GOLDSKY_LAST_TIMESTAMP,
                            keys.STATE_GOLDSKY_LAST_ID],
    "append_page chain": [keys.STREAM_ORDER_EVENTS, keys.STREAM_DLQ, keys.STATE_CHAIN_LAST_BLOCK],
    "append_page markets": [keys.STREAM_MARKETS, keys.STREAM_DLQ, keys.STATE_POLYMARKET_OFFSET,
                            keys.MARKETS_CONTENT_HASH, keys.MARKETS_BY_TOKEN],
    "append_page events": [keys.STREAM_EVENTS, keys.STREAM_DLQ, keys.STATE_POLYMARKET_EVENTS_OFFSET,
                           keys.EVENTS_CONTENT_HASH],
    "append_page backfill": [keys.STREAM_ORDER_EVENTS, keys.STREAM_DLQ, keys.backfill_key("goldsky", 1, 2, "x")],
    "finish_batch processor": [keys.STREAM_ORDER_EVENTS, keys.STREAM_TRADES, keys.STREAM_DLQ,
                               keys.failures_key(keys.STREAM_ORDER_EVENTS, keys.GROUP_TRADE_PROCESSOR)],
    **{f"finish_batch writer {s}": [s, s + ":unused", keys.STREAM_DLQ,
                                    keys.failures_key(s, keys.GROUP_CLICKHOUSE_WRITER)] for s in streams},
    **{f"retry_dead_letter {s}": [s, keys.STREAM_DLQ] for s in streams},
    "locks, heartbeats, lookups": [keys.insert_lock_key("trades"), keys.service_key("x"), keys.TOKEN_LOOKUPS],
}
print(json.dumps({name: sorted({key_slot(k.encode()) for k in ks}) for name, ks in calls.items()}))
"""


def slots_by_call(prefix: str) -> dict[str, list[int]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_")} | {"REDIS_KEY_PREFIX": prefix}
    done = subprocess.run([sys.executable, "-c", SLOT_PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60, check=True)  # fmt: skip
    import json

    return json.loads(done.stdout)


def test_with_a_hash_tag_prefix_every_script_call_has_one_slot_and_without_it_none_does() -> None:
    tagged = slots_by_call("{pm}:")
    assert {slot for slots in tagged.values() for slot in slots} == {13650}
    plain = slots_by_call("")
    assert [name for name, slots in plain.items() if len(slots) == 1] == []


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"REDIS_SENTINELS": "127.0.0.1:1", "REDIS_SENTINEL_MASTER": "pm"}, "unset REDIS_SENTINELS"),
        (
            {"REDIS_CLUSTER": "true", "REDIS_KEY_PREFIX": "{pm}:", "REDIS_HOST": "127.0.0.1", "REDIS_PORT": "1"},
            "unset REDIS_CLUSTER",
        ),
        ({"REDIS_URL": "rediss://127.0.0.1:1/0"}, "unset REDIS_TLS"),
    ],
)
def test_the_launcher_never_embeds_a_redis_in_place_of_sentinel_cluster_or_tls(monkeypatch, env, named) -> None:
    with pytest.raises(LaunchError, match=named):
        need_embedded_redis(settings_from(monkeypatch, **env))


def test_a_dead_letters_recorded_stream_is_read_under_the_current_prefix() -> None:
    assert keys.PREFIX == ""  # the default, in this process
    assert keys.current_stream("{pm}:stream:trades") == keys.STREAM_TRADES
    assert keys.current_stream("stream:order_events") == keys.STREAM_ORDER_EVENTS
    assert keys.current_stream("elsewhere") == "elsewhere"
    assert keys.under("{pm}:", keys.STREAM_TRADES) == "{pm}:stream:trades"
