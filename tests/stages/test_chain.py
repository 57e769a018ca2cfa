"""The onnx-tf chain on a tiny CNN: export.prepare -> convert.onnx_tf -> validate.tflite.

The chain runs once (module fixture); each test asserts on its real results.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from stages.kit import probes as probe_io
from stages.kit import samples as sample_io
from tests.support.stage_runner import ALLOW_TORCHVISION, StageRun, image_spec, run_chain

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def chain(stage_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, StageRun]:
    work = tmp_path_factory.mktemp("chain")
    spec = image_spec("torchvision.models.squeezenet1_1")
    return run_chain(work, stage_models["squeezenet"], spec, options=ALLOW_TORCHVISION)


def assert_within_tolerance(metrics: dict, output: str = "output") -> None:
    assert metrics["verdict"] == "pass", metrics["reasons"]
    assert metrics["reasons"] == []
    numbers = metrics["outputs"][output]
    assert numbers["scale"] > 0
    assert numbers["max_abs"] <= TOLERANCE * numbers["scale"]
    assert numbers["cosine"] > 0.99999
    assert numbers["top1_agreement"] == 1.0
    assert metrics["tolerance"] == {"metric": "max_abs/scale", "value": TOLERANCE}


def test_prepare_exports_onnx_that_matches_pytorch(chain: dict[str, StageRun]) -> None:
    prepare = chain["prepare"]
    assert prepare.returncode == 0
    assert set(prepare.result["outputs"]) == {"onnx", "samples", "reference"}
    assert all(prepare.output(name).is_file() for name in ("onnx", "samples", "reference"))
    assert_within_tolerance(prepare.result["metrics"]["onnx"])
    assert prepare.result["metrics"]["onnx"]["samples"] == 4


def test_prepare_info_records_provenance(chain: dict[str, StageRun]) -> None:
    info = chain["prepare"].result["info"]
    assert info["input_names"] == ["input"]
    assert info["output_names"] == ["output"]
    assert info["exporter"] == "torchscript"
    assert info["opset"] == 15  # the default for onnx-tf, which reads up to 15
    assert info["export_attempts"] == [{"exporter": "torchscript", "ok": True, "error": None, "opset": 15}]
    assert info["reference_runtime"] == "pytorch"
    assert info["versions"]["torch"].startswith("2.")
    assert info["parameters"] > 100_000
    assert info["output_shapes"] == {"output": ["batch", 10]}  # probed: static classes, named batch


def test_samples_and_reference_have_the_sample_axis(chain: dict[str, StageRun]) -> None:
    prepare = chain["prepare"]
    with np.load(prepare.output("samples")) as samples:
        assert samples.files == ["input"]
        assert samples["input"].shape == (4, 1, 3, 64, 64)
        assert samples["input"].dtype == np.float32
    reference = sample_io.load(prepare.output("reference"))
    assert list(reference) == ["output"]
    assert reference["output"].shape == (4, 1, 10)
    # The batch at a second size (stages.kit.probes), under keys every reader skips.
    (probe,) = probe_io.load(prepare.output("reference"))
    assert probe.sizes == {"batch": 2}
    assert probe.outputs["output"].shape == (probe_io.PROBE_SAMPLES, 2, 10)


def test_saved_model_matches_pytorch(chain: dict[str, StageRun]) -> None:
    convert = chain["convert"]
    assert_within_tolerance(convert.result["metrics"]["saved_model"])
    info = convert.result["info"]
    # The signature keeps the spec's input name and the stable output name.
    assert info["signature"]["input_map"] == {"input": "input"}
    assert info["signature"]["output_map"] == {"output": "output"}
    assert info["signature"]["inputs"]["input"]["shape"] == [None, 3, 64, 64]
    assert info["versions"]["tensorflow"] == "2.15.1"
    assert info["versions"]["onnx_tf"] == "1.10.0"


def test_saved_model_zip_is_a_saved_model(chain: dict[str, StageRun]) -> None:
    with zipfile.ZipFile(chain["convert"].output("saved_model")) as archive:
        names = archive.namelist()
        assert names == sorted(names)
        assert "saved_model/saved_model.pb" in names
        assert any(name.startswith("saved_model/variables/") for name in names)
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_tflite_is_float32_and_builtin_only(chain: dict[str, StageRun]) -> None:
    info = chain["convert"].result["info"]
    assert info["requires_flex"] is False
    assert info["converter"]["supported_ops"] == ["TFLITE_BUILTINS"]
    assert info["converter"]["optimizations"] == []
    assert chain["convert"].output("tflite_float32").stat().st_size > 1_000_000  # float weights, not int8


def test_litert_runs_the_tflite_within_tolerance(chain: dict[str, StageRun]) -> None:
    metrics = chain["validate"].result["metrics"]["tflite_float32"]
    assert_within_tolerance(metrics)
    assert metrics["requires_flex"] is False
    assert metrics["size_bytes"] == chain["convert"].output("tflite_float32").stat().st_size
    assert "CONV_2D" in metrics["operators"]["builtin"]
    assert metrics["operators"]["flex"] == []
    # onnx-tf keeps NCHW at the boundary and wraps convolutions in transposes.
    assert metrics["transpose_count"] == metrics["operator_counts"]["TRANSPOSE"] > 0
    latency = metrics["latency_ms"]
    assert latency["runs"] == 20
    assert 0 < latency["median_1_thread"] < 1000
    assert 0 < latency["median_all_threads"] < 1000


def test_the_named_batch_survives_and_the_tflite_resizes(chain: dict[str, StageRun]) -> None:
    # DESIGN: a named dynamic batch survives into the .tflite, whose input then resizes:
    # two samples in one call give what two one-by-one calls give.
    info = chain["validate"].result["info"]
    assert info["tflite_inputs"]["input"]["shape"] == [-1, 3, 64, 64]
    probe = chain["validate"].result["metrics"]["tflite_float32"]["dynamic_batch"]
    assert probe["batch"] == 2
    assert probe["ok"] is True, probe
    assert probe["max_abs_over_scale"] < 1e-5


def test_litert_maps_names_through_the_signature(chain: dict[str, StageRun]) -> None:
    info = chain["validate"].result["info"]
    assert info["signature_key"] == "serving_default"
    assert info["input_map"] == {"input": "input"}
    assert info["output_map"] == {"output": "output"}
    assert info["crashed"] is None
    assert info["tflite_inputs"]["input"]["shape"] == [-1, 3, 64, 64]
