"""The SavedModel as a candidate output: onnx2tf writes one, onnx-tf keeps its own.

ONNX uploads at opset 17 (LayerNormalization, which onnx-tf cannot read) of a tiny
transformer encoder (``nn.TransformerEncoderLayer``, and one written out with dynamic
``batch`` and ``seq``), a decoder and a ConvNeXt-style block (and a convolution whose output
onnx2tf leaves channel-last, named ``hidden:0``): export.prepare ->
convert.onnx2tf with the ``saved_model`` target -> validate.tflite. Each gets
``model.onnx``, a validated SavedModel and a float32 .tflite; the SavedModel's numbers
are checked again here by loading ``saved_model.zip`` in TensorFlow with
tests/support/saved_model_check.py, independently of the stage.

The written-out encoder and the ConvNeXt block (dynamic ``batch``) are
also run at a second size of every named dimension (issue 9, item 7): onnxruntime's
reference there is stored by export.prepare, and the .tflite and the SavedModel are run
and judged at it, here and independently. A file that misses at the second size fails
(the encoder's file judged against a per-token model that agrees at ``seq=1`` only).

The einsum case (``torch.einsum("bij,ij->b", x, W)``): onnx-tf's SavedModel passes and
its SavedModel->TFLite step fails; the stage keeps the SavedModel and records the
failure against the .tflite alone.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from stages.kit import probes as probe_io
from tests.support.stage_runner import StageRun, make_torch_models, prepare_spec, run_stage
from tests.support.toolchain import run_script

TOLERANCE = 1e-4
TARGETS = ["onnx", "saved_model", "tflite"]

MODELS = r"""
import json, sys
from pathlib import Path
import torch
from torch import nn

out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)

class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.head = nn.Linear(16, 5)
    def forward(self, tokens):
        return self.head(self.layer(tokens))

# A BERT-style block written out, two heads: nn.MultiheadAttention's traced reshapes keep the
# example's sequence length (the legacy exporter's file runs at that length only), and a
# reshape to (b, s, heads, 8) stops onnx2tf's SavedModel ("Can't concatenate scalars").
class SeqEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv, self.proj = nn.Linear(16, 48), nn.Linear(16, 16)
        self.norm1, self.norm2 = nn.LayerNorm(16), nn.LayerNorm(16)
        self.ff = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16))
        self.head = nn.Linear(16, 5)
    def forward(self, tokens):
        q, k, v = self.qkv(tokens).chunk(3, dim=-1)
        heads = []
        for qh, kh, vh in zip(q.chunk(2, -1), k.chunk(2, -1), v.chunk(2, -1)):
            heads.append(torch.softmax(qh @ kh.transpose(1, 2) / 8 ** 0.5, dim=-1) @ vh)
        x = self.norm1(tokens + self.proj(torch.cat(heads, -1)))
        return self.head(self.norm2(x + self.ff(x)))

class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.TransformerDecoderLayer(16, 2, 32, dropout=0.0, batch_first=True, norm_first=True)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(6))
    def forward(self, tokens, memory):
        return self.layer(tokens, memory, tgt_mask=self.mask)

class ConvNeXtBlock(nn.Module):
    def __init__(self, dim=8):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.up = nn.Linear(dim, 4 * dim)
        self.down = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 0.5))
    def forward(self, image):
        x = self.dwconv(image).permute(0, 2, 3, 1)
        x = self.down(nn.functional.gelu(self.up(self.norm(x)))) * self.gamma
        return image + x.permute(0, 3, 1, 2)

class Einsum(nn.Module):
    def __init__(self):
        super().__init__()
        self.W = nn.Parameter(torch.randn(3, 4))
    def forward(self, x):
        return torch.einsum("bij,ij->b", x, self.W)

# The encoder with each token attending to itself alone: the same numbers at seq=1 only.
class PerToken(nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder
    def forward(self, tokens):
        b, s, d = tokens.shape
        return self.encoder(tokens.reshape(b * s, 1, d)).reshape(b, s, -1)

# Declares a dynamic batch but reshapes to a constant [1, 96]: runs at batch 1 only.
class Flat(nn.Module):
    def forward(self, tokens):
        return torch.tanh(tokens.reshape(1, 96))

files = {}
def export(name, model, args, inputs, outputs, opset, dynamic=None):
    path = out / f"{name}.onnx"
    torch.onnx.export(model.eval(), args, str(path), opset_version=opset, input_names=inputs,
                      output_names=outputs, dynamo=False, dynamic_axes=dynamic)
    files[name] = str(path)

export("encoder", Encoder(), (torch.randn(1, 6, 16),), ["tokens"], ["logits"], 17)
seq_encoder = SeqEncoder()
sequence = {"tokens": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}}
export("seq_encoder", seq_encoder, (torch.randn(1, 6, 16),), ["tokens"], ["logits"], 17, sequence)
export("per_token", PerToken(seq_encoder), (torch.randn(1, 6, 16),), ["tokens"], ["logits"], 17, sequence)
export("flat", Flat(), (torch.randn(1, 6, 16),), ["tokens"], ["flat"], 17, {"tokens": {0: "batch"}})
export("decoder", Decoder(), (torch.randn(1, 6, 16), torch.randn(1, 4, 16)), ["tokens", "memory"], ["hidden"], 17)
batch = {"image": {0: "batch"}, "features": {0: "batch"}}
export("convnext", ConvNeXtBlock(), (torch.randn(1, 8, 16, 16),), ["image"], ["features"], 17, batch)
export("einsum", Einsum(), (torch.randn(2, 3, 4),), ["x"], ["y"], 15)
# Names TensorFlow cannot keep ("hidden:0") and a 4-D output: the signature is rebuilt.
renamed = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh())
export("renamed", renamed, (torch.randn(1, 3, 6, 5),), ["image"], ["hidden:0"], 17)
print(json.dumps(files))
"""


def spec(**changes: Any) -> dict[str, Any]:
    return prepare_spec("onnx", **{"tolerance": {"float32": TOLERANCE}, "targets": TARGETS, **changes})


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_torch_models(MODELS, tmp_path_factory.mktemp("saved-model-models"))


def onnx2tf_chain(work: Path, model: Path) -> dict[str, StageRun]:
    job = spec(onnx_consumers=["onnx2tf"])
    prepare = run_stage("torch", "export.prepare", work / "prepare", {"model": model}, job)
    assert prepare.ok, prepare.result
    shared = {"samples": prepare.output("samples"), "reference": prepare.output("reference")}
    convert = run_stage("onnx2tf", "convert.onnx2tf", work / "convert", {"onnx": prepare.output("onnx"), **shared}, job)
    assert convert.ok, convert.result
    validate = run_stage(
        "torch", "validate.tflite", work / "validate", {"tflite": convert.output("tflite_float32"), **shared}, job
    )
    return {"prepare": prepare, "convert": convert, "validate": validate}


FAMILIES = ("encoder", "seq_encoder", "decoder", "convnext", "renamed")
FIXED = "no named dynamic dimension: every input of the ONNX graph has fixed sizes"
# info.probes per family: the sizes the reference ran at (the samples', then the second).
PROBED: dict[str, dict[str, Any]] = {
    "encoder": {"sizes": []},
    "seq_encoder": {"sizes": [{"batch": 1, "seq": 1}, {"batch": 2, "seq": 2}]},
    "convnext": {"sizes": [{"batch": 1}, {"batch": 2}]},
    "decoder": {"sizes": []},
    "renamed": {"sizes": []},
}
SECOND_SHAPES = {"seq_encoder": {"tokens": [2, 2, 16]}, "convnext": {"image": [2, 8, 16, 16]}}


@pytest.fixture(scope="module")
def chains(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, StageRun]]:
    work = tmp_path_factory.mktemp("saved-model-chains")
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = {name: pool.submit(onnx2tf_chain, work / name, models[name]) for name in FAMILIES}
        return {name: future.result() for name, future in runs.items()}


@pytest.mark.parametrize("family", FAMILIES)
def test_opset17_upload_gets_onnx_saved_model_and_tflite(chains: dict[str, dict[str, StageRun]], family: str) -> None:
    chain = chains[family]
    prepare, convert, validate = chain["prepare"], chain["convert"], chain["validate"]
    assert prepare.result["info"]["opset"] == 17
    assert prepare.result["metrics"]["onnx"]["verdict"] == "pass"
    assert convert.result["outputs"] == {"tflite_float32": "model_float32.tflite", "saved_model": "saved_model.zip"}
    assert convert.result["info"]["failed"] == {}
    check = convert.result["metrics"]["saved_model"]
    assert check["verdict"] == "pass", check["reasons"]
    for numbers in check["outputs"].values():
        assert numbers["scale"] > 1e-3
        assert numbers["max_abs"] <= TOLERANCE * numbers["scale"]
    assert validate.ok
    assert validate.result["metrics"]["tflite_float32"]["verdict"] == "pass"
    saved = convert.result["info"]["saved_model"]
    assert saved["flag"] == "-fdosm"
    assert saved["tensorflow"] == "2.21.0"


@pytest.mark.parametrize("family", FAMILIES)
def test_saved_model_numbers_hold_when_loaded_independently(
    chains: dict[str, dict[str, StageRun]], family: str
) -> None:
    chain = chains[family]
    prepare, convert = chain["prepare"], chain["convert"]
    found = run_script(
        "onnx2tf",
        "saved_model_check.py",
        str(convert.output("saved_model")),
        str(prepare.output("samples")),
        str(prepare.output("reference")),
    )
    # The signature keeps the upload's input names and output names; the layout is PyTorch's.
    assert sorted(found["inputs"]) == sorted(prepare.result["info"]["input_names"])
    assert found["outputs"] == sorted(prepare.result["info"]["output_names"])
    for name, numbers in found["compared"].items():
        assert numbers["max_abs"] is not None, f"{name}: shape {numbers['shape']} differs from the reference"
        assert numbers["scale"] > 1e-3
        assert numbers["max_abs"] <= TOLERANCE * numbers["scale"], (name, numbers)
    # The second size of every named dimension, read from reference.npz by the script itself.
    assert [probe["sizes"] for probe in found["probes"]] == PROBED[family]["sizes"][1:]
    for probe in found["probes"]:
        for name, numbers in probe["compared"].items():
            assert numbers["max_abs"] is not None, f"at {probe['sizes']}, {name}: shape {numbers['shape']}"
            assert numbers["scale"] > 1e-3
            assert numbers["max_abs"] <= TOLERANCE * numbers["scale"], (probe["sizes"], name, numbers)


def test_tflite_only_job_imports_no_tensorflow(models: dict[str, Path], tmp_path: Path) -> None:
    job = spec(onnx_consumers=["onnx2tf"], targets=["onnx", "tflite"])
    prepare = run_stage("torch", "export.prepare", tmp_path / "prepare", {"model": models["encoder"]}, job)
    shared = {"samples": prepare.output("samples"), "reference": prepare.output("reference")}
    inputs = {"onnx": prepare.output("onnx"), **shared}
    convert = run_stage("onnx2tf", "convert.onnx2tf", tmp_path / "convert", inputs, job)
    assert convert.ok, convert.result
    assert convert.result["outputs"] == {"tflite_float32": "model_float32.tflite"}
    assert convert.result["info"]["saved_model"] is None
    assert "-fdosm" not in convert.result["info"]["converter"]["command"]


@pytest.fixture(scope="module")
def einsum(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, StageRun]:
    work = tmp_path_factory.mktemp("einsum")
    job = spec(onnx_consumers=["onnx-tf", "onnx2tf"])
    prepare = run_stage("torch", "export.prepare", work / "prepare", {"model": models["einsum"]}, job)
    assert prepare.ok, prepare.result
    shared = {"samples": prepare.output("samples"), "reference": prepare.output("reference")}
    convert = run_stage("onnx-tf", "convert.onnx_tf", work / "convert", {"onnx": prepare.output("onnx"), **shared}, job)
    return {"prepare": prepare, "convert": convert}


def test_einsum_keeps_the_passing_saved_model_when_its_tflite_fails(einsum: dict[str, StageRun]) -> None:
    convert = einsum["convert"]
    assert convert.ok, convert.result
    assert convert.result["outputs"] == {"saved_model": "saved_model.zip"}
    check = convert.result["metrics"]["saved_model"]
    assert check["verdict"] == "pass", check["reasons"]
    assert check["outputs"]["y"]["max_abs"] <= TOLERANCE * check["outputs"]["y"]["scale"]
    failed = convert.result["info"]["failed"]["tflite_float32"]
    assert failed["code"] == "tflite_conversion_failed"
    assert "Select-TF" in failed["reason"]
    found = run_script(
        "onnx-tf",
        "saved_model_check.py",
        str(convert.output("saved_model")),
        str(einsum["prepare"].output("samples")),
        str(einsum["prepare"].output("reference")),
    )
    assert found["compared"]["y"]["max_abs"] <= TOLERANCE * found["compared"]["y"]["scale"]


def test_an_output_left_channel_last_gets_pytorchs_layout_back(chains: dict[str, dict[str, StageRun]]) -> None:
    # onnx2tf's own SavedModel returns this output NHWC: the stage re-signs it with the
    # .tflite's boundary plan, and the check above found PyTorch's NCHW shape and values.
    info = chains["renamed"]["convert"].result["info"]
    assert info["converter"]["boundary_rewrite"]["output_transposes"] == {"hidden_0": [0, 3, 1, 2]}
    rewrite = info["saved_model"]["signature_rewrite"]
    assert rewrite["output_transposes"] == {"hidden_0": [0, 3, 1, 2]}
    assert info["saved_model"]["signature"]["outputs"] == ["hidden_0"]
    assert info["saved_model"]["signature"]["inputs"] == {"image": {"shape": [1, 3, 6, 5], "dtype": "float32"}}


@pytest.mark.parametrize("family", FAMILIES)
def test_onnx_upload_reference_at_a_second_size_of_every_named_dimension(
    chains: dict[str, dict[str, StageRun]], family: str
) -> None:
    prepare = chains[family]["prepare"]
    probes = prepare.result["info"]["probes"]
    assert probes["sizes"] == PROBED[family]["sizes"], probes
    sets = probe_io.load(prepare.output("reference"))
    if family not in SECOND_SHAPES:
        assert probes["reason"].startswith(FIXED), probes
        assert sets == []
        # Run at the samples' shapes only, and the report says which.
        tflite = chains[family]["validate"].result["metrics"]["tflite_float32"]
        saved = chains[family]["convert"].result["metrics"]["saved_model"]
        for check in (tflite, saved):
            (shapes,) = check["sample_shapes"]
            assert sorted(shapes) == sorted(prepare.result["info"]["input_names"])
            assert check["probes"] == []
        return
    (probe,) = sets
    assert probe.sizes == PROBED[family]["sizes"][1]
    (name, shape), (output,) = next(iter(SECOND_SHAPES[family].items())), prepare.result["info"]["output_names"]
    assert probe.inputs[name].shape == (probe_io.PROBE_SAMPLES, *shape)
    assert probe.outputs[output].shape[:2] == (probe_io.PROBE_SAMPLES, shape[0])
    assert float(abs(probe.outputs[output]).max()) > 1e-2


@pytest.mark.parametrize("family", sorted(SECOND_SHAPES))
def test_tflite_and_saved_model_run_at_the_second_size(chains: dict[str, dict[str, StageRun]], family: str) -> None:
    tflite = chains[family]["validate"].result["metrics"]["tflite_float32"]
    saved = chains[family]["convert"].result["metrics"]["saved_model"]
    (name, _), second = next(iter(SECOND_SHAPES[family].items())), SECOND_SHAPES[family]
    for check in (tflite, saved):
        assert check["sample_shapes"][1:] == [second], check["sample_shapes"]
        assert len(check["sample_shapes"][0][name]) == len(second[name])
        (probe,) = check["probes"]
        assert probe["sizes"] == PROBED[family]["sizes"][1]
        assert probe["ran"] is True, probe
        assert probe["verdict"] == "pass", check["reasons"]
        for error in probe["max_abs_over_scale"].values():
            assert error <= TOLERANCE
        assert check["verdict"] == "pass", check["reasons"]


def test_a_file_that_misses_at_the_second_size_fails(
    chains: dict[str, dict[str, StageRun]], models: dict[str, Path], tmp_path: Path
) -> None:
    # The per-token model agrees with the encoder at seq=1 (the samples) and not at seq=2:
    # the encoder's real .tflite, judged against it, passes the samples and misses the probe.
    job = spec(onnx_consumers=["onnx2tf"])
    prepare = run_stage("torch", "export.prepare", tmp_path / "prepare", {"model": models["per_token"]}, job)
    assert prepare.ok, prepare.result
    assert prepare.result["info"]["probes"]["sizes"] == PROBED["seq_encoder"]["sizes"]
    inputs = {
        "tflite": chains["seq_encoder"]["convert"].output("tflite_float32"),
        "samples": prepare.output("samples"),
        "reference": prepare.output("reference"),
    }
    validate = run_stage("torch", "validate.tflite", tmp_path / "validate", inputs, job)
    assert validate.ok, validate.result
    metrics = validate.result["metrics"]["tflite_float32"]
    assert metrics["outputs"]["logits"]["max_abs"] <= TOLERANCE * metrics["outputs"]["logits"]["scale"]
    (probe,) = metrics["probes"]
    assert probe["ran"] is True
    assert probe["verdict"] == "fail"
    assert probe["max_abs_over_scale"]["logits"] > 10 * TOLERANCE
    assert metrics["verdict"] == "fail"
    assert any(reason.startswith("at batch=2, seq=2: ") for reason in metrics["reasons"]), metrics["reasons"]


def test_an_upload_that_runs_at_one_size_only_says_why_it_has_no_probe(models: dict[str, Path], tmp_path: Path) -> None:
    job = spec(onnx_consumers=["onnx2tf"])
    flat = run_stage("torch", "export.prepare", tmp_path / "flat", {"model": models["flat"]}, job)
    assert flat.ok, flat.result
    probes = flat.result["info"]["probes"]
    assert probes["sizes"] == [{"batch": 1}]
    assert probes["reason"].startswith("onnxruntime on the uploaded file fails at {'batch': 2}: "), probes
    assert probe_io.load(flat.output("reference")) == []
    # The spec names a dimension the graph fixes: accepted, sampled at the graph's size, not probed.
    image = {"name": "image", "shape": ["batch", 3, 6, 5], "dtype": "float32"}
    named = spec(onnx_consumers=["onnx2tf"], inputs=[image])
    fixed = run_stage("torch", "export.prepare", tmp_path / "fixed", {"model": models["renamed"]}, named)
    assert fixed.ok, fixed.result
    assert fixed.result["info"]["probes"] == {
        "sizes": [{"batch": 1}],
        "reason": "the uploaded ONNX graph fixes batch (image axis 0) is 1: it runs at that size only",
    }
