"""A stage's ``request.options``, typed: one frozen dataclass per stage role.

The worker writes the operator's settings (``allowed_architectures``,
``enable_pickled_module``, ``threads``) into every request, and a plan stage's own
options after them (``precision``, ``runtime``, ``precisions``, ``input_transposes``...).
Each stage reads the keys its role knows with ``read_options``; a key that is missing or
null keeps the field's default, and other keys are ignored, so the JSON stays as it was.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from stages.kit.child import RUNTIME_TIMEOUT, RuntimeJob
from stages.kit.fields import read_fields

T = TypeVar("T")


def read_options(cls: type[T], raw: Mapping[str, Any]) -> T:
    """``cls`` (a dataclass) with the values of ``raw`` for its fields; missing or null keeps the default."""
    return read_fields(cls, raw)


@dataclass(frozen=True)
class OperatorOptions:
    """Loading a PyTorch upload (``export.prepare``, ``convert.litert_torch``):
    ``allowed_architectures`` (dotted prefixes; empty: the built-in list),
    ``enable_pickled_module`` (the operator allows ``torch.save(model)`` uploads) and
    ``threads`` (torch's intra-op threads)."""

    allowed_architectures: tuple[str, ...] | list[str] = ()
    enable_pickled_module: bool = False
    threads: int = 1


@dataclass(frozen=True)
class RuntimeOptions:
    """Running a .tflite (``validate.tflite``; ``quantize.litert`` for each file it makes):
    ``precision`` the file was made at, ``tolerance`` (relative; None: the spec's, else the
    precision's default), ``runtime`` (``litert`` or ``tensorflow``), ``xnnpack``, the
    latency ``runs`` after ``warmup`` runs on ``threads_all`` threads (None: every CPU),
    ``timeout_seconds`` for the runtime child, ``input_transposes`` (input name ->
    permutation) for a channel-last file."""

    precision: str = "float32"
    tolerance: float | None = None
    runtime: str = "litert"
    xnnpack: bool = True
    runs: int = 20
    warmup: int = 3
    threads_all: int | None = None
    timeout_seconds: float | None = None
    input_transposes: dict[str, list[int]] | None = None

    def job(self, tflite: Path, samples: Path, input_names: list[str], output_names: list[str]) -> RuntimeJob:
        """The runtime child's job for ``tflite`` on ``samples`` with these options."""
        return RuntimeJob(
            tflite,
            samples,
            input_names,
            output_names,
            warmup=int(self.warmup),
            runs=int(self.runs),
            threads_all=int(self.threads_all or os.cpu_count() or 1),
            xnnpack=bool(self.xnnpack),
            input_transposes=dict(self.input_transposes or {}),
            runtime=self.runtime,
            timeout_seconds=float(self.timeout_seconds or RUNTIME_TIMEOUT),
        )

    def once(self) -> RuntimeOptions:
        """The same, one run and no warm-up (outputs only, no latency)."""
        return replace(self, runs=1, warmup=0)


@dataclass(frozen=True)
class QuantizeOptions:
    """``quantize.litert``: the ``precisions`` to make (validated by the stage), the
    quantizer child's ``threads`` and ``quantizer_timeout_seconds``, at most
    ``calibration_limit`` calibration samples (None: the default), the float32 ``sources``
    to try in order (each candidate's file; None: the ``tflite`` input), and the runtime options
    every file is checked with (``runtime``: the same keys as ``validate.tflite``'s)."""

    precisions: Any = None
    threads: int = 1
    quantizer_timeout_seconds: float | None = None
    calibration_limit: int | None = None
    # The float32 files to quantize, in selection order (the worker's; None: the ``tflite``
    # input alone): ``{"input", "candidate", "passed", "input_transposes"}`` each.
    sources: list[dict[str, Any]] | None = None
    runtime: RuntimeOptions = RuntimeOptions()

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> QuantizeOptions:
        own = {key: value for key, value in raw.items() if key != "runtime"}
        return replace(read_options(cls, own), runtime=read_options(RuntimeOptions, raw))
