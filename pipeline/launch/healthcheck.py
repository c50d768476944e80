"""Container healthcheck for a service: `python -m pipeline.launch.healthcheck <service>` exits 0 while it lives.

Alive means its heartbeat hash `service:<name>` was written less than SERVICE_DEAD_AFTER_S ago and does not say
`stopped`. A degraded service (source unreachable, backing off) is alive: it is doing what it should, and the
dashboard shows why. `trade_processor` resolves to this worker's consumer name (TRADE_PROCESSOR_CONSUMER, or
`trade_processor@<hostname>` when that is empty, as in a scaled compose service).
"""

from __future__ import annotations

import argparse
import socket
import sys
import time

import redis

from common import keys
from common.config import RedisSettings, ServiceSettings, load
from common.errors import ConfigError
from common.payloads import decode_heartbeat
from pipeline.embedded.redis_server import probe_client
from processors.trade_processor import ProcessorSettings


def heartbeat_name(service: str) -> str:
    if service != "trade_processor":
        return service
    return load(ProcessorSettings).trade_processor_consumer or f"trade_processor@{socket.gethostname()}"


def check(service: str) -> str:
    """'' when alive, else why not (one line)."""
    settings = load(RedisSettings)
    name = heartbeat_name(service)
    client = probe_client(settings, timeout_s=2.0)
    try:
        fields = client.hgetall(keys.service_key(name))
    except redis.RedisError as exc:
        return f"redis unreachable: {type(exc).__name__}"
    finally:
        client.close()
    if not fields:
        return f"no heartbeat under {keys.service_key(name)}"
    heartbeat = decode_heartbeat(fields)
    age_s = time.time() - heartbeat.heartbeat_at
    if age_s > load(ServiceSettings).dead_after_s:
        return f"{name}: last heartbeat {age_s:.0f} s ago"
    if heartbeat.state == "stopped":
        return f"{name}: stopped"
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.launch.healthcheck", description=__doc__.splitlines()[0])
    parser.add_argument("service", help="service name, e.g. polymarket_ingester")
    args = parser.parse_args(argv)
    try:
        problem = check(args.service)
    except ConfigError as exc:
        problem = str(exc)
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
