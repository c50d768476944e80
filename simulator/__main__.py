"""`python -m simulator [flags]` — same as `python -m pipeline simulator [flags]`."""

from __future__ import annotations

import sys

from simulator.server import main

if __name__ == "__main__":
    sys.exit(main())
