"""Toolchain environments: one virtualenv per fully pinned lock file.

An environment lives under ``$MODELPORT_HOME/envs/<name>-<hash>``, where the hash is
that of its lock file, so a fresh clone, CI and a second ``make run`` reuse it and an
edited lock builds a new one beside the old.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from domain.config import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCK_DIR = REPO_ROOT / "locks"
_PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)")


@dataclass(frozen=True)
class Toolchain:
    name: str  # also the Celery queue that runs its stages
    python: str  # interpreter that creates the environment (a version, e.g. "3.11")
    summary: str

    @property
    def lock_file(self) -> Path:
        return LOCK_DIR / f"{self.name}.txt"

    @property
    def lock_hash(self) -> str:
        return hashlib.sha256(self.lock_file.read_bytes()).hexdigest()

    @property
    def env_dir(self) -> Path:
        return modelport_home() / "envs" / f"{self.name}-{self.lock_hash[:12]}"

    @property
    def interpreter(self) -> Path:
        return self.env_dir / "bin" / "python"

    @property
    def ready_marker(self) -> Path:
        return self.env_dir / ".modelport-ready"

    def is_ready(self) -> bool:
        return self.ready_marker.is_file()

    def pins(self) -> dict[str, str]:
        """The lock file's exact versions: lower-cased package name -> version."""
        pins = {}
        for line in self.lock_file.read_text().splitlines():
            match = _PIN.match(line.strip())
            if match:
                pins[match.group(1).lower()] = match.group(2)
        return pins

    def built_python(self) -> str:
        """The environment's Python version as its builder recorded it, once it is ready;
        before, the version it will be built with (``python``)."""
        if not self.is_ready():
            return self.python
        return str(json.loads(self.ready_marker.read_text()).get("python", self.python))


TOOLCHAINS: dict[str, Toolchain] = {
    "torch": Toolchain(
        "torch",
        "3.11",
        "PyTorch, torchvision, ONNX export, onnxruntime, LiteRT (ai-edge-litert)",
    ),
    "onnx-tf": Toolchain(
        "onnx-tf",
        "3.11",
        "onnx-tf 1.10 on TensorFlow 2.15: ONNX -> SavedModel -> TFLite",
    ),
    "onnx2tf": Toolchain("onnx2tf", "3.12", "onnx2tf 2.6.9 (Python 3.12, no TensorFlow): ONNX -> TFLite"),
}


# The queue of the steps that need no toolchain (the report) and of the beat jobs.
CONTROL_QUEUE = "control"
# Every logical queue: the control queue and one per toolchain (metric labels, readiness).
QUEUES: tuple[str, ...] = (CONTROL_QUEUE, *TOOLCHAINS)


def queue_name(settings: Settings, queue: str) -> str:
    """The broker's name of the logical ``queue``: ``MODELPORT_QUEUE_PREFIX`` + the name, so
    services (and tests) sharing a Redis never share queues."""
    return f"{settings.queue.queue_prefix}{queue}"


def modelport_home() -> Path:
    configured = os.environ.get("MODELPORT_HOME")
    if configured:
        return Path(configured).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "modelport"


def get_toolchain(name: str) -> Toolchain:
    try:
        return TOOLCHAINS[name]
    except KeyError:
        raise KeyError(f"unknown toolchain {name!r}; known: {sorted(TOOLCHAINS)}") from None


def stages_pythonpath() -> str:
    """The directory that holds the ``stages`` package, for a toolchain's PYTHONPATH."""
    return str(REPO_ROOT)
