"""The pipeline's read model: one read of Redis and ClickHouse (`snapshot`), its shape (`models`), what needs two
reads (`history`: rates, stalled cursors, the charts) and the masking of secrets in what is shown (`redaction`).
The dashboard and the ops commands (status, reset, replay) show what these return."""
