"""``validate.tflite`` at the other sizes of every named dimension (issue 9, item 7).

``export.prepare`` stores probe sets in ``reference.npz`` (``stages.kit.probes``): the
first samples with every named dynamic dimension at a second size, and the reference's
outputs there (PyTorch's, or onnxruntime's for an ONNX upload). Each set runs through
the file in its own runtime child (the inputs resize through the signature runner) and
is compared with the same tolerance. A file that
fails or misses at a size fails validation with the size in the reason, so ``auto``
falls through to the next candidate. A file that fixes a declared dimension is not
probed (``stages.kit.dims`` already says so, and ranks it lower).
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

from stages.kit import probes as probe_io
from stages.kit import samples as sample_io
from stages.kit.child import run_litert
from stages.kit.options import RuntimeOptions


def run_probes(
    tflite: Path,
    reference_path: Path,
    options: RuntimeOptions,
    input_names: list[str],
    tolerance: float,
    frozen: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[str]]:
    """Each probe set through ``tflite``: ``(probe results, failure reasons)``.

    A result is ``{"sizes", "shapes", "verdict", "max_abs_over_scale"}`` (``shapes``: input
    name -> per-sample shape), or ``"ran": False`` with the reason it was not run.
    """
    results: list[dict[str, Any]] = []
    reasons: list[str] = []
    for probe in probe_io.load(reference_path):
        shapes = {name: [int(d) for d in value.shape[1:]] for name, value in probe.inputs.items()}
        entry: dict[str, Any] = {"sizes": probe.sizes, "shapes": shapes}
        if frozen:
            results.append({**entry, "ran": False, "reason": "the file fixes a declared dynamic dimension"})
            continue
        with tempfile.TemporaryDirectory(prefix="litert-probe-") as work_dir:
            path = Path(work_dir) / "probe.npz"
            sample_io.save(path, probe.inputs)
            job = dataclasses.replace(
                options.job(tflite, path, input_names, list(probe.outputs)), warmup=0, runs=1, threads_all=1
            )
            ran = run_litert(job, Path(work_dir))
        if ran.outputs is None:
            failure = ran.failure or "the runtime produced no outputs"
            results.append({**entry, "ran": False, "verdict": "fail", "reason": failure})
            reasons.append(f"at {_sizes(probe.sizes)} the file does not run: {failure}")
            continue
        result, missed = probe_io.compared_entry(entry, probe, ran.outputs, tolerance)
        results.append(result)
        reasons.extend(missed)
    return results, reasons


def _sizes(sizes: dict[str, int]) -> str:
    return ", ".join(f"{dim}={size}" for dim, size in sizes.items())
