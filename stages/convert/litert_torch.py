"""Stage ``convert.litert_torch`` (torch env): PyTorch -> float32 TFLite with litert-torch.

Inputs: ``model`` (the upload), ``samples`` and ``reference`` (from ``export.prepare``).
Output: ``tflite_float32`` (model_float32.tflite). Google's direct path: no ONNX and
no TensorFlow; the file keeps PyTorch's layout and holds builtin ops only. When the job
asks for int8 (and optional input ``calibration``, the upload): also ``tflite_int8_pt2e``
(model_int8_pt2e.tflite), litert-torch's PT2E int8 file made from the loaded module
(``stages.convert.litert_torch_pt2e``), which ``quantize.litert`` judges as one more int8
attempt; ``info.pt2e`` says how it went (a PT2E failure is its ``error``, never the stage's).
The PT2E flow runs first, in a fork of this process made before the stage's first
``litert_torch.convert`` (thread safety: see that module), so a crash or hang in it is its
own error and the float32 conversion runs after it as it would alone.

How litert-torch 0.10.0 is driven, and why (verified on this machine):

- ``litert_torch.convert(module, sample_kwargs=...)`` runs ``torch.export`` (non-strict),
  lowers to MLIR and writes one ``serving_default`` signature. Its input names are the
  keyword names of ``sample_kwargs`` (positional ``sample_args`` would give
  ``args_0``...), and its output names are the keys when the module returns a flat
  dict (a tuple would give ``output_0``...). So the model is wrapped to take its
  inputs by keyword and return ``{stable output name: tensor}`` in the order of
  ``export.prepare``'s reference (``flat_module``'s flattening).
- ``torch.export`` turns keyword names into Python parameters, so a spec name that is
  not an identifier (``input.1``) is exported under a sanitized name and renamed back in
  the flatbuffer afterwards (``stages.kit.tflite_boundary.rewrite``).
- The spec's named dimensions are passed as ``dynamic_shapes`` first; when litert-torch
  cannot lower them (0.10: every model tried so far) the shapes are static: the sample
  fixes every dimension, named dynamic ones included (``info.static_shapes``,
  ``info.dynamic_shapes`` says what was tried and why it failed). 64-bit inputs become 32-bit (``enable_x64=False``, the
  default, which is what stock LiteRT kernels take); ``info.signature`` shows the dtypes.
- A module rebuilt by ``torch.export.load(...).module()`` refuses ``eval()``; its graph
  is already fixed, so only the wrappers are marked as not training.
"""

from __future__ import annotations

import keyword
import os
import re
import time
from pathlib import Path
from typing import Any

from stages.convert import litert_torch_pt2e
from stages.export.formats import unpickle_module
from stages.export.model import DEFAULT_ALLOWED, apply_state_dict, build_model, load_state_dict
from stages.kit import samples as sample_io
from stages.kit.codes import StageCode
from stages.kit.contract import StageError, StageRequest, StageResult
from stages.kit.failures import first_line
from stages.kit.options import OperatorOptions, read_options
from stages.kit.results import PT2E
from stages.kit.spec import PlanSpec
from stages.kit.versions import versions

SUPPORTED_FORMATS = ("state_dict", "exported_program", "pickled_module")
TARGET = "model_float32.tflite"
ADVICE = (
    "litert-torch traces the model with torch.export: data-dependent control flow, "
    "unsupported operators or Python side effects in forward stop it. Try the onnx2tf or "
    "onnx-tf toolchain, or change the model to avoid that construct; the stage log has "
    "the full trace"
)
CONVERTER_FLAGS: dict[str, Any] = {
    "strict_export": False,
    "enable_x64": False,
    "quant_config": None,
    "lightweight_conversion": False,
    "use_v2": False,
}


def run(request: StageRequest) -> StageResult:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    spec, options = request.spec, read_options(OperatorOptions, request.options)
    layout = spec.layout
    if layout != "nchw":
        raise StageError(
            StageCode.INVALID_SPEC,
            f"layout {layout!r} is produced by the onnx2tf toolchain only; litert-torch keeps nchw",
        )
    inputs = sample_io.input_specs(spec)
    input_names = [item["name"] for item in inputs]
    samples = sample_io.load(request.input_path("samples"))
    reference = sample_io.load(request.input_path("reference"))
    output_names = list(reference)
    missing = [name for name in input_names if name not in samples]
    if missing:
        raise StageError(StageCode.INVALID_SAMPLES, f"samples.npz lacks the inputs {missing} (has {sorted(samples)})")

    import torch

    torch.set_num_threads(int(options.threads or 1))
    torch.manual_seed(spec.seed)

    started = time.monotonic()
    model = _load_model(request, spec, options)
    load_seconds = time.monotonic() - started

    keys = _identifiers(input_names)
    wrapper = _keyword_module(model, keys, output_names)
    example = {keys[name]: torch.from_numpy(samples[name][0]) for name in input_names}
    target = request.output_dir / TARGET

    import litert_torch

    renames = {key: name for name, key in keys.items() if key != name}
    outputs, pt2e = {"tflite_float32": TARGET}, None
    if "int8" in spec.quantized:  # the second int8 quantizer, in a fork made before any conversion
        extra, pt2e = litert_torch_pt2e.produce(
            request, litert_torch, wrapper, example, keys, samples, renames, CONVERTER_FLAGS
        )
        outputs.update(extra)

    started = time.monotonic()
    # The spec's named dimensions first (litert-torch's dynamic_shapes), static when that fails.
    dynamic = _convert_dynamic(litert_torch, wrapper, inputs, keys, samples, target)
    try:
        if not dynamic["kept"]:
            edge_model = litert_torch.convert(wrapper, sample_kwargs=example, **CONVERTER_FLAGS)
            edge_model.export(str(target))
    except StageError:
        raise
    except Exception as exc:  # torch.export and the MLIR lowering raise anything
        import traceback

        traceback.print_exc()
        raise StageError(
            StageCode.CONVERSION_FAILED, f"litert-torch could not convert the model: {first_line(exc)}. {ADVICE}"
        ) from None
    convert_seconds = time.monotonic() - started

    if renames:
        _rename_inputs(target, renames)
    ops = _builtin_only(target)
    return StageResult(
        outputs=outputs,
        metrics={},
        info={
            "versions": versions("litert-torch", "torch", "torchvision", "ai-edge-litert", "litert-converter", "numpy"),
            "converter": {
                "tool": "litert-torch",
                "api": "litert_torch.convert(module, sample_kwargs={input name: first sample}, **flags).export(path)",
                "flags": dict(CONVERTER_FLAGS),
                "wrapper": "inputs by keyword under the spec's names; outputs as a dict keyed by the "
                "stable output names, in export.prepare's order",
                "renamed_inputs": renames,
            },
            "requires_flex": bool(ops["flex"]),
            "operators": {"builtin": ops["builtin"], "flex": ops["flex"], "custom": ops["custom"]},
            "transpose_count": ops["transpose_count"],
            "layout": layout,
            "static_shapes": not dynamic["kept"],
            "dynamic_shapes": dynamic,
            "fixed_dimensions": {} if dynamic["kept"] else _fixed_dimensions(inputs, samples),
            "signature": _signature(target, inputs, output_names),
            "model_format": _model_format(spec),
            "seconds": {"load": round(load_seconds, 3), "convert": round(convert_seconds, 3)},
            PT2E: pt2e,  # the entry ConvertInfo reads (stages.kit.results)
        },
    )


def _model_format(spec: PlanSpec) -> str:
    model_format = spec.model_format
    # "auto" is resolved by the control plane's sniffing; here it can only mean a state dict.
    return "state_dict" if model_format == "auto" else model_format


def _load_model(request: StageRequest, spec: PlanSpec, options: OperatorOptions) -> Any:
    model_format = _model_format(spec)
    path = request.input_path("model")
    if model_format == "state_dict":
        state = load_state_dict(path)
        model = build_model(spec.architecture, options.allowed_architectures or DEFAULT_ALLOWED)
        apply_state_dict(model, state)
        return model.eval()
    if model_format == "exported_program":
        import torch

        try:
            return torch.export.load(str(path)).module()
        except Exception as exc:  # the user's file
            raise StageError(
                StageCode.INVALID_MODEL, f"not a torch.export ExportedProgram (.pt2): {first_line(exc)}"
            ) from None
    if model_format == "pickled_module":
        # Runs the pickle's code: this stage is sandboxed like export.prepare.
        return unpickle_module(path, options.enable_pickled_module)
    raise StageError(
        StageCode.FORMAT_NOT_SUPPORTED,
        f"model_format {model_format!r} cannot be converted by litert-torch "
        f"(it needs a PyTorch module); supported: {list(SUPPORTED_FORMATS)}",
    )


def _identifiers(names: list[str]) -> dict[str, str]:
    """Spec input name -> a Python identifier torch.export can use as a parameter name."""
    taken: set[str] = set()
    result: dict[str, str] = {}
    for name in names:
        base = re.sub(r"\W", "_", name)
        if not base or base[0].isdigit() or keyword.iskeyword(base) or base == "self":
            base = f"input_{base}"
        candidate, n = base, 1
        while candidate in taken:
            candidate, n = f"{base}_{n}", n + 1
        taken.add(candidate)
        result[name] = candidate
    return result


def _keyword_module(model: Any, keys: dict[str, str], output_names: list[str]) -> Any:
    import torch

    from stages.export.outputs import flat_module

    flat = flat_module(model)
    flat.training = False  # not .eval(): an ExportedProgram's module refuses it

    class _KeywordIO(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.flat = flat
            self.keys = list(keys.values())

        def forward(self, **kwargs: Any) -> dict[str, Any]:
            outputs = self.flat(*(kwargs[key] for key in self.keys))
            if len(outputs) != len(output_names):
                raise StageError(
                    StageCode.CONVERSION_FAILED,
                    f"the model returns {len(outputs)} tensors but export.prepare's reference has "
                    f"{len(output_names)} outputs {output_names}; the model and the reference disagree",
                )
            return dict(zip(output_names, outputs, strict=True))

    wrapper = _KeywordIO()
    wrapper.training = False
    return wrapper


def _rename_inputs(target: Path, renames: dict[str, str]) -> None:
    from stages.kit.tflite_boundary import rewrite

    staged = target.with_suffix(".renamed.tflite")
    try:
        rewrite(target, staged, renames=renames)
    except ValueError as exc:  # weights outside the flatbuffer (> 2 GB)
        raise StageError(
            StageCode.CONVERSION_FAILED,
            f"the input names {sorted(renames.values())} are not Python identifiers, and the "
            f"converted file cannot be renamed: {exc}. Use identifier input names",
        ) from None
    staged.replace(target)


def _builtin_only(target: Path) -> dict[str, Any]:
    from stages.kit.tflite_ops import operators

    ops = operators(target)
    if ops["custom"]:
        raise StageError(
            StageCode.CONVERSION_FAILED,
            f"litert-torch wrote custom ops {ops['custom']}, which stock LiteRT cannot run. {ADVICE}",
        )
    return ops


def _convert_dynamic(
    litert_torch: Any,
    wrapper: Any,
    inputs: list[dict[str, Any]],
    keys: dict[str, str],
    samples: dict[str, Any],
    target: Path,
) -> dict[str, Any]:
    """Convert with the spec's named dimensions dynamic (``litert_torch.convert(...,
    dynamic_shapes={key: {axis: torch.export.Dim(name)}})``); ``{"tried", "kept", "error"}``.

    The example is the first sample cycled to size 2 along each named axis (torch.export
    specializes a dimension of size 1). Measured with litert-torch 0.10: it fails even on an
    MLP with a dynamic batch (an AssertionError in its lowering, ``use_v2`` too; on
    mobilenet_v2 its JAX bridge wants concrete reshape sizes): then ``kept`` is False with
    the first line of its error, and the caller converts with static shapes, which
    ``validate.tflite`` reports as a frozen dimension.
    """
    import numpy as np
    import torch

    named = {item["name"]: sample_io.dynamic_axes(item["shape"]) for item in inputs}
    if not any(named.values()):
        return {"tried": False, "kept": False, "error": None}
    dims: dict[str, Any] = {}
    shapes: dict[str, dict[int, Any]] = {}
    example: dict[str, Any] = {}
    for item in inputs:
        name = item["name"]
        array = samples[name][0]
        for axis, dim in named[name].items():
            dims.setdefault(dim, torch.export.Dim(re.sub(r"\W", "_", dim) or "dim"))
            array = np.take(array, np.arange(max(2, array.shape[axis])) % array.shape[axis], axis=axis)
        example[keys[name]] = torch.from_numpy(np.ascontiguousarray(array))
        shapes[keys[name]] = {axis: dims[dim] for axis, dim in named[name].items()}
    try:
        edge_model = litert_torch.convert(wrapper, sample_kwargs=example, dynamic_shapes=shapes, **CONVERTER_FLAGS)
        edge_model.export(str(target))
    except StageError:
        raise
    except Exception as exc:  # torch.export's constraint violations, the lowering's refusals
        target.unlink(missing_ok=True)
        return {"tried": True, "kept": False, "error": first_line(exc)[:500]}
    from stages.kit.tflite_boundary import read

    ports = {port.key: port.shape for port in read(target).inputs}
    lost = [
        f"{item['name']}[{axis}]"
        for item in inputs
        for axis in named[item["name"]]
        if keys[item["name"]] in ports and ports[keys[item["name"]]][axis] != -1
    ]
    if lost:  # specialized during export: the static conversion (at the sample's sizes) is what to ship
        target.unlink(missing_ok=True)
        return {"tried": True, "kept": False, "error": f"the file fixed {lost} although they were declared dynamic"}
    return {"tried": True, "kept": True, "error": None}


def _fixed_dimensions(inputs: list[dict[str, Any]], samples: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Per input, the named dynamic dimensions and the size the file fixes them at."""
    fixed: dict[str, dict[str, int]] = {}
    for item in inputs:
        for axis, dim in sample_io.dynamic_axes(item["shape"]).items():
            fixed.setdefault(item["name"], {})[dim] = int(samples[item["name"]].shape[1 + axis])
    return fixed


def _signature(target: Path, inputs: list[dict[str, Any]], output_names: list[str]) -> dict[str, Any]:
    from stages.kit.tflite_boundary import read

    input_names = [item["name"] for item in inputs]
    boundary = read(target)
    ins = {port.key: port for port in boundary.inputs}
    outs = {port.key: port for port in boundary.outputs}
    if sorted(ins) != sorted(input_names) or sorted(outs) != sorted(output_names):
        # The contract promises the spec's and the reference's names; anything else is a bug here.
        raise StageError(
            StageCode.CONVERSION_FAILED,
            f"the converted signature has inputs {sorted(ins)} / outputs {sorted(outs)}, expected "
            f"{input_names} / {output_names}",
        )
    # 64-bit inputs/outputs become 32-bit (enable_x64=False): callers must feed int32.
    narrowed = {
        item["name"]: ins[item["name"]].dtype
        for item in inputs
        if item["dtype"] in ("int64", "float64") and ins[item["name"]].dtype != item["dtype"]
    }
    return {
        "signature_key": boundary.signature_key,
        # In the spec's and the reference's order; the file lists signature keys sorted.
        "inputs": {name: ins[name].to_json() for name in input_names},
        "outputs": output_names,
        "output_shapes": {name: outs[name].shape for name in output_names},
        "file_key_order": {"inputs": list(ins), "outputs": list(outs)},
        "input_map": {name: name for name in input_names},
        "output_map": {name: name for name in output_names},
        "input_transposes": {},
        "narrowed_dtypes": narrowed,
    }
