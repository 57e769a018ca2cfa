"""The litert-torch chains on the chain models, run once per session: their float32 files are
what tests/stages/test_litert_torch.py checks and what test_quantize.py quantizes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.models import CHAIN_MODELS, TINY_MODELS, spec_of
from tests.support.stage_runner import StageRun, make_torch_models, run_chain

ALLOWED = {"allowed_architectures": ["torchvision.models.", "torchvision.ops.", "torch.nn."]}

# The chain models of tests/support/models.py; the MLP's input takes a name that is not a
# Python identifier here.
INPUTS: dict[str, list[dict[str, Any]]] = {
    "mobilenet_v2": TINY_MODELS[("state_dict", "mobilenet_v2")].inputs or [],
    "mlp": [{"name": "features:0", "shape": [1, 16], "dtype": "float32"}],
    "encoder": TINY_MODELS[("state_dict", "encoder")].inputs or [],
}

MODELS: dict[str, Path] = {}
_CHAINS: dict[str, dict[str, StageRun]] = {}


def spec_for(case: str, **changes: Any) -> dict[str, Any]:
    return spec_of(("state_dict", case), inputs=INPUTS[case], toolchain="litert-torch", **changes)


def models(factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The model files, written once per session."""
    if not MODELS:
        out = factory.mktemp("litert-torch-models")
        MODELS.update(make_torch_models(CHAIN_MODELS, out))
    return MODELS


def chain(case: str, factory: pytest.TempPathFactory) -> dict[str, StageRun]:
    """export.prepare -> convert.litert_torch -> validate.tflite for one case, once per session."""
    if case not in _CHAINS:
        work = factory.mktemp(f"litert-torch-{case}")
        model = models(factory)[case]
        _CHAINS[case] = run_chain(work, model, spec_for(case), ("torch", "convert.litert_torch"), ALLOWED)
    return _CHAINS[case]
