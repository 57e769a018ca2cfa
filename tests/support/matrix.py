"""The conversions the tests really run, as data: which tiny model goes through which
converter, which validations judge its float32 file, which precisions and targets it yields.

The conversion tests parametrise over these tables (so a row is what runs, and a row's
test asserts that it passes), and tests/project/test_coverage.py subtracts their values from the
registries: every input format, converter, validator, precision and target must appear
in a row (Hugging Face Optimum's ``test_all_models_tested``). A test that expects a
refusal is never a row.
"""

from __future__ import annotations

from dataclasses import dataclass

# Validators as "<stage entry>@<toolchain env>": stock LiteRT in the torch environment, and
# TensorFlow's interpreter (the onnx-tf environment) for a file that needs flex ops.
LITERT = "validate.tflite@torch"
FLEX = "validate.tflite@onnx-tf"
TFLITE = ("onnx", "tflite")  # export.prepare's ONNX file is checked too


@dataclass(frozen=True)
class Conversion:
    tiny: tuple[str, str]  # the TINY_MODELS key (tests/support/models.py): (spec.model_format, family)
    converter: str  # a domain.jobs.plan.CONVERTERS key
    validators: tuple[str, ...] = (LITERT,)
    precisions: tuple[str, ...] = ("float32",)
    targets: tuple[str, ...] = TFLITE
    file: str | None = None  # the model file's name in the running test, when not the family's

    @property
    def model_format(self) -> str:
        return self.tiny[0]

    @property
    def model(self) -> str:
        """The model file's name in the running test (make_models.py's or the test module's own)."""
        return self.file or self.tiny[1]


# tests/stages/test_families.py: (family, converter) -> the measured outcome of the cell:
# "pass" (builtin ops only, within tolerance), "requires_flex" (needs Select-TF ops, which
# stock LiteRT cannot run; TensorFlow's interpreter validates it), "runtime_failed",
# "mismatch", or "failed:<error code>" (the convert stage refused the model).
FAMILY_OUTCOMES: dict[tuple[str, str], str] = {
    ("segmenter", "onnx2tf"): "pass",
    ("segmenter", "litert-torch"): "pass",
    ("segmenter", "onnx-tf"): "pass",
    ("cnn", "onnx2tf"): "pass",
    ("cnn", "litert-torch"): "pass",
    ("cnn", "onnx-tf"): "pass",
    # Known gap, seen since every named dimension is probed (issue 9, item 7): onnx2tf's file
    # passes at batch 1 but stock LiteRT cannot run it at batch 2 ("XNNPack delegate failed to
    # reshape runtime"), so it fails and auto falls through to litert-torch.
    ("vit", "onnx2tf"): "fails_at_other_size",
    ("vit", "litert-torch"): "pass",
    # Known gap: onnx-tf lowers exact GELU to Erf (FlexErf) and computes shape arithmetic
    # in float64 (FlexRealDiv).
    ("vit", "onnx-tf"): "requires_flex",
    ("bert", "onnx2tf"): "pass",
    ("bert", "litert-torch"): "pass",
    ("bert", "onnx-tf"): "requires_flex",  # known gap: FlexErf (exact GELU) and FlexMul
    # Known gap: with the dynamic batch, onnx2tf writes a builtin-only file that stock LiteRT
    # cannot run ("gather index out of bounds" in a GATHER node); the convert stage's sanity
    # run sees it and fails the candidate. With a static [1, 8] input the same model passes.
    ("gpt2", "onnx2tf"): "failed:conversion_failed",
    ("gpt2", "litert-torch"): "pass",
    ("gpt2", "onnx-tf"): "requires_flex",  # known gap: FlexMul and FlexSplitV (GPT-2's fused QKV split)
    ("mlp", "onnx2tf"): "pass",
    ("mlp", "litert-torch"): "pass",
    ("mlp", "onnx-tf"): "pass",
}


def family_conversions() -> dict[str, Conversion]:
    """The family cells that convert and pass (a refused cell is not a conversion)."""
    validators = {"pass": (LITERT,), "requires_flex": (LITERT, FLEX)}
    return {
        f"family_{family}_{converter}": Conversion(("state_dict", family), converter, validators[outcome])
        for (family, converter), outcome in FAMILY_OUTCOMES.items()
        if outcome in validators
    }


# tests/stages/test_conversions.py: each upload format that is not a state dict, prepared
# and converted by onnx2tf (auto's first candidate for every format), TorchScript also by
# onnx-tf with its SavedModel; the ONNX upload with onnx2tf's SavedModel.
UPLOAD_CONVERSIONS: dict[str, Conversion] = {
    "torchscript_onnx2tf": Conversion(("torchscript", "cnn"), "onnx2tf", file="cnn_torchscript"),
    "torchscript_onnx_tf": Conversion(
        ("torchscript", "cnn"), "onnx-tf", targets=("onnx", "saved_model", "tflite"), file="cnn_torchscript"
    ),
    "onnx_onnx2tf": Conversion(
        ("onnx", "cnn"), "onnx2tf", targets=("onnx", "saved_model", "tflite"), file="cnn_onnx18"
    ),
    "program_onnx2tf": Conversion(("exported_program", "cnn"), "onnx2tf", file="cnn_program"),
    "pickled_onnx2tf": Conversion(("pickled_module", "cnn"), "onnx2tf", file="pickled_cnn"),
}

# tests/stages/test_quantize.py: the float32 files of test_litert_torch.py's chains, quantized.
QUANTIZED_PRECISIONS = ("dynamic_range", "float16", "int8")
QUANTIZATIONS: dict[str, Conversion] = {
    case: Conversion(("state_dict", case), "litert-torch", precisions=("float32", *QUANTIZED_PRECISIONS))
    for case in ("mobilenet_v2", "encoder")
}


# tests/stages/test_int8_families.py: each family's int8 job (toolchain best over onnx2tf and
# litert-torch, tflite only), under the converter whose file the kept int8 attempt came from
# (litert-torch for its PT2E file).
INT8 = ("float32", "int8")
INT8_FAMILIES: dict[str, Conversion] = {
    "segmentation": Conversion(("exported_program", "lraspp"), "onnx2tf", precisions=INT8, targets=("tflite",)),
    "vit": Conversion(("state_dict", "vit"), "litert-torch", precisions=INT8, targets=("tflite",)),
    "bert": Conversion(("state_dict", "bert"), "litert-torch", precisions=INT8, targets=("tflite",)),
    "gpt2": Conversion(("state_dict", "gpt2"), "litert-torch", precisions=INT8, targets=("tflite",)),
}


def all_conversions() -> dict[str, Conversion]:
    return {
        **family_conversions(),
        **UPLOAD_CONVERSIONS,
        **{f"quantize_{case}": row for case, row in QUANTIZATIONS.items()},
        **{f"int8_{family}": row for family, row in INT8_FAMILIES.items()},
    }
