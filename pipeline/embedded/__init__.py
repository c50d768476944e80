"""Embedded servers for a machine with none configured: redis-server with AOF, chDB over ClickHouse HTTP."""
