"""The stage registry, and the promise that the stages package imports no framework."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from domain.jobs.plan import plan_stages
from domain.toolchains import TOOLCHAINS, stages_pythonpath
from stages.kit.contract import StageError
from stages.registry import ROWS, STAGES, entry, get_stage

CONVERSION_STAGES = [name for name in STAGES if not name.startswith("selftest.")]


def test_unknown_stage_has_a_stable_code() -> None:
    with pytest.raises(StageError) as caught:
        get_stage("torch.teleport")
    assert caught.value.code == "unknown_stage"
    assert "export.prepare" in caught.value.message


@pytest.mark.parametrize("name", CONVERSION_STAGES)
def test_conversion_stages_run_in_a_known_toolchain(name: str) -> None:
    assert STAGES[name].toolchain in TOOLCHAINS


def test_loading_every_stage_imports_no_framework() -> None:
    # A fresh interpreter: importing a stage module (not running it) must stay cheap,
    # so the API process and the warm parents never pay for torch or TensorFlow.
    code = (
        "import json, sys\n"
        "from stages.registry import get_stage\n"
        f"for name in {sorted(STAGES)!r}:\n"
        "    get_stage(name)\n"
        "heavy = ('torch', 'tensorflow', 'onnx', 'onnxruntime', 'onnx_tf', 'ai_edge_litert')\n"
        "print(json.dumps(sorted(m for m in heavy if m in sys.modules)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": stages_pythonpath()},
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_the_planner_names_its_stages_from_the_registry_rows() -> None:
    spec = {"targets": ["onnx", "saved_model", "tflite"], "quantization": ["float32", "int8"], "toolchain": "best"}
    planned = {stage.entry for stage in plan_stages(spec) if stage.entry}
    assert planned == {row.name for row in ROWS if row.role != "selftest"}
    assert entry("convert", "onnx2tf") == "convert.onnx2tf"
    assert entry("export") == "export.prepare"
    with pytest.raises(KeyError):
        entry("convert", "teleport")
