"""Fixtures live in tests/fixtures/: one module per real service the tests start, and the dashboard world (a small
running pipeline); shared helpers (`wait_until`, `FAST_STREAMS`) in tests/fixtures/helpers.py."""

pytest_plugins = [
    "tests.fixtures.redis_server",
    "tests.fixtures.clickhouse_server",
    "tests.fixtures.simulator",
    "tests.fixtures.redis_topologies",
    "tests.fixtures.dashboard_world",
]
