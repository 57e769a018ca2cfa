"""Every int8 attempt per family stand-in, through the real service (not a test).

    .venv/bin/python -m bench.quantizers [--families vit,bert,gpt2,mlp,segmentation,cnn]

Starts the embedded stack once (as ``bench.precisions`` does, with its stand-ins and
models) and submits one job per family with ``targets: [tflite]``, ``toolchain: best``
(every candidate converts, and the quantize stage tries every passing candidate's
float32 file with both int8 recipes, and the int8 files the convert stages made besides:
litert-torch's PT2E file, onnx-tf's and onnx2tf's TensorFlow full-integer file) and
``quantization: [float32, int8]``, on the seeded synthetic calibration. Each attempt is
one quantizer alone (ai-edge-quantizer with one recipe on one float32 file, or one
prebuilt file) on the same calibration data; the service keeps the best. Prints per
family and attempt: source file, quantizer, recipe, outcome, verdict, min
cosine to PyTorch, mean error / scale, top-1 agreement, size, latency, the ops left
float; then one markdown table.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench._stack import running_stack
from bench.precisions import FAMILIES, SAMPLES, STACK_ENV, build_models, family_job

JOB_TIMEOUT = 1800
DEFAULT_FAMILIES = "mlp,vit,bert,gpt2,segmentation"


def _number(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def run_family(client: httpx.Client, family: str, data: Path) -> list[dict[str, str]]:
    stand_in = FAMILIES[family]
    spec = {
        "architecture": stand_in["architecture"],
        "inputs": stand_in["inputs"],
        "toolchain": "best",
        "targets": ["tflite"],
        "quantization": ["float32", "int8"],
        "validation_samples": SAMPLES,
        "seed": 0,
    }
    _, report, _, _ = family_job(client, family, spec, data, timeout=JOB_TIMEOUT)
    if report is None:
        return []
    state: dict[str, Any] = report["precisions"].get("int8", {})
    if state.get("status") != "produced":
        print(f"  int8 {state.get('status')}: {state.get('code')}: {state.get('reason')}")
    rows = []
    for attempt in state.get("attempts") or []:
        outcome = str(attempt["outcome"])
        print(f"  {attempt['source']}/{attempt['variant']}: {outcome[:300]}")
        for reason in attempt.get("reasons") or []:
            print(f"    {reason[:300]}")
        sources = attempt.get("error_sources") or {}
        if sources.get("reason"):
            print(f"    error_sources: {sources['reason'][:300]}")
        for op in (sources.get("ops") or [])[:3]:  # where the error comes from, worst first
            print(f"    drifts: {op.get('op')} {op.get('tensor')} cosine {_number(op.get('cosine'), '.4f')}")
        rows.append(
            {
                "family": family,
                "source": str(attempt["source"]),
                "quantizer": str(attempt.get("quantizer") or "—"),
                "recipe": str(attempt["variant"]),
                "outcome": outcome.split(":")[0],
                "verdict": str(attempt.get("verdict") or "—"),
                "min cosine": _number(attempt.get("min_cosine"), ".4f"),
                "mean err/scale": _number(attempt.get("mean_abs_over_scale"), ".2e"),
                "top-1": _number(attempt.get("top1_agreement"), ".2f"),
                "size KB": _number((attempt.get("size_bytes") or 0) / 1e3 or None, ".1f"),
                "latency ms": _number(attempt.get("latency_ms"), ".3f"),
                "float ops": ", ".join(f"{k} {v}" for k, v in (attempt.get("float_ops") or {}).items()) or "—",
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--families", default=DEFAULT_FAMILIES)
    args = parser.parse_args()
    families = args.families.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        build_models(families, data)
        started = time.monotonic()
        with running_stack(data, env=STACK_ENV) as service:
            rows = [row for family in families for row in run_family(service.client, family, data)]
        if rows:
            columns = list(rows[0])
            print("\n| " + " | ".join(columns) + " |")
            print("|" + "---|" * len(columns))
            for row in rows:
                print("| " + " | ".join(row[c] for c in columns) + " |")
        print(f"\nTotal {time.monotonic() - started:.0f} s.")


if __name__ == "__main__":
    main()
