"""PyTorch -> ONNX export with the legacy (TorchScript) and dynamo exporters.

Behaviour verified with torch 2.14.1 (see the docstrings of the constants):

- ``torch.onnx.export(..., dynamo=False)`` still works (with a deprecation warning),
  honours any ``opset_version`` from 7 up, and turns ``dynamic_axes`` of the inputs
  into named dimensions that it propagates to the outputs.
- ``dynamo=True`` translates at opset 18 or newer. Asked for less, it tries a
  version conversion and, when that fails (it does for resnet18 at 12-17), quietly
  keeps opset 18. The produced file's opset is therefore checked here, and a file
  that does not have the requested opset is a failed attempt, not a success.
- onnx-tf 1.10 reads opsets up to 15, and attention (scaled_dot_product_attention)
  exports at 14 or newer, hence 15 as the default for that toolchain.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.contract import StageError
from stages.torch_model import first_line

# The highest opset the downstream toolchain reads; None means no limit.
OPSET_LIMITS: dict[str, int] = {"onnx-tf": 15}
DEFAULT_OPSETS: dict[str, int] = {"onnx-tf": 15}
# 18 is the lowest opset the dynamo exporter produces natively; the legacy exporter,
# onnxruntime and newer converters all read it.
DEFAULT_OPSET = 18
EXPORTER_ORDER: dict[str, tuple[str, ...]] = {
    "auto": ("torchscript", "dynamo"),
    "torchscript": ("torchscript",),
    "dynamo": ("dynamo",),
}


@dataclass
class Attempt:
    exporter: str
    ok: bool
    error: str | None = None
    opset: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"exporter": self.exporter, "ok": self.ok, "error": self.error, "opset": self.opset}


def choose_opset(spec: dict[str, Any]) -> int:
    """The opset every converter that reads the file can take (``onnx_consumers``, set by
    the worker from the job's plan; else the spec's toolchain)."""
    consumers = [str(c) for c in spec.get("onnx_consumers") or [spec.get("toolchain") or "auto"]]
    limits = [OPSET_LIMITS[c] for c in consumers if c in OPSET_LIMITS]
    toolchain = min(consumers, key=lambda c: OPSET_LIMITS.get(c, 10**6))
    requested = spec.get("opset")
    limit = min(limits) if limits else None
    if requested is None:
        return min([DEFAULT_OPSETS.get(c, DEFAULT_OPSET) for c in consumers])
    if not isinstance(requested, int) or isinstance(requested, bool) or requested < 7:
        raise StageError("invalid_spec", f"opset must be an integer >= 7 (or null), got {requested!r}")
    if limit is not None and requested > limit:
        raise StageError(
            "opset_not_supported",
            f"toolchain {toolchain!r} reads ONNX opsets up to "
            f"{limit}; asked for {requested}. Use opset {limit} or leave it null",
        )
    return requested


def exporter_order(spec: dict[str, Any]) -> tuple[str, ...]:
    exporter = str(spec.get("exporter") or "auto")
    try:
        return EXPORTER_ORDER[exporter]
    except KeyError:
        raise StageError(
            "invalid_spec", f"exporter must be one of {sorted(EXPORTER_ORDER)}, got {exporter!r}"
        ) from None


def export(
    exporter: str,
    module: Any,
    example: tuple[Any, ...],
    path: Path,
    input_names: list[str],
    output_names: list[str],
    dynamic: dict[str, dict[int, str]],
    opset: int,
) -> Attempt:
    """One export attempt; a failure is recorded, not raised, so the next can run."""
    if path.exists():
        path.unlink()
    try:
        with warnings.catch_warnings():
            # The legacy exporter warns on every call that it is deprecated.
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
            warnings.filterwarnings("ignore", message=".*feature will be removed.*")
            if exporter == "torchscript":
                _export_torchscript(module, example, path, input_names, output_names, dynamic, opset)
            else:
                _export_dynamo(module, example, path, input_names, output_names, dynamic, opset)
    except Exception as exc:  # exporter errors are many and untyped
        return Attempt(exporter, False, first_line(exc))
    return _check_file(exporter, path, opset, input_names, output_names)


def _export_torchscript(
    module: Any,
    example: tuple[Any, ...],
    path: Path,
    input_names: list[str],
    output_names: list[str],
    dynamic: dict[str, dict[int, str]],
    opset: int,
) -> None:
    import torch

    torch.onnx.export(
        module,
        example,
        str(path),
        dynamo=False,
        opset_version=opset,
        input_names=input_names,
        output_names=output_names,
        dynamic_axes={name: axes for name, axes in dynamic.items() if axes} or None,
        do_constant_folding=True,
    )


def _export_dynamo(
    module: Any,
    example: tuple[Any, ...],
    path: Path,
    input_names: list[str],
    output_names: list[str],
    dynamic: dict[str, dict[int, str]],
    opset: int,
) -> None:
    import torch

    dims: dict[str, Any] = {}

    def dim(name: str) -> Any:
        # One Dim object per name, so inputs sharing "batch" share the constraint.
        if name not in dims:
            dims[name] = torch.export.Dim(re.sub(r"\W", "_", name) or "dim")
        return dims[name]

    shapes = None
    if any(dynamic.values()):
        # The stages' wrapper takes *args: one tuple entry for the varargs.
        shapes = (tuple({axis: dim(n) for axis, n in dynamic.get(name, {}).items()} or None for name in input_names),)
    torch.onnx.export(
        module,
        example,
        str(path),
        dynamo=True,
        opset_version=opset,
        input_names=input_names,
        output_names=output_names,
        dynamic_shapes=shapes,
        external_data=False,
        report=False,
        verbose=False,
    )


def _check_file(exporter: str, path: Path, opset: int, input_names: list[str], output_names: list[str]) -> Attempt:
    import onnx

    if not path.is_file():
        return Attempt(exporter, False, "the exporter wrote no file")
    try:
        onnx.checker.check_model(str(path), full_check=False)
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        return Attempt(exporter, False, f"onnx.checker rejected the file: {first_line(exc)}")
    produced = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if produced != opset:
        return Attempt(
            exporter,
            False,
            f"produced opset {produced}, not the requested {opset}: its version conversion failed",
            produced,
        )
    got_outputs = [o.name for o in model.graph.output]
    if got_outputs != output_names:
        return Attempt(
            exporter,
            False,
            f"the file's outputs {got_outputs} differ from the model's flattened outputs {output_names}",
            produced,
        )
    return Attempt(exporter, True, None, produced)


def declare_output_shapes(path: Path, declared: dict[str, list[int | str]]) -> None:
    """Write the measured output shapes (static sizes, named dynamic ones) into the file."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for output in model.graph.output:
        dims = declared.get(output.name)
        shape = output.type.tensor_type.shape
        if dims is None or len(shape.dim) not in (0, len(dims)):
            continue
        del shape.dim[:]
        for value in dims:
            dim = shape.dim.add()
            if isinstance(value, int):
                dim.dim_value = value
            else:
                dim.dim_param = value
    # Weights stay where the exporter put them (inline, or external beside the file).
    onnx.save(model, str(path))


def onnx_io(path: Path) -> tuple[list[str], dict[str, list[int | str | None]]]:
    """Graph input names (unused inputs may have been pruned) and output shapes."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in initializers]
    shapes: dict[str, list[int | str | None]] = {}
    for output in model.graph.output:
        dims = output.type.tensor_type.shape.dim
        shapes[output.name] = [d.dim_value if d.dim_value > 0 else (d.dim_param or None) for d in dims]
    return inputs, shapes
