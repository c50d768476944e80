"""A consumer service run as a subprocess by test_service.py: each batch takes 1 s, so SIGTERM lands mid-batch."""

from __future__ import annotations

import asyncio
import sys

from common.config import RedisSettings, StreamSettings
from common.service import Service, run_worker
from common.streams import Entry, StreamConsumer, run_consumer

STREAM = "stream:slow"


async def body(service: Service) -> None:
    consumer = StreamConsumer(
        service.redis, stream=STREAM, group="g", consumer="slow-1", settings=StreamSettings(block_ms=50), batch_max=5
    )

    async def handle(batch: list[Entry]) -> None:
        print("batch started", flush=True)
        await asyncio.sleep(1.0)
        await consumer.finish(ack=[entry.id for entry in batch])
        service.count("processed", len(batch))

    await run_consumer(consumer, handle, stop=service.stop)


if __name__ == "__main__":
    asyncio.run(run_worker("slow_consumer", RedisSettings(host="127.0.0.1", port=int(sys.argv[1])), body))
