"""`python -m tests.chaos`: one chaos run with the `CHAOS_*` settings (tests/chaos/config.py)."""

import sys

from tests.chaos.harness import main

sys.exit(main())
