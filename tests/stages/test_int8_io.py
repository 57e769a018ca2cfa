"""``int8_io``: a full-integer model_int8.tflite whose inputs and outputs are int8 too.

The segmentation stand-in of ``test_quantize.py`` (``segmenter_chain`` in
tests/support/quantize_chains.py: the tiny LR-ASPP, dense [1, 4, 64, 64] logits) is
quantized at int8 twice with the same uploaded calibration: with float32 inputs/outputs
(the default) and with ``"int8_io": true``.
The int8_io file is read back in stock LiteRT, fed int8 by hand with the scale and zero
point the stage reports, and checked again in ``validate.tflite``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from domain.jobs.entries import tflite_entry
from stages.kit.results import Check, StoredFile
from stages.kit.tflite_boundary import Boundary, Port
from stages.quantize.int8_io import int8_io_gaps
from tests.support.quantize_chains import INT8_MIN_COSINE, SEGMENTER_SPEC, quantize_segmenter, segmenter_chain
from tests.support.stage_runner import StageRun, run_stage
from tests.support.toolchain import run_code

# Feeds the file int8 by hand, as a user would from the report's numbers, and prints the
# interpreter's own view of the boundary and the dequantized outputs' cosine to PyTorch.
RUN_BY_HAND = r"""
import json, sys
import numpy as np
from ai_edge_litert.interpreter import Interpreter

tflite, samples, reference, signature = sys.argv[1:5]
signature = json.loads(signature)
interpreter = Interpreter(model_path=tflite)
interpreter.allocate_tensors()
details = {
    kind: [{"dtype": np.dtype(d["dtype"]).name, "quantization": list(d["quantization"])} for d in found]
    for kind, found in (("inputs", interpreter.get_input_details()), ("outputs", interpreter.get_output_details()))
}
runner = interpreter.get_signature_runner("serving_default")
image = np.load(samples)["image"]
port = signature["inputs"]["image"]["quantization"]
out = signature["outputs"]["out"]["quantization"]
results = []
for sample in image:
    q = np.clip(np.round(sample / port["scale"]) + port["zero_point"], -128, 127).astype(np.int8)
    raw = runner(image=q)["out"]
    results.append(((raw.astype(np.float32) - out["zero_point"]) * out["scale"], raw.dtype.name))
actual = np.stack([r[0] for r in results]).reshape(len(image), -1)
expected = np.load(reference)["out"].reshape(len(image), -1)
cosines = np.sum(actual * expected, 1) / np.linalg.norm(actual, axis=1) / np.linalg.norm(expected, axis=1)
print(json.dumps({"details": details, "raw_dtype": results[0][1], "min_cosine": float(cosines.min())}))
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, StageRun]:
    return {
        "float_io": quantize_segmenter(tmp_path_factory, tmp_path_factory.mktemp("int8-float-io")),
        "int8_io": quantize_segmenter(tmp_path_factory, tmp_path_factory.mktemp("int8-io"), int8_io=True),
    }


def int8(run: StageRun) -> dict[str, Any]:
    metrics: dict[str, Any] = run.result["metrics"]["tflite_int8"]
    return metrics


def test_int8_io_replaces_the_float_boundary_file(runs: dict[str, StageRun]) -> None:
    run = runs["int8_io"]
    assert run.result["outputs"] == {"tflite_int8": "model_int8.tflite"}  # one file per precision
    assert run.result["info"]["failed"] == {}
    metrics = int8(run)
    assert metrics["quantizer"]["recipe"]["name"] == "static_wi8_ai8, int8 I/O"
    assert int8(runs["float_io"])["quantizer"]["recipe"]["name"] == "static_wi8_ai8, float32 I/O"
    assert metrics.get("warnings", []) == []
    # No QUANTIZE on the input, no DEQUANTIZE on the output: the graph is int8 end to end.
    assert "QUANTIZE" not in metrics["operator_counts"]
    assert "DEQUANTIZE" not in metrics["operator_counts"]
    assert int8(runs["float_io"])["operator_counts"]["QUANTIZE"] == 1


def test_the_boundary_is_described_with_its_quantization(runs: dict[str, StageRun]) -> None:
    signature = int8(runs["int8_io"])["signature"]
    assert signature["boundary"] == "int8"
    assert "round(x / scale) + zero_point" in signature["feeding"]
    for port, shape in ((signature["inputs"]["image"], [1, 3, 64, 64]), (signature["outputs"]["out"], [1, 4, 64, 64])):
        assert port["shape"] == shape
        assert port["dtype"] == "int8"
        assert port["quantization"]["scale"] > 0
        assert -128 <= port["quantization"]["zero_point"] <= 127
    # Calibrated ranges: standard-normal images span several units, so one step is ~0.01-0.1.
    assert 0.005 < signature["inputs"]["image"]["quantization"]["scale"] < 0.2
    # The report's artifact entry carries it.
    entry = tflite_entry(
        "model_int8.tflite",
        "int8",
        "ai-edge-quantizer",
        StoredFile(size=1, sha256="-"),
        Check.from_json(int8(runs["int8_io"])),
        "ai-edge-litert",
    )
    assert entry["signature"] == signature
    assert entry["verdict"] == int8(runs["int8_io"])["verdict"]


def test_int8_io_meets_the_same_cosine_bar(runs: dict[str, StageRun]) -> None:
    metrics, float_io = int8(runs["int8_io"]), int8(runs["float_io"])
    assert metrics["min_cosine"] >= INT8_MIN_COSINE
    assert metrics["verdict"] in ("pass", "degraded"), metrics["reasons"]
    assert metrics["vs_float32"]["min_cosine"] >= INT8_MIN_COSINE
    # The float-boundary file quantizes the input with the same scale inside the graph,
    # so both files compute the same thing (measured: 0.99849 for both).
    assert metrics["min_cosine"] == pytest.approx(float_io["min_cosine"], abs=1e-4)
    assert 0 < metrics["latency_ms"]["median_1_thread"] < 1000


def test_the_file_runs_when_fed_int8_by_hand(
    runs: dict[str, StageRun], tmp_path_factory: pytest.TempPathFactory
) -> None:
    prepare = segmenter_chain(tmp_path_factory)["prepare"]
    signature = int8(runs["int8_io"])["signature"]
    seen = run_code(
        "torch",
        RUN_BY_HAND,
        str(runs["int8_io"].output("tflite_int8")),
        str(prepare.output("samples")),
        str(prepare.output("reference")),
        json.dumps(signature),
        timeout=120,
    )
    image, out = signature["inputs"]["image"]["quantization"], signature["outputs"]["out"]["quantization"]
    assert seen["details"]["inputs"] == [
        {"dtype": "int8", "quantization": [pytest.approx(image["scale"]), image["zero_point"]]}
    ]
    assert seen["details"]["outputs"] == [
        {"dtype": "int8", "quantization": [pytest.approx(out["scale"]), out["zero_point"]]}
    ]
    assert seen["raw_dtype"] == "int8"
    assert seen["min_cosine"] == pytest.approx(int8(runs["int8_io"])["min_cosine"], abs=1e-4)


def test_litert_validate_quantizes_the_samples_with_the_file_s_parameters(
    runs: dict[str, StageRun], tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    prepare = segmenter_chain(tmp_path_factory)["prepare"]
    inputs = {
        "tflite": runs["int8_io"].output("tflite_int8"),
        "samples": prepare.output("samples"),
        "reference": prepare.output("reference"),
    }
    options = {"precision": "int8", "runs": 2, "warmup": 1, "threads_all": 1}
    run = run_stage("torch", "validate.tflite", tmp_path, inputs, SEGMENTER_SPEC, options)
    assert run.ok, run.result
    metrics = run.result["metrics"]["tflite_int8"]
    signature = int8(runs["int8_io"])["signature"]
    assert metrics["outputs"]["out"]["cosine"] == pytest.approx(int8(runs["int8_io"])["min_cosine"], abs=1e-3)
    quantization = run.result["info"]["boundary_quantization"]
    assert quantization["inputs"]["image"] == {"dtype": "int8", **signature["inputs"]["image"]["quantization"]}
    assert quantization["outputs"]["out"] == {"dtype": "int8", **signature["outputs"]["out"]["quantization"]}
    assert run.result["info"]["tflite_inputs"]["image"]["dtype"] == "int8"


def test_a_float_port_left_float_is_reported(runs: dict[str, StageRun]) -> None:
    float_boundary = Boundary(
        "serving_default",
        0,
        [Port("image", 0, "image", [1, 3, 64, 64], "float32")],
        [Port("out", 1, "out", [1, 4, 64, 64], "float32")],
    )
    assert int8_io_gaps(float_boundary, int8(runs["int8_io"])["signature"]) == []
    gaps = int8_io_gaps(float_boundary, int8(runs["float_io"])["signature"])
    assert gaps == [
        "int8_io: input 'image' stays float32: the quantizer left it unquantized",
        "int8_io: output 'out' stays float32: the quantizer left it unquantized",
    ]
