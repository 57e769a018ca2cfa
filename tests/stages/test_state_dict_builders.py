"""State dicts of every torchvision builder load through export.prepare's loader.

A loader regression on any allow-listed builder shows here: each classification and
segmentation builder torchvision lists is saved with ``torch.save(model.state_dict())``
and handed to ``stages.export.prepare.load_reference`` (the stage's own loading and
reference half, no export) in one torch-env process (``builder_references.py``). Its
reference outputs must have the model's shape for ``num_classes`` and equal the saved
model's own outputs on the same samples (the stage seeds its fresh model differently,
so a loader that dropped weights would not match). Builders over 100M parameters take
most of the time and are marked ``slow`` (deselect with ``-m "not slow"``).

torchvision's MNASNet reads the per-module versions ``torch.save`` writes with a state
dict (``_metadata``) and refuses to load without them: that file, wrapped in a
checkpoint with DataParallel's ``module.`` prefix, and as safetensors (which has none),
goes through the whole ``export.prepare`` stage process.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from domain.toolchains import stages_pythonpath
from tests.support.stage_runner import (
    ALLOW_TORCHVISION,
    STAGE_TIMEOUT,
    SUPPORT,
    StageRun,
    make_torch_models,
    prepare_spec,
    run_stage,
)
from tests.support.toolchain import toolchain_python

NUM_CLASSES = 3
DEFAULT = {"size": 32, "num_classes": NUM_CLASSES}
# Where 32x32 is too small: the smallest input the builder takes. ViTs take image_size
# (one patch: 32, or 28 for 14-pixel patches); MaxViT's 7x7 windows need 224 at 1/32.
CONFIG: dict[str, dict[str, Any]] = {
    "alexnet": {"size": 64},
    "inception_v3": {"size": 75},
    "maxvit_t": {"size": 224},
    "vit_b_16": {"kwargs": {"image_size": 32}},
    "vit_b_32": {"kwargs": {"image_size": 32}},
    "vit_l_16": {"kwargs": {"image_size": 32}},
    "vit_l_32": {"kwargs": {"image_size": 32}},
    "vit_h_14": {"size": 28, "kwargs": {"image_size": 28}},
}
# Over 100M parameters (torchvision's weights metadata): two thirds of the time.
BIG = frozenset(
    {
        "regnet_y_128gf",
        "vit_h_14",
        "vit_l_32",
        "vit_l_16",
        "convnext_large",
        "regnet_y_32gf",
        "vgg19_bn",
        "vgg19",
        "vgg16_bn",
        "vgg16",
        "vgg13_bn",
        "vgg13",
        "vgg11_bn",
        "vgg11",
        "wide_resnet101_2",
        "efficientnet_v2_l",
        "regnet_x_32gf",
    }
)
MAX_ERROR_OF_SCALE = 1e-5


def run_builders(work: Path, *, only: frozenset[str] = frozenset(), skip: frozenset[str] = frozenset()) -> list[dict]:
    """One torch-env process over the builders; its rows, the first one listing every builder."""
    config = {"default": DEFAULT, "builders": CONFIG, "only": sorted(only), "skip": sorted(skip)}
    proc = subprocess.run(
        [str(toolchain_python("torch")), str(SUPPORT / "builder_references.py"), str(work), json.dumps(config)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": stages_pythonpath(), "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"},
        timeout=STAGE_TIMEOUT * 2,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def problems(rows: list[dict[str, Any]]) -> dict[str, str]:
    """Builder -> what is wrong with its reference outputs (nothing for a good one)."""
    found = {}
    for row in rows:
        size, classes = row["size"], row["num_classes"]
        wanted = [1, 1, classes] if row["family"] == "classification" else [1, 1, classes, size, size]
        key = "output" if row["family"] == "classification" else "out"
        if "code" in row:
            found[row["name"]] = f"{row['code']}: {row['message']}"
        elif (row["outputs"].get(key)) != wanted:
            found[row["name"]] = f"outputs {row['outputs']}, wanted {key} {wanted}"
        elif not row["finite"]:
            found[row["name"]] = "reference outputs are not finite"
        elif row["max_error_of_scale"] > MAX_ERROR_OF_SCALE:
            found[row["name"]] = f"reference is {row['max_error_of_scale']:.2e} of scale off the saved model's outputs"
    return found


def test_every_builder_state_dict_loads(tmp_path: Path) -> None:
    rows = run_builders(tmp_path, skip=BIG)
    listed = rows.pop(0)["listed"]
    classification = [name for family, name in listed if family == "classification"]
    segmentation = [name for family, name in listed if family == "segmentation"]
    # torchvision 0.29 lists 80 and 6: the enumeration itself must not come back short.
    assert len(classification) >= 80, classification
    assert len(segmentation) >= 6, segmentation
    assert BIG <= set(classification), BIG - set(classification)
    assert [row["name"] for row in rows] == [name for _, name in listed if name not in BIG]
    assert problems(rows) == {}


@pytest.mark.slow
def test_every_big_builder_state_dict_loads(tmp_path: Path) -> None:
    rows = run_builders(tmp_path, only=BIG)[1:]
    assert sorted(row["name"] for row in rows) == sorted(BIG)
    assert problems(rows) == {}


MNASNET_FILES = """
import json, sys
from pathlib import Path
import numpy as np
import torch, torchvision
from safetensors.torch import save_file

out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(7)
model = torchvision.models.mnasnet0_5(num_classes=3).eval()
with torch.no_grad():
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
torch.save(model.state_dict(), out / "plain.pt")
# DataParallel's state dict: every key, and every _metadata path, under "module."
wrapped = torch.nn.DataParallel(model).state_dict()
assert "module.layers.0" in wrapped._metadata
torch.save({"epoch": 3, "state_dict": wrapped}, out / "wrapped.pt")
save_file(model.state_dict(), str(out / "weights.safetensors"))
samples = np.random.default_rng(3).standard_normal((2, 1, 3, 32, 32)).astype(np.float32)
np.save(out / "samples.npy", samples)
with torch.no_grad():
    np.save(out / "expected.npy", np.stack([model(torch.from_numpy(s)).numpy() for s in samples]))
names = ["plain", "wrapped", "safetensors", "samples", "expected"]
files = ["plain.pt", "wrapped.pt", "weights.safetensors", "samples.npy", "expected.npy"]
print(json.dumps({name: str(out / file) for name, file in zip(names, files)}))
"""


@pytest.fixture(scope="module")
def mnasnet(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_torch_models(MNASNET_FILES, tmp_path_factory.mktemp("mnasnet"))


@pytest.mark.parametrize("file", ["plain", "wrapped", "safetensors"])
def test_mnasnet_state_dict_keeps_its_module_versions(mnasnet: dict[str, Path], tmp_path: Path, file: str) -> None:
    spec = prepare_spec(
        "state_dict",
        architecture={"name": "torchvision.models.mnasnet0_5", "kwargs": {"num_classes": NUM_CLASSES}},
        inputs=[{"name": "input", "shape": [1, 3, 32, 32], "dtype": "float32"}],
    )
    run: StageRun = run_stage(
        "torch",
        "export.prepare",
        tmp_path,
        {"model": mnasnet[file], "samples": mnasnet["samples"]},
        spec,
        ALLOW_TORCHVISION,
    )
    assert run.ok, run.result
    reference = np.load(run.output("reference"))["output"]
    expected = np.load(mnasnet["expected"])
    assert reference.shape == expected.shape == (2, 1, NUM_CLASSES)
    assert np.abs(reference - expected).max() <= MAX_ERROR_OF_SCALE * np.abs(expected).max()
