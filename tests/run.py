"""`make test`: run the suite and print how long it took.

The suite runs in ``MODELPORT_TEST_WORKERS`` processes (default 2, the cores of the reference
machine) with pytest-xdist's ``--dist loadfile``: a test file stays in one process, so a
module-scoped fixture (a conversion several tests read) is built once. Most of a heavy test's
time is one single-threaded toolchain interpreter importing and converting, so two files side
by side use the second core. ``MODELPORT_TEST_WORKERS=0`` runs everything in this process.
Each process has its own Redis databases (tests/support/redis_dbs.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time


def main() -> int:
    started = time.monotonic()
    workers = os.environ.get("MODELPORT_TEST_WORKERS", "2")
    parallel = ["-n", workers, "--dist", "loadfile"] if workers != "0" else []
    code = subprocess.call([sys.executable, "-m", "pytest", "-ra", "--durations=25", *parallel, *sys.argv[1:]])
    minutes, seconds = divmod(int(time.monotonic() - started), 60)
    print(f"[make test] finished in {minutes} min {seconds} s (exit {code})", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
