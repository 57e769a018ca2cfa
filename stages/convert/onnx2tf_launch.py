"""``python -m stages.convert.onnx2tf_launch <onnx2tf arguments>``: onnx2tf's CLI with the
ModelIR->SavedModel exporter taught the ops it lacks (onnx2tf env, with ``-fdosm`` only).

onnx2tf 2.6.9 writes exact GELU as the builtin ``GELU`` op (see stages.convert.onnx2tf),
and its SavedModel exporter (``tflite_builder/saved_model_exporter.py``) has no kernel
for it: the run fails with "unsupported_op_types=['GELU']" for every transformer whose
MLP uses ``nn.GELU``. The kernel added here is ``tf.nn.gelu`` with the op's
``approximate`` option (exact when absent, as the TFLite op).

Its ``DEPTHWISE_CONV_2D`` kernel passes four dilations (``[1, h, w, 1]``) to
``tf.nn.depthwise_conv2d``, which takes two: every depthwise convolution (ConvNeXt,
MobileNet) fails with "`input.shape.rank` must be at least 5". The replacement is the
same kernel with ``dilations=[h, w]``. Both are installed for onnx2tf 2.6.9 only
(``PATCHED_VERSION``): another version is run as it is. Everything else is onnx2tf's own
``main``, unchanged; the stage validates the result against PyTorch.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any

PATCHED = ["GELU", "DEPTHWISE_CONV_2D"]
PATCHED_VERSION = "2.6.9"


def _gelu(executor: Any, op: Any, env: dict[str, Any]) -> None:
    import tensorflow as tf

    x = executor._resolve_tensor(op.inputs[0], env)
    approximate = bool((op.options or {}).get("approximate", False))
    executor._assign_outputs(op, [tf.nn.gelu(x, approximate=approximate)], env)


def _depthwise_conv2d(executor: Any, op: Any, env: dict[str, Any]) -> None:
    import tensorflow as tf
    from onnx2tf.tflite_builder.saved_model_exporter import _apply_fused_activation

    x = executor._resolve_tensor(op.inputs[0], env)
    w = executor._resolve_tensor(op.inputs[1], env)
    b = executor._resolve_optional_tensor(op.inputs[2], env) if len(op.inputs) >= 3 else None
    # TFLite's depthwise filter [1, h, w, in * multiplier] -> TF's [h, w, in * multiplier, 1].
    shape = tf.shape(w)
    w_tf = tf.reshape(tf.transpose(w, perm=[1, 2, 3, 0]), [shape[1], shape[2], shape[3], shape[0]])
    options = op.options or {}
    y = tf.nn.depthwise_conv2d(
        x,
        w_tf,
        strides=[1, int(options.get("strideH", 1)), int(options.get("strideW", 1)), 1],
        dilations=[int(options.get("dilationHFactor", 1)), int(options.get("dilationWFactor", 1))],
        padding=str(options.get("padding", "SAME")).upper(),
    )
    if b is not None:
        y = tf.nn.bias_add(y, b)
    y = _apply_fused_activation(y, str(options.get("fusedActivationFunction", "NONE")))
    executor._assign_outputs(op, [y], env)


def install() -> list[str]:
    """Register the missing and fixed kernels (onnx2tf 2.6.9 only); returns the op types."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # as onnx2tf's require_tensorflow sets it
    from importlib.metadata import version

    from onnx2tf.utils.tf_optional import require_tensorflow

    require_tensorflow("flatbuffer_direct SavedModel export")
    if version("onnx2tf") != PATCHED_VERSION:
        return []
    from onnx2tf.tflite_builder import saved_model_exporter as exporter

    for op_type, kernel in (("GELU", _gelu), ("DEPTHWISE_CONV_2D", _depthwise_conv2d)):
        exporter._REGISTERED_KERNELS[op_type] = kernel
        exporter.SUPPORTED_KERNEL_OP_TYPES.add(op_type)
    return list(PATCHED)


def main() -> None:
    added = install()
    print(f"onnx2tf_launch: SavedModel exporter kernels added or fixed: {added}", flush=True)
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
