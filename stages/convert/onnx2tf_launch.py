"""``python -m stages.convert.onnx2tf_launch <onnx2tf arguments>``: onnx2tf's CLI with the
ModelIR->SavedModel exporter taught the ops it lacks (onnx2tf env, with ``-fdosm`` only).

onnx2tf 2.6.9 writes exact GELU as the builtin ``GELU`` op (see stages.convert.onnx2tf),
and its SavedModel exporter (``tflite_builder/saved_model_exporter.py``) has no kernel
for it: the run fails with "unsupported_op_types=['GELU']" for every transformer whose
MLP uses ``nn.GELU``. The kernel added here is ``tf.nn.gelu`` with the op's
``approximate`` option (exact when absent, as the TFLite op). Everything else is
onnx2tf's own ``main``, unchanged; the stage validates the result against PyTorch.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any

PATCHED = ["GELU"]


def _gelu(executor: Any, op: Any, env: dict[str, Any]) -> None:
    import tensorflow as tf

    x = executor._resolve_tensor(op.inputs[0], env)
    approximate = bool((op.options or {}).get("approximate", False))
    executor._assign_outputs(op, [tf.nn.gelu(x, approximate=approximate)], env)


def install() -> list[str]:
    """Register the missing kernels; returns the op types added (none that onnx2tf has)."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # as onnx2tf's require_tensorflow sets it
    from onnx2tf.utils.tf_optional import require_tensorflow

    require_tensorflow("flatbuffer_direct SavedModel export")
    from onnx2tf.tflite_builder import saved_model_exporter as exporter

    added = []
    for op_type, kernel in (("GELU", _gelu),):
        if op_type not in exporter.SUPPORTED_KERNEL_OP_TYPES:
            exporter._REGISTERED_KERNELS[op_type] = kernel
            exporter.SUPPORTED_KERNEL_OP_TYPES.add(op_type)
            added.append(op_type)
    return added


def main() -> None:
    added = install()
    print(f"onnx2tf_launch: SavedModel kernels added: {added}", flush=True)
    from onnx2tf import main as onnx2tf_main

    sys.argv = ["onnx2tf", *sys.argv[1:]]
    try:
        onnx2tf_main()
    except Exception as exc:
        # onnx2tf wraps the exporter's reason in "flatbuffer_direct fast path failed":
        # the traceback stays in the log, the reason becomes the last ERROR line.
        traceback.print_exc()
        cause: BaseException | None = exc
        while cause is not None and type(cause).__name__ != "ModelIRSavedModelExportError":
            cause = cause.__cause__ or cause.__context__
        print(f"ERROR: {cause if cause is not None else f'{type(exc).__name__}: {exc}'}", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
