"""The whole pipeline on the Redis deployments production uses, each started here on loopback ports: Redis Cluster
(3 primaries, 3 replicas) and Sentinel (primary, replica, three Sentinels) with the primary SIGKILLed mid-run, and
a TLS server with an ACL user reached through `rediss://`. Each run ends exact against the simulator's truth:
`count() == uniqExact(id) ==` its fills in `trades` and `order_filled_events`. The Sentinel file also drives the
lost-acknowledged-write scenario by direct calls.

Marked `scaleout` (excluded from the default run like `chaos`; `.ci/run` runs them with `pytest -m scaleout`): each
starts six to eight servers and the fleet of services, ~1-2 minutes apiece on a busy 2-core machine.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from common import keys
from common.config import StreamSettings
from common.errors import CursorMoved, TransientSinkError
from common.key_prefix import migrate_keys, prefixes_in_use
from common.lua_scripts import CrossSlotKeys
from common.redis_client import make_redis, make_sync_redis
from common.streams import Finish, StreamConsumer, append_with_cursor, dead_entry, read_cursor
from pipeline.harness.chaos import service_env
from pipeline.harness.fleet import REPO_ROOT, Fleet, load_average, redis_settings_from, tail, wait_converged
from pipeline.harness.truth_check import check_against_truth, fetch_truth
from tests.fixtures.helpers import items_in, wait_until
from tests.fixtures.redis_topologies import ACL_PASSWORD, Cluster, SentinelDeployment, TlsServer

pytestmark = [pytest.mark.scaleout, pytest.mark.timeout(600)]

HISTORY_FILLS = 3000
LIVE_RATE = 150  # fills/s while the primary is killed
LIVE_FILLS = 2500
PREFIX = "{pm}:"


def run_pipeline(
    workdir: Path, redis_env: dict[str, str], *, disrupt: Callable[[Fleet], str] | None = None
) -> tuple[str, int]:
    """The six services against the simulator (history, then a live stretch during which `disrupt` runs), drained
    and checked against the truth. Returns what `disrupt` reported and the fills expected."""
    sim_args = ["--seed", "23", "--history-fills", str(HISTORY_FILLS), "--rate", str(LIVE_RATE),
                "--finalized-lag-blocks", "0", "--live-block-interval-s", "1"]  # fmt: skip
    with Fleet(workdir, simulator_args=sim_args, service_env=service_env(), redis_env=redis_env) as fleet:
        fleet.start_servers()
        fleet.start_services()
        wait_for(lambda: trades_stored(fleet) > 0, "the first trades", 120)
        reported = disrupt(fleet) if disrupt is not None else ""
        target = HISTORY_FILLS + LIVE_FILLS
        wait_for(lambda: int(fetch_truth(fleet)["count"]) >= target, "the live fills", 120)
        fleet.sim("POST", "/_sim/config", json={"rate": 0})
        truth = fetch_truth(fleet)
        try:
            wait_converged(fleet, int(truth["count"]), 300)
        except TimeoutError:
            logs = "\n".join(f"--- {name}\n{tail(p.log_path)}" for name, p in fleet.programs.items())
            raise AssertionError(f"did not converge; load {load_average()}\n{logs}") from None
        verdict = check_against_truth(fleet, truth)
        print(f"{verdict.expected:,} fills: {verdict.summary()}, {reported or 'no disruption'}, load {load_average()}")
        assert verdict.problems == []
        assert verdict.counts["trades"] == (verdict.expected, verdict.expected)
        assert verdict.expected >= target
        for name, program in fleet.programs.items():
            assert "CrossSlotKeys" not in tail(program.log_path, 10**7), name
        assert_status_reads_the_pipeline(fleet)
        return reported, verdict.expected


def assert_status_reads_the_pipeline(fleet: Fleet) -> None:
    """`python -m pipeline status` (the dashboard's snapshot) on the same deployment: it finds the streams under
    the services' prefix, their groups drained, and shows no Redis secret."""
    env = fleet.programs["clickhouse_writer"].env
    done = subprocess.run([sys.executable, "-m", "pipeline", "status", "--json", "--sample-s", "0"], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    streams = {stream["name"]: stream for stream in json.loads(done.stdout)["streams"]}
    trades = streams[keys.under(fleet.key_prefix, keys.STREAM_TRADES)]
    assert [(group["name"], group["pending"]) for group in trades["groups"]] == [("clickhouse-writer", 0)]
    for name, value in env.items():
        if name in ("REDIS_URL", "REDIS_PASSWORD"):
            assert value not in done.stdout + done.stderr
            assert ACL_PASSWORD not in done.stdout + done.stderr


def trades_stored(fleet: Fleet) -> int:
    try:
        return int(fleet.ch("SELECT count() FROM trades").strip() or 0)
    except RuntimeError:
        return 0


def wait_for(check: Callable[[], bool], what: str, deadline_s: float) -> None:
    wait_until(check, what, timeout_s=deadline_s, interval_s=0.5, explain=lambda: f"load {load_average()}")


# --- Redis Cluster ---------------------------------------------------------------------------------------


def test_whole_pipeline_on_redis_cluster_survives_losing_the_primary_of_its_slot(redis_cluster: Cluster, tmp_path):
    pipeline_key = keys.under(PREFIX, keys.STREAM_TRADES)

    def kill_slot_primary(fleet: Fleet) -> str:
        victim = redis_cluster.node_serving(pipeline_key)
        victim.kill()
        killed_at = time.monotonic()
        wait_for(lambda: victim.port != redis_cluster.node_serving(pipeline_key).port, "replica promoted", 60)
        wait_for(lambda: redis_cluster.healthy(pipeline_key), "cluster ok", 60)
        return f"primary :{victim.port} of slot {redis.crc.key_slot(pipeline_key.encode())} SIGKILLed, " \
               f"replica serving after {time.monotonic() - killed_at:.1f} s"  # fmt: skip

    reported, _ = run_pipeline(tmp_path / "fleet", redis_cluster.env(PREFIX), disrupt=kill_slot_primary)
    assert "replica serving" in reported


async def test_on_a_cluster_scripts_refuse_keys_of_several_slots_before_sending(redis_cluster: Cluster):
    """The check in run_script: today's unprefixed names span slots; nothing reaches the cluster. (The prefixed
    names pass it on every call of the whole-pipeline run above, whose services would stop on this error.)"""
    settings = redis_settings_from(redis_cluster.env(PREFIX))
    client = make_redis(settings)
    try:
        with pytest.raises(CrossSlotKeys, match="REDIS_KEY_PREFIX"):
            await append_with_cursor(client, "stream:order_events", [b"{}"], {"state:chain_last_block": (None, "1")})
        assert await client.exists("stream:order_events", "state:chain_last_block") == 0
    finally:
        await client.aclose()


async def test_on_a_cluster_migrate_keys_copies_across_slots_keeping_groups_and_pending_entries(
    redis_cluster: Cluster,
):
    """RENAME between two slots is refused (CROSSSLOT): DUMP + RESTORE carries the stream with its groups."""
    client = make_redis(redis_settings_from(redis_cluster.env(PREFIX)))
    try:
        await client.xadd("stream:trades", {"data": b"1"})
        await client.xadd("stream:trades", {"data": b"2"})
        await client.xgroup_create("stream:trades", "clickhouse-writer", id="0")
        await client.xreadgroup("clickhouse-writer", "w1", {"stream:trades": ">"}, count=1)
        await client.set("state:chain_last_block", "9", ex=600)
        assert await migrate_keys(client, "", PREFIX) == {"renamed": 0, "copied": 2}
        moved = PREFIX + "stream:trades"
        assert [(g["name"], g["pending"]) for g in await client.xinfo_groups(moved)] == [(b"clickhouse-writer", 1)]
        assert [e["consumer"] for e in await client.xpending_range(moved, "clickhouse-writer", "-", "+", 5)] == [b"w1"]
        assert 0 < await client.ttl(PREFIX + "state:chain_last_block") <= 600
        assert await client.exists("stream:trades") + await client.exists("state:chain_last_block") == 0
        await check_key_prefix_under(client, PREFIX)
    finally:
        await client.aclose()


async def check_key_prefix_under(client, prefix: str) -> None:  # type: ignore[no-untyped-def]
    """Only `prefix` holds pipeline keys now (SCAN over every primary of the cluster)."""
    assert set(await prefixes_in_use(client)) == {prefix}


async def test_on_a_cluster_the_consumer_reads_claims_records_failures_and_dead_letters(
    redis_cluster: Cluster, monkeypatch: pytest.MonkeyPatch
):
    """Every StreamConsumer path on a cluster client: the flattened XREADGROUP reply, own pending, XAUTOCLAIM, the
    MULTI/EXEC of record_failure on one slot, and finish_batch with outputs and a dead letter."""
    monkeypatch.setattr(keys, "STREAM_DLQ", PREFIX + "stream:dlq")  # this process's prefix is the default one
    monkeypatch.setattr(keys, "STREAM_ITEMS", PREFIX + "stream:items")
    client = make_redis(redis_settings_from(redis_cluster.env(PREFIX)))
    settings = StreamSettings(block_ms=100, claim_min_idle_ms=1, claim_interval_s=0.01, max_deliveries=5)
    stream, output = PREFIX + "stream:in", PREFIX + "stream:out"
    try:
        for n in range(3):
            await client.xadd(stream, {"data": f"payload-{n}".encode()})
        first = StreamConsumer(client, stream=stream, group="g", consumer="a", settings=settings, batch_max=10)
        await first.ensure_group()
        batch = await first.read()
        assert [entry.data for entry in batch] == [b"payload-0", b"payload-1", b"payload-2"]
        await first.record_failure(batch[:1], "boom")
        assert await client.hget(first.failures_key, batch[0].id) == b"boom"
        await asyncio.sleep(0.05)
        second = StreamConsumer(client, stream=stream, group="g", consumer="b", settings=settings, batch_max=10)
        claimed = await second.read()
        assert [entry.id for entry in claimed] == [entry.id for entry in batch]
        result = await second.finish({claimed[1].id: Finish(outputs=[(b"out-1", 1)]),
                                      claimed[2].id: Finish(outputs=[(b"out-2", 1)]),
                                      claimed[0].id: Finish(dead=[dead_entry(second, claimed[0], "boom")])},
                                     output_stream=output)  # fmt: skip
        assert result == (3, 2, 1, 0)  # acked, emitted, dead-lettered (and acked), appended again
        assert [fields[b"data"] for _, fields in await client.xrange(output)] == [b"out-1", b"out-2"]
        assert await client.xlen(keys.STREAM_DLQ) == 1
        assert (await client.xpending(stream, "g"))["pending"] == 0
    finally:
        await client.aclose()


# --- Sentinel --------------------------------------------------------------------------------------------


def test_whole_pipeline_with_sentinel_survives_a_primary_kill(redis_sentinel: SentinelDeployment, tmp_path):
    def kill_primary(fleet: Fleet) -> str:
        redis_sentinel.primary.kill()
        killed_at = time.monotonic()
        redis_sentinel.wait_promoted(redis_sentinel.replica)
        return f"primary SIGKILLed, replica promoted after {time.monotonic() - killed_at:.1f} s"

    reported, _ = run_pipeline(tmp_path / "fleet", redis_sentinel.env(), disrupt=kill_primary)
    assert "promoted" in reported


async def test_an_acknowledged_append_lost_in_a_failover_is_refused_then_re_read(redis_sentinel: SentinelDeployment):
    """Replica link cut, a page acknowledged on the primary only, the primary killed, the replica promoted
    (`min-replicas-to-write` is 0, Redis' default): the page and its cursor are gone. The producer's next append
    expects the cursor it wrote and is refused (CursorMoved); it re-reads the cursor, fetches that range again,
    and the stream ends holding every page exactly once."""
    stream, cursor = keys.STREAM_ORDER_EVENTS, keys.STATE_CHAIN_LAST_BLOCK
    pages = {block: [f'{{"block":{block},"fill":{n}}}'.encode() for n in range(3)] for block in range(1, 5)}
    settings = redis_settings_from(redis_sentinel.env())
    client = make_redis(settings)
    primary, replica = redis_sentinel.primary, redis_sentinel.replica
    try:
        assert await append_with_cursor(client, stream, pages[1], {cursor: (None, "1")}) == 1
        assert await client.execute_command("WAIT", 1, 5000) == 1  # page 1 is on the replica
        replica.signal(signal.SIGSTOP)
        with redis.Redis(host="127.0.0.1", port=primary.port) as direct:
            direct.execute_command("CLIENT", "KILL", "TYPE", "replica")
            assert await append_with_cursor(client, stream, pages[2], {cursor: ("1", "2")}) == 1  # acknowledged
            assert direct.execute_command("WAIT", 1, 200) == 0  # ... by the primary alone
        primary.kill()
        replica.signal(signal.SIGCONT)
        redis_sentinel.wait_promoted(replica)

        with pytest.raises(CursorMoved):  # the producer goes on from the cursor it wrote: refused
            await retry_while_failing_over(lambda: append_with_cursor(client, stream, pages[3], {cursor: ("2", "3")}))
        stored = (await read_cursor(client, [cursor]))[cursor]
        assert stored == "1"  # rolled back with its page
        for block in range(int(stored) + 1, 5):  # the range re-read from the source, from the stored cursor on
            await append_with_cursor(client, stream, pages[block], {cursor: (str(block - 1), str(block))})
        assert items_in(await client.xrange(stream)) == [item for block in range(1, 5) for item in pages[block]]
        assert (await read_cursor(client, [cursor]))[cursor] == "4"
    finally:
        await client.aclose()


async def retry_while_failing_over(call):  # type: ignore[no-untyped-def]
    """The services retry a transient error; so does this direct caller, for the seconds a failover takes."""
    for _ in range(100):
        try:
            return await call()
        except TransientSinkError:
            await asyncio.sleep(0.2)
    return await call()


# --- TLS with an ACL user --------------------------------------------------------------------------------


def test_whole_pipeline_through_rediss_with_an_acl_user(redis_tls: TlsServer, tmp_path):
    run_pipeline(tmp_path / "fleet", redis_tls.env())
    # verification is on: the same server is refused without the CA that signed its certificate
    env = {k: v for k, v in redis_tls.env().items() if k != "REDIS_TLS_CA_FILE"}
    settings = redis_settings_from(env)
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        make_sync_redis(settings, timeout_s=2, retry=False).ping()
