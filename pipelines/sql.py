"""``python -m pipelines.sql NAME|FILE|"SELECT …"``: read-only SQL over the lake (the runner is :mod:`prefhouse.pipelines.core.sql`)."""

from __future__ import annotations

import sys

from prefhouse.pipelines.core.errors import run
from prefhouse.pipelines.core.sql import main

if __name__ == "__main__":
    sys.exit(run(main))
