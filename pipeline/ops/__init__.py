"""Operator commands: status, reset, dlq, replay, verify, backfill (one `python -m pipeline <command>` each)."""
