"""A PyTorch model's outputs as a flat, named tuple, and its reference outputs.

Outputs get stable names from PyTorch's flattened result: a single tensor is
``output``; a tuple/list gives ``output_0``, ``output_1``...; a dict or ModelOutput
gives its keys in order, nested containers joined with ``_``. The model is wrapped
(``flat_module``) so that every exporter sees exactly that flat tuple. The same
flattening serves every PyTorch format (an ``nn.Module``, a TorchScript module, an
ExportedProgram's module), so a format never changes the names of the same outputs.
"""

from __future__ import annotations

import re
from typing import Any

from stages.kit import samples as sample_io
from stages.kit.codes import StageCode
from stages.kit.contract import StageError
from stages.kit.failures import first_line


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


def flatten_pairs(value: Any) -> list[tuple[str, Any]]:
    return _Flatten.pairs(value)


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


def reference(model: Any, samples: dict[str, Any], input_names: list[str]) -> tuple[list[str], dict[str, Any]]:
    """The model's outputs on every sample: (stable output names, name -> ``[N, ...]``)."""
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
                    StageCode.INPUT_MISMATCH,
                    f"the model's forward failed for the spec's inputs "
                    f"({given}): {first_line(exc)}. Check spec.inputs (order, shape, "
                    "dtype) against what the model expects",
                ) from None
            pairs = _Flatten.pairs(result)
            if not pairs:
                raise StageError(StageCode.INPUT_MISMATCH, "the model returned no tensors")
            if names is None:
                names = [name for name, _ in pairs]
            for name, tensor in pairs:
                per_output.setdefault(name, []).append(tensor.detach().cpu().numpy())
    assert names is not None
    return names, {name: np.stack(per_output[name]) for name in names}


def probe_output_dims(
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


def reference_shapes(
    reference: dict[str, Any],
    output_names: list[str],
    named: dict[str, list[Any]] | None,
    inputs: list[dict[str, Any]],
) -> dict[str, list[int | str]]:
    """``info.output_shapes`` as the report shows them: each output's shape in the reference
    (``reference[name]`` is ``[N, *shape]``), an axis named only where ``named`` (the probe's
    or the graph's shapes) gives it one of the inputs' declared dynamic dimensions.

    An exporter's own symbolic names (``s0``, ``unk__3``, ``output_0_dim2``) never show:
    on some graphs (asymmetric padding) they claim two different dimensions are equal.
    """
    import numpy as np

    declared = {name for item in inputs for name in sample_io.dynamic_axes(item["shape"]).values()}
    shapes: dict[str, list[int | str]] = {}
    for name in output_names:
        sizes = [int(d) for d in np.shape(reference[name])[1:]]
        given = (named or {}).get(name)
        if isinstance(given, list) and len(given) == len(sizes):
            shapes[name] = [g if isinstance(g, str) and g in declared else s for g, s in zip(given, sizes, strict=True)]
        else:
            shapes[name] = list(sizes)
    return shapes


def probe_references(
    model: Any, samples: dict[str, Any], inputs: list[dict[str, Any]], output_names: list[str]
) -> tuple[list[Any], dict[str, Any]]:
    """The PyTorch reference at a second size of every named dimension (``stages.kit.probes.build``):
    the probe sets and ``info.probes`` (the sizes, or why there is none)."""
    from stages.kit import probes

    input_names = [item["name"] for item in inputs]

    def run(feed: dict[str, Any]) -> dict[str, Any]:
        names, outputs = reference(model, feed, input_names)
        return {name: outputs[name] for name in names}

    return probes.build(samples, inputs, output_names, run, "the PyTorch model")
