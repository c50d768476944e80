"""`python -m pipeline <command>`: the operator's entry point."""

from pipeline.cli import main

raise SystemExit(main())
