"""Stage ``torch.prepare`` (torch env): load, reference outputs, ONNX export, validation.

Inputs: ``model`` (the upload), optional ``samples`` (.npy/.npz). Outputs:
``onnx`` (model.onnx), ``samples`` (samples.npz), ``reference`` (reference.npz,
keyed by output name, ``[N, ...]``). The ONNX file is validated in onnxruntime on
the same samples against the PyTorch reference.

Outputs get stable names from PyTorch's flattened result: a single tensor is
``output``; a tuple/list gives ``output_0``, ``output_1``...; a dict or ModelOutput
gives its keys in order, nested containers joined with ``_``. The model is wrapped
so that every exporter sees exactly that flat tuple.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stages import samples as sample_io
from stages.contract import StageError, StageRequest, StageResult
from stages.torch_export import (
    Attempt,
    choose_opset,
    declare_output_shapes,
    export,
    exporter_order,
    onnx_io,
)
from stages.torch_model import (
    DEFAULT_ALLOWED,
    apply_state_dict,
    build_model,
    first_line,
    load_state_dict,
)

SUPPORTED_FORMATS = ("state_dict",)


def run(request: StageRequest) -> StageResult:
    # No hub or dataset downloads from inside a stage, whatever a constructor tries.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    spec, options = request.spec, request.options
    # "auto" is normally resolved by the control plane's sniffing; here it can only
    # mean the one format this stage reads, and loading stays weights-only either way.
    model_format = spec.get("model_format") or "auto"
    if model_format not in (*SUPPORTED_FORMATS, "auto"):
        raise StageError(
            "format_not_supported",
            f"model_format {model_format!r} is not supported by "
            f"torch.prepare yet; supported: {list(SUPPORTED_FORMATS)}",
        )
    opset = choose_opset(spec)
    exporters = exporter_order(spec)
    inputs = sample_io.input_specs(spec)
    import torch

    torch.set_num_threads(int(options.get("threads") or 1))
    seed = int(spec.get("seed") or 0)
    torch.manual_seed(seed)

    input_names = [item["name"] for item in inputs]
    uploaded = request.inputs.get("samples")
    samples = sample_io.build(spec, Path(uploaded) if uploaded else None)

    started = time.monotonic()
    state = load_state_dict(request.input_path("model"))
    architecture = spec.get("architecture") or {}
    model = build_model(architecture, options.get("allowed_architectures") or DEFAULT_ALLOWED)
    apply_state_dict(model, state)
    del state
    model.eval()
    load_seconds = time.monotonic() - started

    started = time.monotonic()
    output_names, reference = _reference(model, samples, input_names)
    reference_seconds = time.monotonic() - started

    out = request.output_dir
    sample_io.save(out / "samples.npz", samples)
    sample_io.save(out / "reference.npz", reference)

    wrapper = flat_module(model).eval()
    example = tuple(torch.from_numpy(samples[name][0]) for name in input_names)
    dynamic = {item["name"]: sample_io.dynamic_axes(item["shape"]) for item in inputs}
    threads = int(options.get("threads") or 1)
    tolerance = float((spec.get("tolerance") or {}).get("float32", 1e-4))

    started = time.monotonic()
    declared = _probe_output_dims(wrapper, samples, inputs, output_names)
    exporter_used, onnx_metrics, attempts = _export_best(
        exporters,
        wrapper,
        example,
        out,
        input_names,
        output_names,
        dynamic,
        opset,
        declared,
        lambda path: _validate_onnx(path, samples, reference, tolerance, threads),
    )
    export_seconds = time.monotonic() - started
    onnx_path = out / "model.onnx"
    onnx_inputs, output_shapes = onnx_io(onnx_path)

    return StageResult(
        outputs={"onnx": "model.onnx", "samples": "samples.npz", "reference": "reference.npz"},
        metrics={"onnx": onnx_metrics},
        info={
            "input_names": input_names,
            "onnx_input_names": onnx_inputs,
            "output_names": output_names,
            "output_shapes": output_shapes,
            "exporter": exporter_used,
            "opset": opset,
            "versions": _versions(),
            "reference_runtime": "pytorch",
            "parameters": int(sum(p.numel() for p in model.parameters())),
            "export_attempts": [a.to_json() for a in attempts],
            "output_shapes_probed": declared is not None,
            "samples": int(next(iter(samples.values())).shape[0]),
            "samples_source": "uploaded" if uploaded else "synthetic",
            "seed": seed,
            "threads": threads,
            "seconds": {
                "load": round(load_seconds, 3),
                "reference": round(reference_seconds, 3),
                "export_and_validate": round(export_seconds, 3),
            },
        },
    )


def _export_best(
    exporters: tuple[str, ...],
    wrapper: Any,
    example: tuple[Any, ...],
    out: Path,
    input_names: list[str],
    output_names: list[str],
    dynamic: dict[str, dict[int, str]],
    opset: int,
    declared: dict[str, list[int | str]] | None,
    validate: Callable[[Path], dict[str, Any]],
) -> tuple[str, dict[str, Any], list[Attempt]]:
    """Try the exporters in order; keep the first file onnxruntime agrees with.

    A file that exports but disagrees with PyTorch does not stop ``auto``: the next
    exporter may do better. If none passes, the first runnable file is kept with its
    failing metrics, so the report shows what went wrong.
    """
    attempts: list[Attempt] = []
    chosen: tuple[str, dict[str, Any]] | None = None
    for exporter in exporters:
        candidate = out / f"model.{exporter}.onnx"
        attempt = export(exporter, wrapper, example, candidate, input_names, output_names, dynamic, opset)
        attempts.append(attempt)
        if not attempt.ok:
            continue
        if declared:
            declare_output_shapes(candidate, declared)
        started = time.monotonic()
        try:
            metrics = validate(candidate)
        except Exception as exc:  # a file onnxruntime refuses is a failed attempt
            attempt.ok, attempt.error = False, f"onnxruntime could not run the file: {first_line(exc)}"
            candidate.unlink()
            continue
        metrics["seconds"] = round(time.monotonic() - started, 3)
        if chosen is None or metrics["verdict"] == "pass":
            candidate.replace(out / "model.onnx")
            chosen = (exporter, metrics)
        if metrics["verdict"] == "pass":
            break
        attempt.error = "exported, but onnxruntime disagrees with PyTorch: " + "; ".join(metrics["reasons"])
    for exporter in exporters:
        (out / f"model.{exporter}.onnx").unlink(missing_ok=True)
    if chosen is None:
        tried = "; ".join(f"{a.exporter}: {a.error}" for a in attempts)
        raise StageError(
            "export_failed",
            f"ONNX export failed at opset {opset}. {tried}. Try another exporter or opset in the "
            "spec, or change the model to avoid the unsupported operation",
        )
    return chosen[0], chosen[1], attempts


def _probe_output_dims(
    wrapper: Any, samples: dict[str, Any], inputs: list[dict[str, Any]], output_names: list[str]
) -> dict[str, list[int | str]] | None:
    """Which output axes follow the spec's dynamic dimensions, found by running the model.

    Exporters often lose static output sizes behind a dynamic batch (a Resize output
    becomes four anonymous dimensions), which then reach the SavedModel and TFLite
    signatures. One extra forward pass with every dynamic dimension at another size
    tells static axes from dynamic ones and names the latter after the input dimension
    they track. Returns None when there is nothing dynamic or the probe fails.
    """
    import numpy as np
    import torch

    base: dict[str, int] = {}
    for item in inputs:
        for axis, dim in sample_io.dynamic_axes(item["shape"]).items():
            base.setdefault(dim, int(samples[item["name"]].shape[1 + axis]))
    if not base:
        return None
    # Small sizes grow, larger ones shrink (a sequence may not grow past the model's
    # maximum); each dimension gets its own (base, probe) pair so axes can be told apart.
    probe: dict[str, int] = {}
    for dim, size in base.items():
        candidate = size + 1 if size <= 2 else size - 1
        while (size, candidate) in {(base[d], p) for d, p in probe.items()}:
            candidate += 1
        probe[dim] = candidate
    args = []
    for item in inputs:
        array = samples[item["name"]][0]
        for axis, dim in sample_io.dynamic_axes(item["shape"]).items():
            # Cycle through the real sample along the axis: token ids stay valid ids.
            array = np.take(array, np.arange(probe[dim]) % base[dim], axis=axis)
        args.append(torch.from_numpy(np.ascontiguousarray(array)))
    try:
        with torch.inference_mode():
            probed = [tuple(t.shape) for t in wrapper(*args)]
            first = [tuple(t.shape) for t in wrapper(*(torch.from_numpy(samples[i["name"]][0]) for i in inputs))]
    except Exception:  # the model does not really take other sizes; keep the exporter's shapes
        return None
    if len(probed) != len(output_names):
        return None
    by_sizes = {(base[dim], probe[dim]): dim for dim in base}
    declared: dict[str, list[int | str]] = {}
    for name, before, after in zip(output_names, first, probed, strict=True):
        if len(before) != len(after):
            return None
        declared[name] = [
            a if a == b else by_sizes.get((a, b), f"{name}_dim{axis}")
            for axis, (a, b) in enumerate(zip(before, after, strict=True))
        ]
    return declared


class _Flatten:
    """Flattens a model result into (stable name, tensor) pairs, in PyTorch's order."""

    @staticmethod
    def pairs(value: Any) -> list[tuple[str, Any]]:
        import torch

        found: list[tuple[str, Any]] = []

        def walk(item: Any, path: list[str]) -> None:
            if isinstance(item, torch.Tensor):
                found.append(("_".join(path) or "output", item))
            elif isinstance(item, dict):  # also ModelOutput (an OrderedDict)
                for key, inner in item.items():
                    walk(inner, [*path, re.sub(r"\W", "_", str(key))])
            elif isinstance(item, (tuple, list)):
                for index, inner in enumerate(item):
                    walk(inner, [*(path or ["output"]), str(index)])
            # Anything else (None, numbers, caches) is not a tensor output.

        walk(value, [])
        names: set[str] = set()
        unique: list[tuple[str, Any]] = []
        for name, tensor in found:
            candidate, n = name, 1
            while candidate in names:
                candidate, n = f"{name}_{n}", n + 1
            names.add(candidate)
            unique.append((candidate, tensor))
        return unique


def _flat_outputs_class() -> Any:
    import torch

    class _FlatOutputs(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, *args: Any) -> tuple[Any, ...]:
            return tuple(tensor for _, tensor in _Flatten.pairs(self.model(*args)))

    return _FlatOutputs


def flat_module(model: Any) -> Any:
    """The model wrapped to return the flat tuple of its tensor outputs."""
    return _flat_outputs_class()(model)


def _reference(model: Any, samples: dict[str, Any], input_names: list[str]) -> tuple[list[str], dict[str, Any]]:
    import numpy as np
    import torch

    count = next(iter(samples.values())).shape[0]
    per_output: dict[str, list[Any]] = {}
    names: list[str] | None = None
    with torch.inference_mode():
        for index in range(count):
            args = tuple(torch.from_numpy(samples[name][index]) for name in input_names)
            try:
                result = model(*args)
            except Exception as exc:  # forward is user-chosen code
                given = ", ".join(f"{n} {list(samples[n].shape[1:])} {samples[n].dtype}" for n in input_names)
                raise StageError(
                    "input_mismatch",
                    f"the model's forward failed for the spec's inputs "
                    f"({given}): {first_line(exc)}. Check spec.inputs (order, shape, "
                    "dtype) against what the model expects",
                ) from None
            pairs = _Flatten.pairs(result)
            if not pairs:
                raise StageError("input_mismatch", "the model returned no tensors")
            if names is None:
                names = [name for name, _ in pairs]
            for name, tensor in pairs:
                per_output.setdefault(name, []).append(tensor.detach().cpu().numpy())
    assert names is not None
    return names, {name: np.stack(per_output[name]) for name in names}


def _validate_onnx(
    path: Path, samples: dict[str, Any], reference: dict[str, Any], tolerance: float, threads: int
) -> dict[str, Any]:
    import numpy as np
    import onnxruntime as ort

    from stages.metrics import compare

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed_names = [i.name for i in session.get_inputs()]
    output_names = [o.name for o in session.get_outputs()]
    count = next(iter(samples.values())).shape[0]
    collected: dict[str, list[Any]] = {name: [] for name in output_names}
    for index in range(count):
        feed = {name: samples[name][index] for name in feed_names}
        for name, value in zip(output_names, session.run(output_names, feed), strict=True):
            collected[name].append(value)
    actual = {name: np.stack(values) for name, values in collected.items()}
    return compare(reference, actual, tolerance)


def _versions() -> dict[str, str | None]:
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for package in ("torch", "torchvision", "onnx", "onnxruntime", "onnxscript", "transformers", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions
