"""How the int8 attempts list names each attempt's file and recipe (no toolchain needed).

A prebuilt file (PT2E's, TensorFlow's) reaches ``quantize`` as a stage input named after its
candidate (``tflite_int8_tf_ptq_onnx-tf``); the report names it as its convert stage writes
it, and names its recipe the same way whether the file was made or its stage failed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stages.quantize import prebuilt
from stages.quantize.attempts import Attempt, Job

UNUSED: Any = None  # Job fields file_for and summary never read


def job(tmp_path: Path, made: dict[str, Path], failed: dict[str, str]) -> Job:
    return Job(
        request=UNUSED,
        tflite=tmp_path / "tflite_onnx-tf",
        boundary=UNUSED,
        keys={},
        transposes={},
        samples_path=tmp_path / "samples.npz",
        samples={},
        input_names=["input"],
        reference={},
        float_outputs=None,
        runtime=UNUSED,
        options=UNUSED,
        candidate="onnx-tf",
        prebuilt=made,
        prebuilt_failed=failed,
        prebuilt_versions={"tf_ptq": "2.15.1", "pt2e": "0.10.0"},
    )


@pytest.mark.parametrize("variant", ["tf_ptq", "pt2e"])
def test_a_prebuilt_attempt_names_its_file_and_recipe_alike_made_or_failed(tmp_path: Path, variant: str) -> None:
    made = prebuilt.VARIANTS[variant]
    stage_input = tmp_path / prebuilt.input_name(variant, "tflite_onnx-tf")
    kept = job(tmp_path, {variant: stage_input}, {})
    lost = job(tmp_path, {}, {variant: "quantization_failed: the converter aborted"})
    entry = {"verdict": "fail", "quantizer": {"recipe": made.recipe}, "outputs": {}}
    made_summary = Attempt(kept, variant, entry, None, stage_input).summary("lost: …")
    failed_summary = Attempt(lost, variant, None, {"code": "quantization_failed"}, None).summary("failed: …")
    assert stage_input.name != made.file
    assert made_summary["source_file"] == failed_summary["source_file"] == made.file
    assert made_summary["recipe"] == failed_summary["recipe"] == made.recipe["name"]
    assert failed_summary["variant"] == variant


def test_an_ai_edge_quantizer_attempt_names_its_float32_source(tmp_path: Path) -> None:
    summary = Attempt(job(tmp_path, {}, {}), "default", None, {"code": "x"}, None).summary("failed: …")
    assert summary["source_file"] == "tflite_onnx-tf"
    assert summary["recipe"] == "default"
