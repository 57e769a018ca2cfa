"""Match the stable input/output names with the names a converted artifact exposes.

Converters mangle names: a TFLite tensor is ``serving_default_input:0``, TensorFlow
replaces characters it does not allow in signature keys, onnx-tf rewrites ``:``.
Matching goes exact, then by a normalized form, then - only when a single name is
left on each side - by elimination. Anything else is an error the caller reports,
because pairing outputs by guesswork would make the numbers meaningless.
"""

from __future__ import annotations

import re

PREFIXES = ("serving_default_", "StatefulPartitionedCall_")


def normalize(name: str) -> str:
    name = re.sub(r":\d+$", "", name)
    for prefix in PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
    return re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower()


def match_names(wanted: list[str], available: list[str]) -> tuple[dict[str, str], list[str]]:
    """Map each wanted name to an available one; also return the wanted names left over."""
    mapping: dict[str, str] = {}
    free = list(available)
    for name in wanted:
        if name in free:
            mapping[name] = name
            free.remove(name)
    for name in wanted:
        if name in mapping:
            continue
        hits = [candidate for candidate in free if normalize(candidate) == normalize(name)]
        if len(hits) == 1:
            mapping[name] = hits[0]
            free.remove(hits[0])
    left = [name for name in wanted if name not in mapping]
    if len(left) == 1 and len(free) == 1:
        mapping[left[0]] = free[0]
        left = []
    return mapping, left
