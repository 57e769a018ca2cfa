"""Per family, which toolchain's SavedModel and float32 .tflite pass, with their errors (not a test).

    .venv/bin/python -m bench.saved_models [--families cnn,vit,bert,segmentation,gpt2,mlp]

Starts the embedded stack once and submits one job per family stand-in (the models of
``bench.precisions``, seeded random weights, built in the torch environment) with the
default targets (ONNX, SavedModel, .tflite) and ``toolchain: best``, so every candidate
converts and is validated: each SavedModel in TensorFlow through ``serving_default``, each
.tflite in stock LiteRT (or TensorFlow's interpreter when it needs flex ops). Prints every
attempt of both kinds from the report, then one markdown table.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import httpx

from bench._stack import running_stack
from bench.precisions import FAMILIES, STACK_ENV, build_models, family_job

ROW = "| {family} | {kind} | {toolchain} | {outcome} | {verdict} | {error} | {seconds} |"


def _error(value: float | None) -> str:
    return f"{value:.1e}" if value is not None else "—"


def run_family(client: httpx.Client, family: str, data: Path) -> list[str]:
    """Submit the family's job and print its attempts; the markdown rows."""
    stand_in = FAMILIES[family]
    spec = {
        "architecture": stand_in["architecture"],
        "inputs": stand_in["inputs"],
        "toolchain": "best",
        "targets": ["onnx", "saved_model", "tflite"],
    }
    _, body, _, _ = family_job(client, family, spec, data)
    if body is None:
        return []
    rows = []
    for kind, attempts in (("SavedModel", body.get("saved_model_attempts") or []), (".tflite", body["attempts"])):
        for attempt in attempts:
            outcome = "chosen" if attempt.get("chosen") or attempt["outcome"] == "chosen" else attempt["outcome"]
            flex = " (flex)" if attempt.get("requires_flex") else ""
            seconds = attempt.get("convert_seconds")
            print(
                f"  {kind:10} {attempt['toolchain']:13} {str(attempt.get('verdict')) + flex:14} "
                f"{_error(attempt.get('max_abs_over_scale')):>8}  {outcome[:160]}"
            )
            if attempt.get("verdict") not in (None, "pass"):
                for reason in attempt.get("reasons") or []:
                    print(f"      {reason[:300]}")
            rows.append(
                ROW.format(
                    family=f"{family} ({stand_in['label']})",
                    kind=kind,
                    toolchain=attempt["toolchain"],
                    outcome=outcome.split(":")[0] if outcome != "chosen" else "chosen",
                    verdict=f"{attempt.get('verdict')}{flex}",
                    error=_error(attempt.get("max_abs_over_scale")),
                    seconds=f"{seconds:.1f}" if seconds is not None else "—",
                )
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--families", default=",".join(FAMILIES))
    args = parser.parse_args()
    families = args.families.split(",")
    print(f"cores: {os.cpu_count()}, load average: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        build_models(families, data)
        started = time.monotonic()
        with running_stack(data, env=STACK_ENV) as service:
            rows = [row for family in families for row in run_family(service.client, family, data)]
    print("\n| family | artifact | toolchain | outcome | verdict | max_abs/scale | convert s |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"\ntotal {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
