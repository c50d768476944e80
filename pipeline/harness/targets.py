"""The product's performance targets, stated once: the bench's report judges its figures against these, and the
README quotes them (tests/unit/test_docs.py checks that it does)."""

FILLS_PER_S = 50_000  # end to end, history fills into `trades`, on 2 cores
CPU_US_PER_FILL = 40  # every product process together: 2 cores at 50,000 fills/s leave 40 CPU-µs a fill
LATENCY_RATE = 1_000  # fills/s of the latency run
LATENCY_P99_S = 1.5  # source to `ingested_at`, at LATENCY_RATE
WRITER_RSS_MB = 150  # the ClickHouse writer's peak RSS, at the default CLICKHOUSE_BATCH_SIZE
SERVICE_RSS_MB = 200  # any other service's peak RSS
DEDUP_SLOWDOWN = 0.10  # the writer with the unique-insert check, against without
