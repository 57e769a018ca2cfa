"""Stage ``export.prepare`` (torch env): load, reference outputs, ONNX export, validation.

Inputs: ``model`` (the upload), optional ``samples`` (.npy/.npz). Outputs:
``onnx`` (model.onnx), ``samples`` (samples.npz), ``reference`` (reference.npz,
keyed by output name, ``[N, ...]``). The ONNX file is validated in onnxruntime on
the same samples against the reference.

Per ``spec.model_format``:

- ``state_dict``: an allow-listed architecture (torchvision, transformers from a
  config) with the uploaded weights; legacy exporter, then dynamo (``exporter``).
- ``torchscript``: ``torch.jit.load``; the legacy (TorchScript-based) exporter on the
  loaded graph, else on the graph converted to an ExportedProgram (``info.torchscript_route``,
  ``stages.export.script_program``).
- ``pickled_module`` (``torch.save(model)``; the control plane accepts it only when the
  operator enabled it): unpickled with code execution allowed, in this sandboxed process
  (``stages.export.formats.unpickle_module``), then like a state dict's module; ``info.unpickled``
  says so.
- ``exported_program``: ``torch.export.load``; the dynamo exporter on the program
  (opset 18), down-converted when a consumer needs less (``stages.export.program``).
- ``onnx``: no PyTorch at all; onnxruntime is the reference (``stages.export.onnx_upload``).

Before torch opens the upload, ``check_upload`` refuses an empty file
(``empty_model``), a damaged zip archive (``corrupt_archive``: truncated, or a member
that fails its CRC) and a zip bomb (``archive_too_large``); an input too large to
sample is ``input_too_large``. Outputs get stable names from the flattened result
(``stages.export.outputs``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.export.formats import Loaded, load_exported_program, load_pickled_module, load_torchscript
from stages.export.model import (
    DEFAULT_ALLOWED,
    apply_state_dict,
    build_model,
    check_upload,
    load_state_dict,
)
from stages.export.onnx_export import (
    DEFAULT_OPSET,
    Exported,
    ExportFailed,
    choose_opset,
    export_best,
    exporter_order,
    may_keep_higher_opset,
    onnx_io,
)
from stages.export.onnx_file import input_dims, onnx_tf_fields
from stages.export.onnx_file import validate as validate_onnx
from stages.export.outputs import flat_module, probe_output_dims, probe_references, reference, reference_shapes
from stages.export.script_program import ScriptExport, export_torchscript_upload
from stages.export.tokens import embedding_tables, integer_inputs, with_ranges
from stages.kit import samples as sample_io
from stages.kit.codes import StageCode
from stages.kit.contract import StageError, StageRequest, StageResult, refuse_huge_inputs
from stages.kit.options import OperatorOptions, read_options
from stages.kit.probes import to_arrays as probe_arrays
from stages.kit.spec import PlanSpec
from stages.kit.versions import versions

__all__ = ["SUPPORTED_FORMATS", "Referenced", "flat_module", "load_reference", "run"]

SUPPORTED_FORMATS = ("state_dict", "torchscript", "exported_program", "pickled_module", "onnx")


def run(request: StageRequest) -> StageResult:
    # No hub or dataset downloads from inside a stage, whatever a constructor tries.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    # "auto" is normally resolved by the control plane's sniffing; here it can only
    # mean a state dict, and loading stays weights-only either way: only an explicit
    # "pickled_module" unpickles code.
    model_format = request.spec.model_format
    if model_format == "onnx":
        from stages.export.onnx_upload import prepare_onnx

        return prepare_onnx(request)
    if model_format not in (*SUPPORTED_FORMATS, "auto"):
        raise StageError(
            StageCode.FORMAT_NOT_SUPPORTED,
            f"model_format {model_format!r} is not supported by export.prepare; supported: {list(SUPPORTED_FORMATS)}",
        )
    return _prepare_torch(request, "state_dict" if model_format == "auto" else model_format)


@dataclass
class Referenced:
    """A loaded PyTorch model and its reference outputs on the validation samples."""

    loaded: Loaded
    inputs: list[dict[str, Any]]  # the signature, integer inputs with their sampled ranges
    ranges: dict[str, dict[str, Any]]  # input name -> the range its token ids were drawn from
    samples: dict[str, Any]  # input name -> numpy array [N, *shape]
    output_names: list[str]  # the stable names of the flattened outputs, in PyTorch's order
    reference: dict[str, Any]  # output name -> numpy array [N, *shape]
    seconds: dict[str, float]  # "load", "reference": wall-clock seconds


def load_reference(request: StageRequest, model_format: str) -> Referenced:
    """Check and load the upload (any PyTorch format), build the samples, run the reference.

    The first half of ``export.prepare``, before any export. Raises ``StageError`` with
    the upload's code (``empty_model``, ``invalid_model``, ``state_dict_mismatch``...).
    """
    spec, options = request.spec, read_options(OperatorOptions, request.options)
    check_upload(request.input_path("model"))
    import torch

    torch.set_num_threads(int(options.threads or 1))
    torch.manual_seed(spec.seed)
    uploaded = request.optional_input("samples")

    started = time.monotonic()
    loaded = _load(request, model_format)
    load_seconds = time.monotonic() - started
    refuse_huge_inputs(loaded.inputs)

    inputs = loaded.inputs
    ranges: dict[str, dict[str, Any]] = {}
    if not uploaded:
        tables = embedding_tables(loaded.model, inputs) if integer_inputs(inputs) else {}
        inputs, ranges = with_ranges(inputs, tables, loaded.vocab_size)
    samples = sample_io.build(inputs, spec, uploaded)

    started = time.monotonic()
    output_names, ref = reference(loaded.model, samples, [item["name"] for item in inputs])
    seconds = {"load": load_seconds, "reference": time.monotonic() - started}
    return Referenced(loaded, inputs, ranges, samples, output_names, ref, seconds)


def _prepare_torch(request: StageRequest, model_format: str) -> StageResult:
    spec = request.spec
    opset = choose_opset(spec)
    exporters = _exporters(spec, model_format)
    threads = int(read_options(OperatorOptions, request.options).threads or 1)
    uploaded = request.optional_input("samples")
    done = load_reference(request, model_format)
    import torch

    loaded, inputs, ranges, samples = done.loaded, done.inputs, done.ranges, done.samples
    output_names, ref = done.output_names, done.reference
    input_names = [item["name"] for item in inputs]

    out = request.output_dir
    sample_io.save(out / "samples.npz", samples)
    # Every named dimension at a second size too (stages.kit.probes): validate.tflite runs them.
    probe_sets, probe_info = probe_references(loaded.model, samples, inputs, output_names)
    sample_io.save(out / "reference.npz", {**ref, **probe_arrays(probe_sets)})

    wrapper = flat_module(loaded.model).eval()
    example = tuple(torch.from_numpy(samples[name][0]) for name in input_names)
    tolerance = spec.tolerance["float32"]

    def validate(path: Path) -> dict[str, Any]:
        return validate_onnx(path, samples, ref, tolerance, threads)

    route: dict[str, Any] | None = None
    started = time.monotonic()
    declared = probe_output_dims(wrapper, samples, inputs, output_names)
    if loaded.program is not None:
        from stages.export.program import export_program_best

        exported = export_program_best(
            loaded, wrapper, example, out, output_names, opset, exporters, declared, spec, validate
        )
    elif model_format == "torchscript":
        job = ScriptExport(spec, exporters, example, inputs, output_names, out, opset, declared, validate)
        exported, route = export_torchscript_upload(
            job,
            loaded.model,
            lambda module: _export_with_fallback(
                spec, exporters, module, example, out, inputs, output_names, opset, declared, validate
            ),
        )
    else:
        exported = _export_with_fallback(
            spec, exporters, wrapper, example, out, inputs, output_names, opset, declared, validate
        )
    export_seconds = time.monotonic() - started
    onnx_path = out / "model.onnx"
    onnx_inputs, output_shapes = onnx_io(onnx_path)

    return StageResult(
        outputs={"onnx": "model.onnx", "samples": "samples.npz", "reference": "reference.npz"},
        metrics={"onnx": exported.metrics},
        info={
            "model_format": model_format,
            "input_names": input_names,
            "inputs": sample_io.public_inputs(inputs),
            "inputs_source": loaded.inputs_source,
            "onnx_input_names": onnx_inputs,
            "onnx_input_shapes": input_dims(onnx_path),
            "output_names": output_names,
            "output_shapes": reference_shapes(ref, output_names, declared or output_shapes, inputs),
            "exporter": exported.exporter,
            "opset": exported.opset,
            "opset_conversion": exported.conversion,
            **onnx_tf_fields(exported.opset, exported.onnx_tf_reason),
            "versions": versions("torch", "torchvision", "onnx", "onnxruntime", "onnxscript", "transformers", "numpy"),
            "reference_runtime": "pytorch",
            "parameters": loaded.parameters,
            **({"unpickled": loaded.unpickled} if loaded.unpickled else {}),
            **({"torchscript_route": route} if route else {}),
            "export_attempts": [a.to_json() for a in exported.attempts],
            "output_shapes_probed": declared is not None,
            "probes": probe_info,
            **sample_io.run_info(
                samples,
                uploaded=bool(uploaded),
                ranges=ranges,
                seed=spec.seed,
                threads=threads,
                seconds={**done.seconds, "export_and_validate": export_seconds},
            ),
        },
    )


def _exporters(spec: PlanSpec, model_format: str) -> tuple[str, ...]:
    exporters = exporter_order(spec)
    if model_format == "torchscript":
        if "torchscript" not in exporters:
            raise StageError(
                StageCode.EXPORTER_NOT_SUPPORTED,
                "a TorchScript upload exports with the TorchScript-based exporter; the dynamo exporter "
                "cannot read TorchScript. Use exporter 'auto' or 'torchscript', or upload an "
                "ExportedProgram (torch.export.save) for the dynamo exporter",
            )
        return ("torchscript",)
    return exporters


def _load(request: StageRequest, model_format: str) -> Loaded:
    spec, options = request.spec, read_options(OperatorOptions, request.options)
    allowed = options.allowed_architectures or DEFAULT_ALLOWED
    path = request.input_path("model")
    if model_format == "torchscript":
        return load_torchscript(path, spec)
    if model_format == "exported_program":
        return load_exported_program(path, spec, allowed)
    if model_format == "pickled_module":
        return load_pickled_module(path, spec, options.enable_pickled_module)
    inputs = sample_io.input_specs(spec)
    state = load_state_dict(path)
    model = build_model(spec.architecture, allowed)
    apply_state_dict(model, state)
    del state
    model.eval()
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    return Loaded(
        model,
        inputs,
        "spec",
        int(sum(p.numel() for p in model.parameters())),
        vocab_size=vocab if isinstance(vocab, int) else None,
    )


def _export_with_fallback(
    spec: PlanSpec,
    exporters: tuple[str, ...],
    wrapper: Any,
    example: tuple[Any, ...],
    out: Path,
    inputs: list[dict[str, Any]],
    output_names: list[str],
    opset: int,
    declared: dict[str, list[int | str]] | None,
    validate: Callable[[Path], dict[str, Any]],
) -> Exported:
    """The exporters at the consumers' opset; failing that, at the dynamo exporter's own
    opset when a consumer reads it (``may_keep_higher_opset``), flagged for onnx-tf."""
    input_names = [item["name"] for item in inputs]
    dynamic = {item["name"]: sample_io.dynamic_axes(item["shape"]) for item in inputs}
    try:
        exporter, metrics, attempts = export_best(
            exporters, wrapper, example, out, input_names, output_names, dynamic, opset, declared, validate
        )
        return Exported(exporter, metrics, attempts, opset)
    except ExportFailed as error:
        if opset >= DEFAULT_OPSET or not may_keep_higher_opset(spec):
            raise
        failed = error.attempts
    exporter, metrics, attempts = export_best(
        exporters, wrapper, example, out, input_names, output_names, dynamic, DEFAULT_OPSET, declared, validate
    )
    reason = f"no exporter reached opset {opset} (" + "; ".join(f"{a.exporter}: {a.error}" for a in failed) + ")"
    return Exported(exporter, metrics, [*failed, *attempts], DEFAULT_OPSET, onnx_tf_reason=reason)
