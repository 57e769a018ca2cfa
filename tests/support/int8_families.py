"""The int8 jobs of tests/stages/test_int8_families.py: one tiny stand-in per family, its job
(``toolchain: best``, ``quantization: [float32, int8]``, 16 uploaded calibration samples, 4
validation samples) run through its whole plan (``plan_chain.run_plan``), once per session.

The stand-ins, seeded (the configs are ``testkit.families``'s, as for tests/stages/test_families.py
and bench/precisions.py), with a static batch of 1 (what an int8 file on a device takes):

- ``vit``: torchvision ``VisionTransformer(**VIT_TINY)``, ``[1, 3, 32, 32] -> [1, 10]`` logits;
- ``bert``: transformers ``BertModel(BERT_TINY)``, token ids and a mask ``[1, 8]`` int64 ->
  ``last_hidden_state [1, 8, 32]`` and ``pooler_output [1, 32]``;
- ``segmentation``: the tiny LR-ASPP of make_models.py (hardswish, a sigmoid gate, bilinear
  upsampling), an ExportedProgram, ``[1, 3, 64, 64] -> out [1, 4, 64, 64]`` per-pixel logits;
- ``gpt2``: transformers ``GPT2LMHeadModel(GPT2_TINY)``, token ids ``[1, 8]`` -> logits
  ``[1, 8, 100]``.

The job's converters are onnx2tf and litert-torch (``available_toolchains``: a server without
the onnx-tf environment). onnx-tf is left out because it adds nothing here: its files of the
transformer families need flex ops (tests/support/matrix.py ``FAMILY_OUTCOMES``), which the
worker never quantizes (``worker.execute.quantize_sources`` takes deliverable files only); on
the segmenter its file is one more float32 file of the same ONNX graph, quantized by the same
ai-edge-quantizer recipes as onnx2tf's (docs/benchmarks.md: 0.7828 against onnx2tf's 0.7827),
and it would cost 40-60 s a family.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.matrix import INT8_FAMILIES
from tests.support.models import MASK, TOKENS, image, spec_of
from tests.support.plan_chain import PlanRun, run_plan
from tests.support.quantize_chains import CALIBRATION_SAMPLES
from tests.support.stage_runner import make_torch_models

VALIDATION_SAMPLES = 4
SETTINGS = {"allowed_architectures": ["torchvision.models.", "transformers."], "threads": 1}
CONVERTERS = ["onnx2tf", "litert-torch"]

MAKE = r"""
import json, sys
from pathlib import Path

import torch
import torchvision
import transformers

from testkit.families import BERT_TINY, GPT2_TINY, VIT_TINY  # PYTHONPATH: the repository
from tests.support.make_models import quantization_files

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(1)
vit = torchvision.models.VisionTransformer(**VIT_TINY)
torch.nn.init.normal_(vit.heads.head.weight, std=0.5)  # torchvision zero-initializes the head
torch.manual_seed(5)
bert = transformers.BertModel(transformers.BertConfig(**BERT_TINY))
torch.manual_seed(6)
gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(**GPT2_TINY, use_cache=False))
files = {}
for name, model in {"vit": vit, "bert": bert, "gpt2": gpt2}.items():
    torch.save(model.eval().state_dict(), out / f"{name}.pt")
    files[name] = str(out / f"{name}.pt")
files["segmentation"] = quantization_files(out)["lraspp_program"]
print(json.dumps(files))
"""


def _static(inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**item, "shape": [1, *item["shape"][1:]]} for item in inputs]


# family -> its inputs at batch 1 (its TINY_MODELS row is tests/support/matrix.py's INT8_FAMILIES).
INPUTS: dict[str, list[dict[str, Any]]] = {
    "segmentation": image(64, batch=1),
    "vit": image(32, batch=1),
    "bert": _static([TOKENS, MASK]),
    "gpt2": _static([TOKENS]),
}


def family_spec(family: str) -> dict[str, Any]:
    """The job's normalized spec: ``toolchain: best``, float32 and int8, tflite only."""
    return spec_of(
        INT8_FAMILIES[family].tiny,
        inputs=INPUTS[family],
        toolchain="best",
        targets=["tflite"],
        quantization=["float32", "int8"],
        available_toolchains=CONVERTERS,
        validation_samples=VALIDATION_SAMPLES,
    )


def calibration_file(family: str, path: Path) -> Path:
    """``CALIBRATION_SAMPLES`` other inputs than the validation samples, as the job's upload
    (.npz keyed by input name, ``[N, *shape]``): standard-normal images, token ids in the
    vocabulary and a 0/1 mask, as the synthetic samples draw them."""
    rng = np.random.default_rng(1)
    arrays: dict[str, np.ndarray] = {}
    for item in INPUTS[family]:
        shape = (CALIBRATION_SAMPLES, *item["shape"])
        if item["dtype"] == "float32":
            arrays[item["name"]] = rng.standard_normal(shape).astype(np.float32)
        else:
            low, high = item["range"]
            arrays[item["name"]] = rng.integers(low, high, shape).astype(np.int64)
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


@dataclass
class FamilyJob:
    """One family's job: its stages by name and the wall seconds they took together."""

    family: str
    plan: PlanRun
    seconds: float

    @property
    def quantize(self) -> Any:
        return self.plan.runs["quantize"]


_JOBS: dict[str, FamilyJob] = {}


def family_jobs(factory: pytest.TempPathFactory) -> dict[str, FamilyJob]:
    """Every family's job, run once per session, two at a time (each one's stages in order)."""
    if not _JOBS:
        work = factory.mktemp("int8-families")
        models = make_torch_models(MAKE, work / "models")

        def job(family: str) -> FamilyJob:
            started = time.monotonic()
            uploads = {"model": models[family], "calibration": calibration_file(family, work / f"{family}.npz")}
            plan = run_plan(family_spec(family), uploads, work / family, SETTINGS)
            return FamilyJob(family, plan, round(time.monotonic() - started, 1))

        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = {family: pool.submit(job, family) for family in INT8_FAMILIES}
            _JOBS.update({family: future.result() for family, future in futures.items()})
    return _JOBS
