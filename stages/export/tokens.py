"""Value ranges for synthetic integer inputs (token ids), found from the model itself.

Random ids past the vocabulary would fail (an embedding lookup out of range) or test
nothing real, so an integer input without a ``range`` gets, in this order:

1. ``embedding``: ``[0, rows)`` of the embedding table the input feeds. Found by one
   forward pass on all-zero inputs (0 is a valid id everywhere) under a dispatch mode
   that records which ``aten.embedding`` lookups take the input's storage as indices
   (the input itself or a view of it). It works the same for an ``nn.Module``, a
   TorchScript module and an ExportedProgram's module, and finds ``token_type_ids``'
   two rows as well as ``input_ids``' vocabulary.
2. ``config``: a transformers config's ``vocab_size``, for an ``*input_ids`` input.
3. ``mask``: ``[0, 2)`` for an input named like an attention mask.
4. ``default``: the samples' default range.

ONNX uploads use the same order with the graph (``stages.export.onnx_graph``).
"""

from __future__ import annotations

from typing import Any

from stages.kit import samples as sample_io

MASK_RANGE = (0, 2)


def integer_inputs(inputs: list[dict[str, Any]]) -> list[str]:
    """The integer inputs whose synthetic values need a range (the spec gave none)."""
    return [item["name"] for item in inputs if _is_integer(item) and not item.get("range")]


def _is_integer(item: dict[str, Any]) -> bool:
    import numpy as np

    return bool(np.dtype(sample_io.DTYPES[item["dtype"]]).kind in "iu")


def with_ranges(
    inputs: list[dict[str, Any]],
    tables: dict[str, int],
    vocab_size: int | None,
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The inputs with a ``range`` on each integer one, and where each range came from."""
    ranges: dict[str, dict[str, Any]] = {}
    result = []
    for item in inputs:
        item = dict(item)
        name = item["name"]
        if _is_integer(item):
            if item.get("range"):
                low_high, source = tuple(item["range"]), "spec"
            elif name in tables:
                low_high, source = (0, tables[name]), "embedding"
            elif vocab_size and name.endswith("input_ids"):
                low_high, source = (0, vocab_size), "config"
            elif "mask" in name.lower():
                low_high, source = MASK_RANGE, "mask"
            else:
                low_high, source = sample_io.DEFAULT_INT_RANGE, "default"
            item["range"] = list(low_high)
            ranges[name] = {"range": list(low_high), "source": source}
        result.append(item)
    return result, ranges


def embedding_tables(model: Any, inputs: list[dict[str, Any]]) -> dict[str, int]:
    """Input name -> rows of the smallest embedding table it indexes (inputs found only)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    wanted = integer_inputs(inputs)
    if not wanted:
        return {}
    args = []
    storages: dict[int, str] = {}
    for item in inputs:
        dtype = getattr(torch, item["dtype"])
        tensor = torch.zeros(sample_io.sample_shape(item), dtype=dtype)
        if item["name"] in wanted:
            storages[tensor.untyped_storage().data_ptr()] = item["name"]
        args.append(tensor)
    lookups = (torch.ops.aten.embedding.default, torch.ops.aten.index_select.default)
    found: dict[str, int] = {}

    class Lookups(TorchDispatchMode):
        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            if func in lookups:
                table, index = (args[0], args[1]) if func is lookups[0] else (args[0], args[2])
                storage = _storage(index)
                name = storages.get(storage) if storage is not None else None
                if name is not None and table.dim() >= 1:
                    rows = int(table.shape[0])
                    found[name] = min(rows, found.get(name, rows))
            return func(*args, **(kwargs or {}))

    try:
        with torch.inference_mode(), Lookups():
            model(*args)
    except Exception:  # a model that refuses zeros: ranges fall back to the config or defaults
        return found
    return found


def _storage(tensor: Any) -> int | None:
    try:
        return int(tensor.untyped_storage().data_ptr())
    except Exception:  # not a dense tensor
        return None
