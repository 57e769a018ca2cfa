"""SavedModel helpers shared by the converters that write one (onnx-tf, onnx2tf).

Import this only where TensorFlow is installed and wanted: ``validate`` imports it.

``validate`` runs every sample through the SavedModel's ``serving_default`` signature
in TensorFlow and compares with the PyTorch reference (``stages.kit.metrics.compare``:
shapes, so the outputs' layout, then values). The signature's input and output keys
must map onto the spec's input names and the reference's output names
(``stages.kit.naming.match_names``); a SavedModel whose signature cannot be mapped is
``conversion_failed``. ``zip_dir`` packs the directory reproducibly.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Any

from stages.kit.codes import StageCode
from stages.kit.contract import StageError
from stages.kit.naming import match_names

ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)
SIGNATURE = "serving_default"


def validate(
    saved_model_dir: Path,
    samples: dict[str, Any],
    reference: dict[str, Any],
    tolerance: float,
    input_transposes: dict[str, list[int]] | None = None,
    probes_from: Path | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(check, signature)`` of the SavedModel at ``saved_model_dir``.

    ``samples`` / ``reference`` map names to arrays with the sample axis first
    (``[samples, *shape]``); each sample is fed on its own. ``input_transposes`` gives,
    per input name, the permutation from a PyTorch-layout sample to what the signature
    takes (e.g. ``[0, 2, 3, 1]`` for an NHWC input); outputs are compared as they come,
    so an output left channel-last fails on its shape. ``check`` is
    ``stages.kit.metrics.compare``'s result; ``signature`` records the signature's
    inputs (shape, dtype), output keys in PyTorch's order and the name maps.
    ``probes_from``: a ``reference.npz`` holding probe sets (``stages.kit.probes``): each
    runs through the signature too (issue 9, item 7); ``check`` then has ``probes`` and
    ``sample_shapes``, and a set that does not run or misses fails the SavedModel with the
    size in the reason. A signature that fixes a probed dimension is not run there and says
    so (``ran: false``), as ``validate.tflite`` does for a frozen dimension.
    Raises ``StageError(conversion_failed)`` when there is no ``serving_default`` or its
    keys cannot be mapped to the model's names.
    """
    import numpy as np
    import tensorflow as tf

    from stages.kit.metrics import compare

    loaded = tf.saved_model.load(str(saved_model_dir))
    if SIGNATURE not in loaded.signatures:
        raise StageError(StageCode.CONVERSION_FAILED, f"the SavedModel has no {SIGNATURE} signature")
    function = loaded.signatures[SIGNATURE]
    specs: dict[str, Any] = function.structured_input_signature[1]
    out_keys = list(function.structured_outputs)
    in_map, in_left = match_names(list(samples), list(specs))
    out_map, out_left = match_names(list(reference), out_keys)
    if in_left or out_left:
        raise StageError(
            StageCode.CONVERSION_FAILED,
            f"the SavedModel signature ({sorted(specs)} -> {out_keys}) "
            f"does not match the model's inputs {list(samples)} / outputs {list(reference)}",
        )
    transposes = input_transposes or {}

    def run(inputs: dict[str, Any]) -> dict[str, Any]:
        """Each sample of ``inputs`` (``[M, *shape]`` per name) through the signature."""
        collected: dict[str, list[Any]] = {name: [] for name in out_map}
        for index in range(next(iter(inputs.values())).shape[0]):
            feed = {}
            for name, key in in_map.items():
                value = inputs[name][index]
                if name in transposes:
                    value = np.transpose(value, transposes[name])
                feed[key] = tf.constant(value, dtype=specs[key].dtype)
            result = function(**feed)
            for name, key in out_map.items():
                collected[name].append(result[key].numpy())
        return {name: np.stack(values) for name, values in collected.items()}

    def fits(inputs: dict[str, Any]) -> bool:
        """The signature takes inputs of these shapes (it keeps the dimensions dynamic)."""
        for name, key in in_map.items():
            one = inputs[name].shape[1:]
            shaped = [one[i] for i in transposes[name]] if name in transposes else list(one)
            if not specs[key].shape.is_compatible_with(shaped):
                return False
        return True

    actual = run(samples)
    signature = {
        "signature_key": SIGNATURE,
        "inputs": {key: {"shape": shape(spec.shape), "dtype": spec.dtype.name} for key, spec in specs.items()},
        "outputs": [out_map[name] for name in reference],
        "input_map": in_map,
        "output_map": out_map,
        "input_transposes": transposes,
    }
    check = compare(reference, actual, tolerance)
    if probes_from is not None:
        _probe(check, probes_from, samples, tolerance, run, fits)
    return check, signature


def _probe(
    check: dict[str, Any], reference_path: Path, samples: dict[str, Any], tolerance: float, run: Any, fits: Any
) -> None:
    """Run the probe sets of ``reference_path`` through ``run`` and add them to ``check``
    (``probes``, and ``sample_shapes``: the samples' shapes, also when there is no probe set)."""
    from stages.kit import probes as probe_io

    sets = probe_io.load(reference_path)
    results: list[dict[str, Any]] = []
    reasons: list[str] = []
    for probe in sets:
        shapes = {name: [int(d) for d in value.shape[1:]] for name, value in probe.inputs.items()}
        at = ", ".join(f"{dim}={size}" for dim, size in probe.sizes.items())
        entry: dict[str, Any] = {"sizes": probe.sizes, "shapes": shapes}
        if not fits(probe.inputs):
            results.append({**entry, "ran": False, "reason": "the signature fixes a declared dynamic dimension"})
            continue
        try:
            actual = run(probe.inputs)
        except Exception as exc:  # TensorFlow's errors at a shape are many and untyped
            reason = error_line(exc)
            results.append({**entry, "ran": False, "verdict": "fail", "reason": reason})
            reasons.append(f"at {at} the SavedModel does not run: {reason}")
            continue
        result, missed = probe_io.compared_entry(entry, probe, actual, tolerance)
        results.append(result)
        reasons.extend(missed)
    base = {name: [int(d) for d in value.shape[1:]] for name, value in samples.items()}
    check["probes"] = results
    check["sample_shapes"] = [base, *(r["shapes"] for r in results if r.get("ran"))]
    if reasons:
        check["verdict"] = "fail"
        check["reasons"] = [*(check.get("reasons") or []), *reasons]


def zip_dir(source: Path, target: Path) -> None:
    """Zip ``source`` as ``saved_model/...`` into ``target``: sorted entries, fixed
    timestamps and modes, so the same SavedModel zips to the same bytes."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(source.rglob("*")):
            relative = Path("saved_model") / path.relative_to(source)
            name = relative.as_posix() + ("/" if path.is_dir() else "")
            entry = zipfile.ZipInfo(name, date_time=ZIP_TIMESTAMP)
            entry.external_attr = ((0o40755 if path.is_dir() else 0o100644) << 16) | (0x10 if path.is_dir() else 0)
            entry.compress_type = zipfile.ZIP_STORED if path.is_dir() else zipfile.ZIP_DEFLATED
            archive.writestr(entry, b"" if path.is_dir() else path.read_bytes())


def shape(tensor_shape: Any) -> list[int | None]:
    """A ``tf.TensorShape`` as a list, ``None`` for unknown dimensions (``[]`` for unknown rank)."""
    if tensor_shape.rank is None:
        return []
    return [None if dim is None else int(dim) for dim in tensor_shape.as_list()]


def error_line(exc: BaseException, limit: int = 300) -> str:
    """The one line of a TensorFlow error that says what went wrong, with the node it names.

    A ``tf.errors.OpError`` raised by a ``tf.function`` starts with "Graph execution error:"
    and a Python traceback of where the node was defined; what failed (e.g. "Input to
    reshape is a tensor with 96 values, but the requested shape has 48") is the last line
    before ``[[{{node <name>}}]]``. Other errors: their first line. At most ``limit`` characters.
    """
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines[0].startswith("Graph execution error"):
        return lines[0][:limit]
    skipped = ("Graph execution error", "Detected at node", "File ", "[[", "defined at")
    causes = [
        line
        for line in lines
        if not line.startswith(skipped) and not line.endswith("defined at (most recent call last):")
    ]
    node = re.search(r"\{\{node ([^}]+)\}\}", text)
    cause = causes[-1] if causes else lines[0]
    return (f"{cause} (node {node.group(1)})" if node else cause)[:limit]
