"""The system's Chromium for the page's tests (Debian's ``chromium`` package), installed with
apt-get when it is missing and this runs as root (``make browser`` does the same). Playwright
drives it through ``executable_path``: no browser is downloaded."""

from __future__ import annotations

import os
import shutil
import subprocess

CANDIDATES = ("chromium", "chromium-browser")


def find_chromium() -> str | None:
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def ensure_chromium() -> tuple[str | None, str]:
    """The browser's path, or None and why it cannot be had."""
    found = find_chromium()
    if found:
        return found, "found"
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        return None, "no chromium on PATH, and apt-get as root is not available to install it (make browser)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        for argv in ([apt, "update", "-qq"], [apt, "install", "-y", "-qq", "chromium"]):
            subprocess.run(argv, env=env, check=True, capture_output=True, timeout=900)
    except (subprocess.SubprocessError, OSError) as exc:
        tail = getattr(exc, "stderr", b"") or b""
        return None, f"apt-get install chromium failed: {exc} {tail.decode(errors='replace')[-500:]}"
    found = find_chromium()
    return (found, "installed") if found else (None, "apt-get installed chromium, yet it is not on PATH")
