"""Undo ai-edge-quantizer's swap of a float graph output for its int8 copy.

When a recipe keeps float the op that writes a graph output (``float_sensitive`` keeps the
last layer float) and that output also feeds an op the recipe quantizes (BERT's
``last_hidden_state`` feeds the pooler's slice and fully-connected layer), ai-edge-quantizer
inserts a QUANTIZE after the float tensor for those consumers. Its
``transformations/quant_insert.py`` (``insert_quant``; 0.10.0, and unchanged on its main
branch as of 2026-08-20, commit 8509203) then also replaces the tensor in the subgraph's
``outputs`` with the QUANTIZE's int8 ``<name>_quantized`` tensor, while the SignatureDef
keeps naming the float tensor (``ModelModifier._update_signature_defs`` runs only for a
QUANTIZE whose consumer is the graph output itself). The float tensor is then an
intermediate that the signature still reads: LiteRT keeps no value for it after invoke -
XNNPACK leaves it unallocated ("ValueError: Tensor data is null. Run allocate_tensors()
first" from the signature runner), the reference kernels reuse its memory (measured on the
tiny BERT: mean |last_hidden_state| 0.62 read instead of 0.80). No public issue reports it
(searched 2026-12-01).

``restore_outputs`` puts the float tensor back in the subgraph's outputs, where the float32
file had it and where the signature points; the QUANTIZE keeps feeding the quantized
consumers. Only the int32 of that output slot changes (in place, so weights stored after the
flatbuffer are untouched).
"""

from __future__ import annotations

from typing import Any


def restore_outputs(model: bytearray) -> list[dict[str, str]]:
    """Restore, in ``model`` (a .tflite flatbuffer, edited in place), every subgraph output
    that ai-edge-quantizer swapped for the int8 output of a QUANTIZE of a float tensor a
    signature output still names. Returns one entry per restored output: ``output`` (the
    signature key), ``tensor`` (the float tensor put back) and ``replaced`` (the int8 tensor
    that had taken its place). A file without such a swap is left as it is (``[]``).

    Raises ``TypeError`` when ``model`` is not a bytearray (it could not be edited in place)."""
    from ai_edge_litert import schema_py_generated as schema

    if not isinstance(model, bytearray):
        raise TypeError(f"restore_outputs edits the model in place: give a bytearray, not {type(model).__name__}")
    root = schema.Model.GetRootAs(model, 0)
    quantize = {
        index
        for index in range(root.OperatorCodesLength())
        if max(root.OperatorCodes(index).BuiltinCode(), root.OperatorCodes(index).DeprecatedBuiltinCode())
        == schema.BuiltinOperator.QUANTIZE
    }
    restored: list[dict[str, str]] = []
    for position in range(root.SignatureDefsLength()):
        signature = root.SignatureDefs(position)
        graph = root.Subgraphs(signature.SubgraphIndex())
        if graph.OutputsIsNone():
            continue
        # flatbuffers' GetVectorAsNumpy is a view of ``model``: writing it edits the file.
        outputs = graph.OutputsAsNumpy()
        quantized_from = _quantized_from(graph, quantize)
        for item in range(signature.OutputsLength()):
            entry = signature.Outputs(item)
            tensor = int(entry.TensorIndex())
            if tensor in outputs or graph.Tensors(tensor).Type() != schema.TensorType.FLOAT32:
                continue
            for slot, current in enumerate(outputs):
                if quantized_from.get(int(current)) == tensor:
                    outputs[slot] = tensor
                    restored.append(
                        {
                            "output": _text(entry.Name()),
                            "tensor": _text(graph.Tensors(tensor).Name()),
                            "replaced": _text(graph.Tensors(int(current)).Name()),
                        }
                    )
                    break
    return restored


def _quantized_from(graph: Any, quantize: set[int]) -> dict[int, int]:
    """Output tensor -> input tensor of every QUANTIZE op of ``graph``."""
    found: dict[int, int] = {}
    for index in range(graph.OperatorsLength()):
        op = graph.Operators(index)
        if op.OpcodeIndex() in quantize and op.InputsLength() and op.OutputsLength():
            found[int(op.Outputs(0))] = int(op.Inputs(0))
    return found


def _text(value: bytes | None) -> str:
    return value.decode("utf-8", "replace") if value else ""
