"""int8 files another stage made from the same model, as attempts of ``quantize.litert``.

Two such files, by variant (``VARIANTS``), each made by a candidate's convert stage when the
job asks for int8 and handed over as input ``tflite_int8_<variant>_<candidate>``:

- ``pt2e``: litert-torch's PT2E file, quantized from the PyTorch module by
  ``convert.litert_torch`` (``stages.convert.litert_torch_pt2e``); quantizer
  ``litert-torch-pt2e <litert-torch version>``.
- ``tf_ptq``: TensorFlow's post-training full-integer quantization of an ONNX converter's
  SavedModel, by ``convert.onnx_tf`` or ``convert.onnx2tf`` (``stages.convert.tf_ptq``);
  quantizer ``tf-lite-converter <tensorflow version>`` (the TensorFlow of that converter's
  environment, 2.15.1 for onnx-tf, 2.21.0 for onnx2tf: this environment has none, so the
  worker passes it in the source's ``prebuilt_versions``).

Here a file is only copied and read, then checked and judged like ai-edge-quantizer's
files (``stages.quantize.attempts``). When its stage could not make it, the worker passes
the reason in the source's ``prebuilt_errors`` and the attempt is listed as failed. Its
layout may differ from the float32 file of the same candidate (TensorFlow's file keeps the
SavedModel's inputs): ``runtime_for`` runs it in its own.

On onnx-tf's and onnx2tf's sources TensorFlow's full-integer file (``TF_PTQ``: made from
the converter's SavedModel by its convert stage, ``stages.convert.tf_ptq``) comes before
ai-edge-quantizer's recipes, as PT2E does on litert-torch's (``bench.quantizers``, 8
synthetic calibration / validation samples, TensorFlow 2.15.1 / 2.21.0, ai-edge-quantizer
0.10.0): torchvision MLP 16-32-10 passed at
0.9998 (onnx-tf) / 0.9997 (onnx2tf) where both recipes were only degraded (0.9526-0.9530 /
0.9855-0.9858); tiny CNN (16 uploaded calibration samples) 0.99948 vs 0.99799 (float_sensitive
0.99976); 2-layer ViT (onnx2tf) fail 0.7569, no better recipe (default: the runtime's int8
DIV fails; float_sensitive -0.6387). Where it loses, the recipes still run: on
mobilenet_v2 (224) it fails at 0.0000 as PT2E does and the recipes pass (0.9997 / 0.9998);
on a 2-layer BERT onnx2tf could not write the SavedModel, a failed attempt. PT2E and
TF_PTQ never share a source (one converts the module, the other an ONNX file). In the
family tests (``tests/stages/test_int8_families.py``) it passes on the GPT-2 stand-in
(0.99937) where ai-edge-quantizer's files of onnx2tf's abort LiteRT.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from stages.convert import litert_torch_pt2e, tf_ptq
from stages.kit.options import RuntimeOptions
from stages.kit.results import PT2E, TF_PTQ, prebuilt_output
from stages.kit.versions import version

AI_EDGE_QUANTIZER = "ai-edge-quantizer"


@dataclass(frozen=True)
class Variant:
    """An int8 file made elsewhere: how the report names its quantizer, the package whose
    version goes with that name, the file's name as its stage writes it, its recipe, and
    how outcomes name the file."""

    quantizer: str
    library: str
    file: str
    recipe: dict[str, Any]
    label: str


VARIANTS = {
    PT2E: Variant(
        litert_torch_pt2e.QUANTIZER,
        "litert-torch",
        litert_torch_pt2e.TARGET,
        litert_torch_pt2e.RECIPE,
        "PT2E int8 file",
    ),
    TF_PTQ: Variant(tf_ptq.QUANTIZER, "tensorflow", tf_ptq.TARGET, tf_ptq.RECIPE, "TensorFlow int8 file"),
}


def input_name(variant: str, float_input: str) -> str:
    """The stage input of ``variant``'s file beside float32 input ``float_input``:
    ``tflite_int8_tf_ptq_onnx2tf`` next to ``tflite_onnx2tf``, ``tflite_int8_pt2e`` next to
    the lone ``tflite``."""
    return prebuilt_output(variant) + float_input.removeprefix("tflite")


def quantizer(variant: str, versions: Mapping[str, str]) -> tuple[str, str, str | None]:
    """(the report's quantizer name, its package, its version or None) of an attempt:
    ai-edge-quantizer for its recipes, else the variant's; ``versions``: variant -> version
    passed by the worker (TensorFlow's), else this environment's installed one."""
    made = VARIANTS.get(variant)
    if made is None:
        return AI_EDGE_QUANTIZER, AI_EDGE_QUANTIZER, version(AI_EDGE_QUANTIZER)
    return made.quantizer, made.library, versions.get(variant) or version(made.library)


def copy_file(variant: str, source: Path, target: Path) -> dict[str, Any]:
    """The file copied to ``target``: ``{"recipe", "float_ops", "restored_outputs", "wall_seconds"}`` as the
    quantizer child reports them, or ``{"error": reason}``. Its boundary already follows
    ``int8_io`` (its convert stage read the same spec)."""
    from stages.quantize.child import float_ops

    made = VARIANTS[variant]
    started = time.monotonic()
    shutil.copyfile(source, target)
    try:
        ops = float_ops(target.read_bytes())
    except Exception as exc:  # noqa: BLE001 - not a flatbuffer the quantizer's reader takes
        return {"error": f"the {made.label} cannot be read: {exc}"}
    return {
        "recipe": dict(made.recipe),
        "float_ops": ops,
        "restored_outputs": [],  # only ai-edge-quantizer swaps outputs (stages.quantize.swapped_outputs)
        "wall_seconds": round(time.monotonic() - started, 3),
    }


def runtime_for(
    runtime: RuntimeOptions, path: Path, samples: Mapping[str, Any], input_names: list[str]
) -> RuntimeOptions:
    """How ``path`` runs: ``runtime`` (its float32 source's) when the samples fit the file's
    inputs with its ``input_transposes``, else with transposes inferred from the file's own
    input shapes (``stages.quantize.calibration.input_transposes``)."""
    from stages.kit.naming import match_names
    from stages.kit.tflite_boundary import permute, read, shape_fits
    from stages.quantize.calibration import input_transposes

    boundary = read(path)
    keys, _ = match_names(input_names, [port.key for port in boundary.inputs])
    ports = {port.key: port for port in boundary.inputs}
    given = runtime.input_transposes or {}

    def fits(name: str, key: str) -> bool:
        shape = list(samples[name].shape[1:])
        return shape_fits(ports[key].shape, permute(shape, given[name]) if name in given else shape)

    if all(fits(name, key) for name, key in keys.items() if name in samples):
        return runtime
    inferred, _ = input_transposes(None, dict(samples), boundary, keys)
    return replace(runtime, input_transposes=inferred)
