"""`make test`: run the suite and print how long it took."""

from __future__ import annotations

import subprocess
import sys
import time


def main() -> int:
    started = time.monotonic()
    code = subprocess.call([sys.executable, "-m", "pytest", "-ra", "--durations=15", *sys.argv[1:]])
    minutes, seconds = divmod(int(time.monotonic() - started), 60)
    print(f"[make test] finished in {minutes} min {seconds} s (exit {code})", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
