"""Build toolchain environments from their lock files, and regenerate the locks.

python -m worker.envs build [NAME ...]   # idempotent: skips what is up to date
python -m worker.envs lock NAME          # re-resolve locks/NAME.in into locks/NAME.txt
python -m worker.envs status
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from domain.toolchains import LOCK_DIR, TOOLCHAINS, Toolchain, modelport_home


def find_python(version: str) -> str:
    """An interpreter of the given minor version that really runs: pyenv's installed
    versions first (its shims may exist yet refuse to run), then PATH."""
    candidates: list[str | None] = []
    pyenv_root = Path.home() / ".pyenv" / "versions"
    if pyenv_root.is_dir():
        candidates += [str(p / "bin" / "python") for p in sorted(pyenv_root.glob(f"{version}.*"), reverse=True)]
    candidates += [shutil.which(f"python{version}")]
    for candidate in candidates:
        if not candidate or not Path(candidate).exists():
            continue
        probe = subprocess.run(
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True, text=True
        )
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return candidate
    raise SystemExit(f"Python {version} is needed for this toolchain and was not found on PATH or in pyenv")


def _pip(python: Path, *args: str, log: Path) -> None:
    with open(log, "a") as out:
        proc = subprocess.run(
            [str(python), "-m", "pip", "--disable-pip-version-check", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    if proc.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
        raise SystemExit(f"pip failed (exit {proc.returncode}); log: {log}\n{tail}")


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def build(toolchain: Toolchain) -> None:
    if toolchain.is_ready():
        print(f"[envs] {toolchain.name}: up to date ({toolchain.env_dir})", flush=True)
        return
    started = time.monotonic()
    target = toolchain.env_dir
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename, so a half-built environment is never used.
    staging = Path(tempfile.mkdtemp(prefix=f".{toolchain.name}-", dir=target.parent))
    log = target.parent / f"{toolchain.name}-build.log"
    log.write_text("")
    print(f"[envs] {toolchain.name}: building from {toolchain.lock_file.name} (log: {log})", flush=True)
    try:
        subprocess.run([find_python(toolchain.python), "-m", "venv", str(staging)], check=True)
        python = staging / "bin" / "python"
        print(f"[envs] {toolchain.name}: installing pinned packages (minutes on a fresh machine)", flush=True)
        _pip(python, "install", "--no-deps", "-r", str(toolchain.lock_file), log=log)
        _pip(python, "check", log=log)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    version = subprocess.run(
        [str(staging / "bin" / "python"), "-c", "import platform; print(platform.python_version())"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    marker: dict[str, Any] = {
        "toolchain": toolchain.name,
        "python": version,
        "lock_sha256": toolchain.lock_hash,
        "built_seconds": round(time.monotonic() - started, 1),
        "size_bytes": dir_size(staging),
    }
    (staging / ".modelport-ready").write_text(json.dumps(marker, indent=2))
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    # venv scripts embed the staging path; the interpreter itself is found by bin/python.
    _fix_shebangs(target, staging)
    print(
        f"[envs] {toolchain.name}: ready in {marker['built_seconds']} s, "
        f"{marker['size_bytes'] / 1e9:.2f} GB ({target})",
        flush=True,
    )


def _fix_shebangs(target: Path, staging: Path) -> None:
    for script in (target / "bin").iterdir():
        if script.is_file() and not script.is_symlink():
            try:
                text = script.read_text()
            except (UnicodeDecodeError, PermissionError):
                continue
            if str(staging) in text:
                script.write_text(text.replace(str(staging), str(target)))


def lock(name: str) -> None:
    toolchain = TOOLCHAINS[name] if name != "control" else None
    source = LOCK_DIR / f"{name}.in"
    python_version = toolchain.python if toolchain else "3.11"
    with tempfile.TemporaryDirectory() as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([find_python(python_version), "-m", "venv", str(venv)], check=True)
        log = Path(tmp) / "pip.log"
        _pip(venv / "bin" / "python", "install", "-r", str(source), log=log)
        frozen = subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "freeze", "--all", "--exclude-editable"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    # --all keeps setuptools (torch needs a recent one at run time); pip itself comes with the venv.
    frozen = "".join(line + "\n" for line in frozen.splitlines() if not line.startswith("pip=="))
    header = (
        f"# Generated by 'make locks' from locks/{name}.in with pip on Python {python_version}. "
        "Do not edit: edit the .in and regenerate.\n"
    )
    (LOCK_DIR / f"{name}.txt").write_text(header + frozen)
    print(f"[envs] locks/{name}.txt: {len(frozen.splitlines())} packages")


def status() -> None:
    print(f"MODELPORT_HOME={modelport_home()}")
    for toolchain in TOOLCHAINS.values():
        state = "ready" if toolchain.is_ready() else "missing"
        print(f"{toolchain.name:10} {state:8} {toolchain.env_dir}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m worker.envs")
    sub = parser.add_subparsers(dest="command", required=True)
    build_cmd = sub.add_parser("build")
    build_cmd.add_argument("names", nargs="*")
    lock_cmd = sub.add_parser("lock")
    lock_cmd.add_argument("name")
    sub.add_parser("status")
    args = parser.parse_args(argv)
    if args.command == "build":
        for name in args.names or list(TOOLCHAINS):
            build(TOOLCHAINS[name])
    elif args.command == "lock":
        lock(args.name)
    else:
        status()


if __name__ == "__main__":
    main(sys.argv[1:])
