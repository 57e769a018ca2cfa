"""What an uploaded ONNX graph says about itself: data location, inputs, token tables, names.

Pure protobuf inspection (``onnx`` only, no runtime, no PyTorch).

- External data is refused outright: a tensor whose bytes live in another file would
  make the runtimes open a path the uploader chose (absolute, ``..``, a symlink), and
  the upload is a single file anyway.
- Inputs come from the graph when the spec has none: a ``dim_param`` stays a named
  dynamic dimension; an unknown or zero size becomes a named dynamic dimension too,
  sampled at 1.
- Token tables: the Gather whose indices are the input (through casts and reshapes)
  and whose data is a constant gives the vocabulary size.
- Output names that are not plain identifiers get one (``logits:0`` ->
  ``logits_0``) through an Identity node, so the graph itself is not rewritten.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from stages.kit.codes import StageCode
from stages.kit.contract import StageError

# onnx TensorProto element types the samples can hold
ELEMENT_TYPES = {
    1: "float32",
    2: "uint8",
    3: "int8",
    5: "int16",
    6: "int32",
    7: "int64",
    9: "bool",
    10: "float16",
    11: "float64",
}
# Ops that pass token ids through unchanged on their first input (casts and reshapes).
PASS_THROUGH = {"Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity", "Expand", "Transpose"}
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
RESAVE_HINT = (
    "re-save it with every tensor inside the file, e.g. "
    "onnx.save(onnx.load('model.onnx'), 'single.onnx', save_as_external_data=False) "
    "(a model over 2 GB cannot be one ONNX file)"
)


def refuse_external_data(model: Any) -> None:
    import onnx

    for tensor in _tensors(model):
        external = tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data) > 0
        if not external:
            continue
        location = next((entry.value for entry in tensor.external_data if entry.key == "location"), "")
        where = f"in the external file {location!r}" if location else "outside the file"
        if location.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", location):
            where += " (an absolute path)"
        elif ".." in re.split(r"[\\/]", location):
            where += " (a path outside the model's folder)"
        raise StageError(
            StageCode.ONNX_EXTERNAL_DATA,
            f"the ONNX file keeps the data of tensor {tensor.name!r} {where}; only self-contained "
            f"files are accepted, and external data paths are never followed: {RESAVE_HINT}",
        )


def _tensors(model: Any) -> Iterator[Any]:
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _node_tensors(node)


def _graph_tensors(graph: Any) -> Iterator[Any]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: Any) -> Iterator[Any]:
    for attribute in node.attribute:
        if attribute.HasField("t"):
            yield attribute.t
        yield from attribute.tensors
        sparse = [attribute.sparse_tensor] if attribute.HasField("sparse_tensor") else []
        for item in [*sparse, *attribute.sparse_tensors]:
            yield item.values
            yield item.indices
        graphs = [attribute.g] if attribute.HasField("g") else []
        for graph in [*graphs, *attribute.graphs]:
            yield from _graph_tensors(graph)


def graph_inputs(model: Any) -> list[dict[str, Any]]:
    """The graph's own inputs (initializers excluded) as spec inputs."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        if not value.type.HasField("tensor_type"):
            raise StageError(
                StageCode.INPUT_TYPE_NOT_SUPPORTED,
                f"graph input {value.name!r} is not a tensor (a sequence, map or optional): "
                "ModelPort feeds tensors only",
            )
        tensor = value.type.tensor_type
        dtype = ELEMENT_TYPES.get(tensor.elem_type)
        if dtype is None:
            raise StageError(
                StageCode.INPUT_TYPE_NOT_SUPPORTED,
                f"graph input {value.name!r} has element type {tensor.elem_type} "
                f"({_type_name(tensor.elem_type)}); samples can be {sorted(set(ELEMENT_TYPES.values()))}",
            )
        shape: list[int | str | None] | None = None
        if tensor.HasField("shape"):
            shape = [
                d.dim_value if d.dim_value > 0 else (d.dim_param or f"{value.name}_dim{axis}")
                for axis, d in enumerate(tensor.shape.dim)
            ]
        inputs.append({"name": value.name, "shape": shape, "dtype": dtype})
    return inputs


def _type_name(elem_type: int) -> str:
    import onnx

    try:
        return str(onnx.TensorProto.DataType.Name(elem_type))
    except ValueError:
        return "unknown"


def describe(inputs: list[dict[str, Any]]) -> str:
    parts = []
    for item in inputs:
        shape = "unknown rank" if item["shape"] is None else "[" + ", ".join(str(d) for d in item["shape"]) + "]"
        parts.append(f"{item['name']} {shape} {item['dtype']}")
    return "; ".join(parts)


def check_spec_inputs(given: list[dict[str, Any]], graph: list[dict[str, Any]], optional: set[str]) -> None:
    """The spec's inputs must be the graph's (by name, dtype, rank and static sizes)."""
    by_name = {item["name"]: item for item in graph}
    names = [item["name"] for item in given]
    unknown = [n for n in names if n not in by_name and n not in optional]
    missing = [item["name"] for item in graph if item["name"] not in names]
    problems = []
    if unknown or missing:
        problems.append(f"unknown {unknown}, missing {missing}")
    for item in given:
        want = by_name.get(item["name"])
        if want is None:
            continue
        dtype = item["dtype"]
        if dtype != want["dtype"]:
            problems.append(f"{item['name']!r} is {dtype} in the spec, {want['dtype']} in the graph")
        if want["shape"] is not None and not _shape_fits(item["shape"], want["shape"]):
            problems.append(f"{item['name']!r} has shape {item['shape']} in the spec, {want['shape']} in the graph")
    if problems:
        raise StageError(
            StageCode.INPUT_MISMATCH,
            "spec.inputs do not match the ONNX graph's inputs (" + "; ".join(problems) + "). "
            f"The graph's inputs: {describe(graph)}. Leave spec.inputs out to use them as they are",
        )


def fixed_named_dims(given: list[dict[str, Any]], graph: list[dict[str, Any]]) -> list[str]:
    """Where the spec names a dimension the graph fixes: ``"batch (x axis 0) is 1"`` each.

    ``check_spec_inputs`` accepts a name against a fixed size (the samples take the
    graph's size), but such a file runs at that size only, so it cannot be probed."""
    by_name = {item["name"]: item for item in graph}
    fixed = []
    for item in given:
        want = (by_name.get(item["name"]) or {}).get("shape")
        if want is None or len(want) != len(item["shape"]):
            continue
        for axis, (dim, size) in enumerate(zip(item["shape"], want, strict=True)):
            if not isinstance(dim, int) and isinstance(size, int):
                fixed.append(f"{dim} ({item['name']} axis {axis}) is {size}")
    return fixed


def _shape_fits(given: list[Any], graph: list[Any]) -> bool:
    if len(given) != len(graph):
        return False
    return all(not isinstance(g, int) or not isinstance(w, int) or g == w for g, w in zip(given, graph, strict=True))


def gather_tables(model: Any, names: list[str]) -> dict[str, int]:
    """Input name -> rows of the constant table a Gather looks its values up in."""
    from onnx import numpy_helper

    graph = model.graph
    rows: dict[str, int] = {init.name: int(init.dims[0]) for init in graph.initializer if len(init.dims) >= 1}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            for attribute in node.attribute:
                if attribute.name == "value" and len(attribute.t.dims) >= 1:
                    rows[node.output[0]] = int(numpy_helper.to_array(attribute.t).shape[0])
    consumers: dict[str, list[tuple[Any, int]]] = {}
    for node in graph.node:
        for index, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, index))
    found: dict[str, int] = {}
    for name in names:
        seen, frontier = {name}, [name]
        while frontier:
            value = frontier.pop()
            for node, index in consumers.get(value, []):
                if node.op_type == "Gather" and index == 1 and node.input[0] in rows and _axis(node) == 0:
                    table = rows[node.input[0]]
                    found[name] = min(table, found.get(name, table))
                elif node.op_type in PASS_THROUGH and index == 0:
                    for output in node.output:
                        if output not in seen:
                            seen.add(output)
                            frontier.append(output)
    return found


def _axis(node: Any) -> int:
    return next((int(a.i) for a in node.attribute if a.name == "axis"), 0)


def stable_output_names(model: Any) -> dict[str, str]:
    """Give every output a plain identifier as its name; returns {new: original} for the renamed."""
    from onnx import helper

    graph = model.graph
    taken = {v.name for v in [*graph.input, *graph.output, *graph.value_info]}
    taken |= {init.name for init in graph.initializer}
    taken |= {output for node in graph.node for output in node.output}
    renamed: dict[str, str] = {}
    used: set[str] = set()
    for output in graph.output:
        original = output.name
        if IDENTIFIER.fullmatch(original) and original not in used:
            used.add(original)
            continue
        base = re.sub(r"\W+", "_", original).strip("_") or "output"
        base = f"output_{base}" if base[0].isdigit() else base
        candidate, n = base, 1
        while candidate in taken or candidate in used:
            candidate, n = f"{base}_{n}", n + 1
        graph.node.append(helper.make_node("Identity", [original], [candidate], name=f"stable_name_{candidate}"))
        output.name = candidate
        used.add(candidate)
        renamed[candidate] = original
    return renamed


def parameter_count(model: Any) -> int:
    total = 0
    for init in model.graph.initializer:
        count = 1
        for dim in init.dims:
            count *= int(dim)
        total += count
    return total
