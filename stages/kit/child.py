"""Child processes of a stage: one launcher, and the LiteRT runtime run through it.

A converter or a runtime can crash (SIGABRT, SIGSEGV in a kernel) or hang; run in a
child, that is a result the stage reports, not the stage's own death. ``run_child``
writes the job file, starts ``python -m <module> <job.json>`` with this copy of the
``stages`` package first on ``PYTHONPATH``, waits at most ``timeout`` seconds and keeps
the tail of the child's output in the stage log. ``run_litert`` runs a .tflite through
``stages.kit.litert_child`` on a samples file (``validate.tflite``, ``quantize.litert``
and onnx2tf's sanity check).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

LOG_TAIL = 2000  # characters of a child's output kept in the stage log
RUNTIME_TIMEOUT = 600.0


@dataclass(frozen=True)
class ChildRun:
    """How a child ended: ``code`` is its exit code (negative: the signal that killed it;
    None: it timed out and was killed), ``log`` its stdout and stderr, ``seconds`` wall time."""

    code: int | None
    log: str
    seconds: float

    @property
    def signal(self) -> str | None:
        """The name of the signal that killed the child (``SIGABRT``), if one did."""
        return signal_name(-self.code) if self.code is not None and self.code < 0 else None

    def last_line(self, limit: int = 500) -> str:
        """The child's last non-empty output line (its error, as a rule), else its exit code."""
        lines = [line for line in self.log.strip().splitlines() if line.strip()]
        return lines[-1][:limit] if lines else f"exit code {self.code}"


def package_root() -> str:
    """The directory that holds the ``stages`` package, so a child imports this copy."""
    return str(Path(__file__).resolve().parents[2])


def run_child(
    module: str,
    job: dict[str, Any],
    job_path: Path,
    timeout: float,
    *,
    env: dict[str, str] | None = None,
    label: str = "",
) -> ChildRun:
    """Write ``job`` to ``job_path`` and run ``python -m module job_path``; never raises on its exit.

    ``env`` adds variables to this process's environment; ``label`` heads the log tail
    this prints to stderr (the stage log).
    """
    job_path.write_text(json.dumps(job))
    child_env = {**os.environ, **(env or {})}
    child_env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root(), child_env.get("PYTHONPATH")) if p)
    started = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", module, str(job_path)],
            capture_output=True,
            text=True,
            env=child_env,
            timeout=timeout,
        )
        code: int | None = proc.returncode
        log = proc.stdout + proc.stderr
    except subprocess.TimeoutExpired:
        code, log = None, ""
    heading = f"{label}: exit {code}\n" if label else ""
    print(heading + log[-LOG_TAIL:], file=sys.stderr, flush=True)
    return ChildRun(code, log, time.monotonic() - started)


def signal_name(number: int) -> str:
    """``SIGABRT`` for 6; the number itself for one that is no known signal."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


@dataclass(frozen=True)
class RuntimeJob:
    """What ``stages.kit.litert_child`` runs: ``samples`` (``.npz``, ``[N, *shape]`` by input
    name) through ``tflite``, inputs matched by ``input_names``, outputs by ``output_names``;
    ``warmup`` and ``runs`` timed runs on ``threads_all`` threads; ``input_transposes``
    (input name -> permutation) for a channel-last file; ``runtime`` ``litert`` or ``tensorflow``."""

    tflite: Path
    samples: Path
    input_names: list[str]
    output_names: list[str]
    warmup: int = 3
    runs: int = 20
    threads_all: int = 1
    xnnpack: bool = True
    input_transposes: dict[str, list[int]] = field(default_factory=dict)
    runtime: str = "litert"
    timeout_seconds: float = RUNTIME_TIMEOUT

    def to_json(self, work_dir: Path) -> dict[str, Any]:
        return {
            "tflite": str(self.tflite),
            "samples": str(self.samples),
            "work_dir": str(work_dir),
            "input_names": self.input_names,
            "output_names": self.output_names,
            "warmup": self.warmup,
            "runs": self.runs,
            "threads_all": self.threads_all,
            "xnnpack": self.xnnpack,
            "input_transposes": self.input_transposes,
            "runtime": self.runtime,
        }


@dataclass(frozen=True)
class ChildReport:
    """``child.json`` as ``stages.kit.litert_child`` left it (a key it did not reach is None):
    the file's signature and how names matched, then ``dynamic_batch`` and ``latency_ms``;
    ``crashed`` is the signal that killed the child (set by the parent)."""

    signature_key: str | None = None
    tflite_inputs: dict[str, Any] | None = None
    tflite_outputs: list[str] | None = None
    input_map: dict[str, str] | None = None
    output_map: dict[str, str] | None = None
    boundary_quantization: dict[str, Any] | None = None
    mapping_error: str | None = None
    signature_error: str | None = None  # a signature output the runtime cannot keep
    dynamic_batch: dict[str, Any] | None = None
    latency_ms: dict[str, Any] | None = None
    crashed: str | None = None

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ChildReport:
        known = {item.name for item in fields(cls)}
        return cls(**{key: value for key, value in raw.items() if key in known})


@dataclass(frozen=True)
class RuntimeRun:
    """The runtime child's outcome: its ``report``, ``outputs`` by output name (None when
    none came back), ``failure`` (why the file did not run, None when it did)."""

    report: ChildReport
    outputs: dict[str, Any] | None
    failure: str | None


def run_litert(job: RuntimeJob, work: Path) -> RuntimeRun:
    """``job`` in ``stages.kit.litert_child``, in the folder ``work`` (which must exist)."""
    from stages.kit import samples as sample_io

    child = run_child("stages.kit.litert_child", job.to_json(work), work / "job.json", job.timeout_seconds)
    report = ChildReport()
    if (work / "child.json").is_file():
        report = ChildReport.from_json(json.loads((work / "child.json").read_text()))
    outputs = sample_io.load(work / "outputs.npz") if (work / "outputs.npz").is_file() else None
    failure = report.mapping_error or report.signature_error
    if child.code is None:
        failure = "runtime timed out"
    elif child.signal is not None:
        report = replace(report, crashed=child.signal)
        failure = f"runtime crashed with signal {child.signal}"
    elif child.code != 0:
        failure = f"runtime failed: {child.last_line()}"
    return RuntimeRun(report, outputs, failure)
