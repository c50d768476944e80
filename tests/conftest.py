"""Fixtures live in tests/fixtures/, one module per real service the tests start."""

pytest_plugins = [
    "tests.fixtures.redis_server",
    "tests.fixtures.clickhouse_server",
    "tests.fixtures.simulator",
    "tests.fixtures.redis_topologies",
]
