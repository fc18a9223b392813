"""``make bench``: authproxy side by side with nginx and Apache + mod_auth_openidc, one command.

    .venv/bin/python bench/run.py                 # the full run (~10 minutes), writes bench/results.md
    BENCH_QUICK=1 .venv/bin/python bench/run.py   # a ~2 minute smoke run, writes bench/out/results-quick.md

Everything is started on 127.0.0.1 (the provider on 127.0.0.2) and ended by PID when the run
finishes, fails or is interrupted. The method and the settings are in ``bench/suite.py`` and
``docs/performance.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    # run as a script (sys.path[0] is bench/): make the repository importable for bench.* and tests.*
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.suite import main

    sys.exit(main())
