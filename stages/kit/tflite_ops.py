"""Which operators a .tflite file uses, read from its flatbuffer.

Uses the flatbuffer schema module that ships with ai-edge-litert
(``ai_edge_litert.schema_py_generated``, generated from LiteRT's schema.fbs; TensorFlow
ships the same module where ai-edge-litert is absent), so the
file is read without loading it into an interpreter - which matters for files that
need flex ops, or crash the runtime. Select-TF ops are custom ops whose code starts
with ``Flex``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

FLEX_PREFIX = "Flex"


def schema_module() -> Any:
    """LiteRT's generated flatbuffer schema module: ai-edge-litert's, else TensorFlow's."""
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError:  # the TensorFlow environment: the same generated module ships with TF
        from tensorflow.lite.python import schema_py_generated
    return schema_py_generated


def operators(path: Path) -> dict[str, Any]:
    """``{"builtin": [...], "flex": [...], "custom": [...], "counts": {...}, "transpose_count": n}``."""
    schema = schema_module()
    buffer = path.read_bytes()
    # Without the "TFL3" identifier the offsets below would be read from garbage.
    if len(buffer) < 8 or not schema.Model.ModelBufferHasIdentifier(buffer, 0):
        raise ValueError("no TFL3 file identifier: not a .tflite flatbuffer")
    model = schema.Model.GetRootAs(buffer, 0)
    names = {value: key for key, value in vars(schema.BuiltinOperator).items() if key.isupper()}
    codes: list[str] = []
    kinds: dict[str, str] = {}
    for index in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(index)
        # Codes above 127 live in BuiltinCode; older files only fill the deprecated byte.
        builtin = max(int(code.BuiltinCode()), int(code.DeprecatedBuiltinCode()))
        if builtin == schema.BuiltinOperator.CUSTOM:
            custom = (code.CustomCode() or b"").decode("utf-8", "replace")
            codes.append(custom)
            kinds[custom] = "flex" if custom.startswith(FLEX_PREFIX) else "custom"
        else:
            name = names.get(builtin, f"BUILTIN_{builtin}")
            codes.append(name)
            kinds[name] = "builtin"
    counts: dict[str, int] = {}
    for sub_index in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(sub_index)
        for op_index in range(subgraph.OperatorsLength()):
            name = codes[subgraph.Operators(op_index).OpcodeIndex()]
            counts[name] = counts.get(name, 0) + 1
    return {
        "builtin": sorted(n for n in counts if kinds[n] == "builtin"),
        "flex": sorted(n for n in counts if kinds[n] == "flex"),
        "custom": sorted(n for n in counts if kinds[n] == "custom"),
        "counts": dict(sorted(counts.items())),
        "transpose_count": counts.get("TRANSPOSE", 0),
        "subgraphs": int(model.SubgraphsLength()),
    }
