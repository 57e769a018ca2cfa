"""export.prepare for every input format: TorchScript, ExportedProgram, ONNX uploads and
transformers state dicts, on tiny models written by tests/support/make_models.py.

Each case is one real stage process in the torch environment; the module fixture
runs them side by side (one per CPU, slowest first) and the tests assert on the
results: the ONNX file's metrics against the reference (PyTorch, or onnxruntime for an
ONNX upload), the exporter and opset chosen for the file's consumers, and the info.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from stages.kit import samples as sample_io
from stages.kit.contract import EXIT_STAGE_ERROR
from tests.support.models import GPT2_TINY, TINY_MODELS
from tests.support.stage_runner import StageRun, prepare_spec, run_stage

ALLOWED = {"allowed_architectures": ["torchvision.models.", "transformers."]}
BOTH = ["onnx-tf", "onnx2tf"]  # the default plan: onnx-tf reads opsets <= 15, onnx2tf any
TOLERANCE = 1e-4
TOKENS = [{"name": "input_ids", "shape": ["batch", "sequence"], "dtype": "int64"}]
MASK = [{"name": "attention_mask", "shape": ["batch", "sequence"], "dtype": "int64"}]


def image(size: int) -> list[dict[str, Any]]:
    return [{"name": "image", "shape": ["batch", 3, size, size], "dtype": "float32"}]


def spec(model_format: str, **changes: Any) -> dict[str, Any]:
    return prepare_spec(model_format, tolerance={"float32": TOLERANCE}, **changes)


# name -> (model file from make_models.py, spec); the slowest first, so two CPUs finish together.
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "program_bert": ("bert_program", spec("exported_program", onnx_consumers=BOTH)),
    "program_bert_dynamo": ("bert_program", spec("exported_program", exporter="dynamo", onnx_consumers=BOTH)),
    "bert": (
        "bert",
        spec(
            "state_dict",
            architecture=TINY_MODELS[("state_dict", "bert")].architecture,
            inputs=TOKENS + MASK,
            onnx_consumers=BOTH,
        ),
    ),
    "gpt2": (
        "gpt2",
        spec(
            "state_dict",
            architecture={"name": "transformers.GPT2LMHeadModel", "config": GPT2_TINY},
            inputs=TOKENS,
            onnx_consumers=BOTH,
        ),
    ),
    "program_cnn": ("cnn_program", spec("exported_program", onnx_consumers=BOTH)),
    "program_segmenter": ("segmenter_program", spec("exported_program", onnx_consumers=["onnx2tf"])),
    "torchscript_cnn": ("cnn_torchscript", spec("torchscript", inputs=image(32), onnx_consumers=BOTH)),
    "torchscript_mlp": (
        "mlp_torchscript",
        spec(
            "torchscript",
            inputs=[{"name": "features", "shape": ["batch", 16], "dtype": "float32"}],
            onnx_consumers=["onnx2tf"],
        ),
    ),
    "torchscript_segmenter": ("segmenter_torchscript", spec("torchscript", inputs=image(64), onnx_consumers=BOTH)),
    "torchscript_without_inputs": ("cnn_torchscript", spec("torchscript")),
    "torchscript_garbage": ("garbage", spec("torchscript", inputs=image(32))),
    "program_garbage": ("garbage", spec("exported_program")),
    "onnx_cnn": ("cnn_onnx18", spec("onnx", onnx_consumers=BOTH)),
    "onnx_tokens": ("tokens_onnx17", spec("onnx", onnx_consumers=BOTH)),
    "onnx_identities": ("cnn_onnx_identities", spec("onnx", onnx_consumers=BOTH)),
    "onnx_tokens_for_onnx_tf_only": ("tokens_onnx17", spec("onnx", onnx_consumers=["onnx-tf"])),
    "onnx_external_data": ("cnn_onnx_external", spec("onnx")),
    "onnx_garbage": ("onnx_garbage", spec("onnx")),
    "onnx_wrong_inputs": (
        "cnn_onnx18",
        spec("onnx", inputs=[{"name": "input", "shape": [1, 3, 32, 32], "dtype": "float32"}]),
    ),
}


@pytest.fixture(scope="module")
def runs(stage_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, StageRun]:
    work = tmp_path_factory.mktemp("formats")

    def run(name: str) -> StageRun:
        model, case_spec = CASES[name]
        return run_stage("torch", "export.prepare", work / name, {"model": stage_models[model]}, case_spec, ALLOWED)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return dict(zip(CASES, pool.map(run, CASES), strict=True))


def passed(run: StageRun) -> dict[str, Any]:
    """The info of a successful run whose ONNX file matches the reference within tolerance."""
    assert run.returncode == 0, run.result.get("error") or run.log[-3000:]
    assert run.ok, run.result
    metrics = run.result["metrics"]["onnx"]
    assert metrics["verdict"] == "pass", metrics["reasons"]
    assert metrics["samples"] == 4
    info: dict[str, Any] = run.result["info"]
    assert list(metrics["outputs"]) == info["output_names"]
    for name, numbers in metrics["outputs"].items():
        assert numbers["scale"] > 0, name
        assert numbers["max_abs"] <= TOLERANCE * numbers["scale"], (name, numbers)
    # The probe sets (stages.kit.probes) sit under reserved keys that sample_io.load skips.
    assert list(sample_io.load(run.output("reference"))) == info["output_names"]
    return info


def assert_error(run: StageRun, code: str, *fragments: str) -> None:
    assert run.returncode == EXIT_STAGE_ERROR, run.log[-2000:]
    assert run.error_code == code, run.result
    for fragment in fragments:
        assert fragment in run.result["error"]["message"]


def attempts(info: dict[str, Any]) -> list[tuple[str, bool, int | None]]:
    return [(a["exporter"], a["ok"], a["opset"]) for a in info["export_attempts"]]


# TorchScript: the TorchScript module is the reference, the legacy exporter writes the file.


@pytest.mark.parametrize(
    ("case", "opset", "shape"),
    [("torchscript_cnn", 15, ["batch", 10]), ("torchscript_mlp", 18, ["batch", 4])],
)
def test_torchscript_exports_with_the_legacy_exporter(
    runs: dict[str, StageRun], case: str, opset: int, shape: list[Any]
) -> None:
    info = passed(runs[case])
    assert info["model_format"] == "torchscript"
    assert (info["exporter"], info["opset"], info["reference_runtime"]) == ("torchscript", opset, "pytorch")
    assert info["onnx_tf_compatible"] is (opset <= 15)
    assert info["output_names"] == ["output"]
    assert info["output_shapes"] == {"output": shape}
    assert info["inputs_source"] == "spec"
    assert info["parameters"] > 0


def test_torchscript_dict_outputs_keep_their_names(runs: dict[str, StageRun]) -> None:
    info = passed(runs["torchscript_segmenter"])
    assert info["output_names"] == ["out", "aux"]
    assert info["output_shapes"] == {"out": ["batch", 3, 64, 64], "aux": ["batch", 3, 64, 64]}


def test_torchscript_needs_the_inputs_in_the_spec(runs: dict[str, StageRun]) -> None:
    assert_error(runs["torchscript_without_inputs"], "inputs_required", "spec.inputs")


@pytest.mark.parametrize(
    ("case", "fragment"), [("torchscript_garbage", "torch.jit"), ("program_garbage", "torch.export")]
)
def test_unreadable_programs_are_invalid_models(runs: dict[str, StageRun], case: str, fragment: str) -> None:
    assert_error(runs[case], "invalid_model", fragment)


# ExportedProgram: ep.module() is the reference, the dynamo exporter writes opset 18.


def test_exported_program_is_down_converted_for_onnx_tf(runs: dict[str, StageRun]) -> None:
    info = passed(runs["program_cnn"])
    assert (info["model_format"], info["exporter"], info["opset"]) == ("exported_program", "dynamo", 15)
    assert info["opset_conversion"] == {
        "from": 18,
        "to": 15,
        "tool": "onnx.version_converter",
        "ok": True,
        "error": None,
    }
    assert attempts(info) == [("dynamo", True, 18), ("version_converter", True, 15)]
    assert info["onnx_tf_compatible"] is True
    # No spec.inputs: the program's own signature, its symbolic batch named.
    assert info["inputs_source"] == "program"
    assert info["inputs"] == [{"name": "input", "shape": ["batch", 3, 32, 32], "dtype": "float32"}]
    assert info["onnx_input_shapes"] == {"input": ["batch", 3, 32, 32]}
    assert info["output_shapes"] == {"output": ["batch", 10]}


def test_exported_text_encoder_is_decomposed_for_onnx_tf(runs: dict[str, StageRun]) -> None:
    # LayerNormalization (opset 17) has no opset-15 form in onnx.version_converter; it is
    # rewritten as ReduceMean/Sub/Mul/Add/Sqrt/Div first (stages/export/onnx_decompose.py).
    info = passed(runs["program_bert"])
    assert info["output_names"] == ["last_hidden_state", "pooler_output"]
    assert (info["exporter"], info["opset"], info["onnx_tf_compatible"]) == ("dynamo", 15, True)
    assert attempts(info) == [("dynamo", True, 18), ("version_converter", True, 15)]
    assert info["opset_conversion"]["decomposed"] == ["LayerNormalization"]
    # Token ids below the vocabulary the program's embedding table has.
    assert info["synthetic_ranges"] == {"input_ids": {"range": [0, 100], "source": "embedding"}}
    assert info["inputs"][0]["shape"] == ["batch", "input_ids_dim1"]


def test_exported_program_with_the_dynamo_exporter_alone_reaches_onnx_tfs_opset(runs: dict[str, StageRun]) -> None:
    info = passed(runs["program_bert_dynamo"])
    assert (info["exporter"], info["opset"], info["onnx_tf_compatible"]) == ("dynamo", 15, True)
    assert info["opset_conversion"]["decomposed"] == ["LayerNormalization"]
    assert info["output_shapes"]["last_hidden_state"] == ["batch", "input_ids_dim1", 32]


def test_exported_program_dict_outputs(runs: dict[str, StageRun]) -> None:
    info = passed(runs["program_segmenter"])
    assert info["output_names"] == ["out", "aux"]
    assert (info["exporter"], info["opset"]) == ("dynamo", 18)
    assert info["output_shapes"] == {"out": [1, 3, 64, 64], "aux": [1, 3, 64, 64]}


# ONNX uploads: no PyTorch, onnxruntime is the reference.


def test_onnx_upload_is_down_converted_for_onnx_tf(runs: dict[str, StageRun]) -> None:
    info = passed(runs["onnx_cnn"])
    assert (info["model_format"], info["exporter"], info["reference_runtime"]) == ("onnx", "uploaded", "onnxruntime")
    assert (info["source_opset"], info["opset"], info["onnx_tf_compatible"]) == (18, 15, True)
    assert info["opset_conversion"]["ok"] is True
    assert "torch" not in info["versions"]
    assert info["inputs_source"] == "graph"
    assert info["inputs"] == [{"name": "image", "shape": ["batch", 3, 32, 32], "dtype": "float32"}]
    assert (info["output_names"], info["output_name_map"]) == (["logits"], {})


def test_onnx_upload_with_identity_nodes_reaches_onnx_tfs_opset(runs: dict[str, StageRun]) -> None:
    # onnx.version_converter has no Identity adapter below opset 16: the nodes are
    # bypassed first, and the converted file still matches onnxruntime's reference.
    info = passed(runs["onnx_identities"])
    assert (info["source_opset"], info["opset"], info["onnx_tf_compatible"]) == (18, 15, True)
    assert info["opset_conversion"]["ok"] is True
    assert info["output_names"] == ["logits"]
    assert runs["onnx_identities"].result["metrics"]["onnx"]["verdict"] == "pass"


def test_onnx_upload_tokens_names_and_decomposed_layer_norm(runs: dict[str, StageRun]) -> None:
    info = passed(runs["onnx_tokens"])
    # The vocabulary (37) is below the samples' default id range: only the Gather table tells.
    assert info["synthetic_ranges"] == {"input_ids": {"range": [0, 37], "source": "embedding"}}
    assert info["inputs"][0]["shape"] == ["batch", "sequence"]
    assert info["output_names"] == ["hidden_0", "pooled"]
    assert info["output_name_map"] == {"hidden_0": "hidden:0"}
    # Opset 17's LayerNormalization, decomposed, reaches onnx-tf's opset (checked by passed()).
    assert (info["source_opset"], info["opset"], info["onnx_tf_compatible"]) == (17, 15, True)
    assert info["opset_conversion"]["decomposed"] == ["LayerNormalization"]


def test_onnx_upload_for_onnx_tf_alone_reaches_its_opset(runs: dict[str, StageRun]) -> None:
    info = passed(runs["onnx_tokens_for_onnx_tf_only"])
    assert (info["source_opset"], info["opset"], info["onnx_tf_compatible"]) == (17, 15, True)


def test_onnx_external_data_is_refused(runs: dict[str, StageRun]) -> None:
    assert_error(runs["onnx_external_data"], "onnx_external_data", "cnn_external.data", "re-save")


def test_onnx_garbage_is_an_invalid_model(runs: dict[str, StageRun]) -> None:
    assert_error(runs["onnx_garbage"], "invalid_model", "ONNX")


def test_onnx_inputs_must_match_the_graph(runs: dict[str, StageRun]) -> None:
    assert_error(runs["onnx_wrong_inputs"], "input_mismatch", "image [batch, 3, 32, 32] float32", "missing ['image']")


# transformers state dicts: built from the config, outputs named after ModelOutput fields.


def test_bert_state_dict(runs: dict[str, StageRun]) -> None:
    info = passed(runs["bert"])
    assert info["output_names"] == ["last_hidden_state", "pooler_output"]
    assert info["output_shapes"] == {"last_hidden_state": ["batch", "sequence", 32], "pooler_output": ["batch", 32]}
    assert (info["exporter"], info["opset"]) == ("torchscript", 15)
    assert info["synthetic_ranges"] == {
        "input_ids": {"range": [0, 100], "source": "embedding"},
        "attention_mask": {"range": [0, 2], "source": "mask"},
    }


def test_gpt2_state_dict_exports_without_a_cache(runs: dict[str, StageRun]) -> None:
    # transformers' causal mask uses torch.diff and a boolean cumsum: the legacy exporter
    # needs stages.export.symbolics to reach opset 15.
    info = passed(runs["gpt2"])
    assert info["output_names"] == ["logits"]
    assert info["output_shapes"] == {"logits": ["batch", "sequence", 100]}
    assert (info["exporter"], info["opset"]) == ("torchscript", 15)
