"""Candidate selection (domain/jobs/selection.py): verdict, builtin ops, latency, error."""

from __future__ import annotations

from domain.jobs.selection import auto_satisfied, choose, collect


def _validated(
    verdict: str, flex: bool = False, latency: float = 1.0, error: float = 1e-6, frozen: list | None = None
) -> dict:
    metrics = {
        "frozen_dims": frozen or [],
        "verdict": verdict,
        "requires_flex": flex,
        "latency_ms": {"median_1_thread": latency},
        "outputs": {"output": {"max_abs": error, "scale": 1.0}},
    }
    return {"metrics": {"tflite_float32": metrics}}


def test_selection_by_verdict_builtin_latency_error() -> None:
    spec = {"toolchain": "auto", "available_toolchains": ["onnx-tf", "onnx2tf", "litert-torch"]}
    results = {
        "convert_onnx_tf": {},
        "validate_onnx_tf": _validated("pass", flex=True),
        "convert_onnx2tf": {},
        "validate_onnx2tf": _validated("pass", latency=5.0),
        "convert_litert_torch": {},
        "validate_litert_torch": _validated("pass", latency=2.0),
    }
    # auto: the first builtin-only pass in priority order
    assert choose(spec, results).name == "onnx2tf"
    assert auto_satisfied(spec, results)
    # ... except for int8, whose quantizers fall back to the other candidates' float32 files:
    # every candidate converts, and the float32 choice stays the first that passed.
    int8 = {**spec, "quantization": ["float32", "int8"]}
    assert not auto_satisfied(int8, results)
    assert choose(int8, results).name == "onnx2tf"
    assert auto_satisfied({**spec, "quantization": ["float32", "float16"]}, results)
    # best: all ranked; the faster builtin-only pass wins
    assert choose({**spec, "toolchain": "best"}, results).name == "litert_torch".replace("_", "-")
    # nothing deliverable: the best of what exists (a flex pass beats a failure)
    only = {
        "convert_onnx_tf": {},
        "validate_onnx_tf": _validated("pass", flex=True),
        "convert_onnx2tf": {},
        "validate_onnx2tf": _validated("fail"),
    }
    assert choose(spec, only).name == "onnx-tf"
    assert not auto_satisfied(spec, only)
    assert choose(spec, {}) is None
    exact = {"convert_onnx2tf": {}, "validate_onnx2tf": _validated("pass", error=0.0)}
    (candidate,) = [c for c in collect(spec, exact) if c.metrics]
    assert candidate.error == 0.0


FROZEN = [{"input": "input", "dim": "batch", "axis": 0, "fixed_at": 1}]


def test_a_file_that_fixes_a_declared_dynamic_dimension_loses_to_one_that_keeps_it() -> None:
    spec = {"toolchain": "auto", "available_toolchains": ["onnx-tf", "onnx2tf", "litert-torch"]}
    results = {
        "convert_onnx2tf": {},
        "validate_onnx2tf": _validated("pass", latency=1.0, frozen=FROZEN),
        "convert_litert_torch": {},
        "validate_litert_torch": _validated("pass", latency=9.0),
    }
    (frozen,) = [c for c in collect(spec, results) if c.name == "onnx2tf"]
    assert frozen.frozen
    assert frozen.deliverable
    # auto: the first deliverable that keeps the dimension, though later and slower
    assert choose(spec, results).name == "litert-torch"
    # best: the frozen one ranks below, whatever its latency
    assert choose({**spec, "toolchain": "best"}, results).name == "litert-torch"
    # a frozen pass alone does not satisfy auto (later candidates still run), but is chosen
    only = {"convert_onnx2tf": {}, "validate_onnx2tf": _validated("pass", frozen=FROZEN)}
    assert not auto_satisfied(spec, only)
    assert choose(spec, only).name == "onnx2tf"
