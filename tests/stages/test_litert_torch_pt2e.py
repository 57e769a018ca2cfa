"""litert-torch's PT2E int8 file in convert.litert_torch: a model whose activations sit under
PT2E's scale floor fails the attempt before the lowering, with that cause; a crash or a hang of
the PT2E flow (it runs in a fork of the stage) is the attempt's error, and the float32
conversion still stands."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from domain.toolchains import stages_pythonpath
from tests.support.int8_models import int8_chain, spec
from tests.support.stage_runner import STAGE_TIMEOUT
from tests.support.toolchain import toolchain_python

# Stands in for litert-torch's PT2E flow (the dependency), as tests.support.fake_onnx2tf does for
# onnx2tf: the stage itself runs unchanged through ``python -m stages``'s entry point.
DRIVER = """
import os, sys, time
from stages.convert import litert_torch_pt2e


def abort(*args, **kwargs):  # a native abort in the MLIR lowering
    print("stand-in: aborting inside the PT2E flow", flush=True)
    os.abort()


def hang(*args, **kwargs):
    time.sleep(600)


litert_torch_pt2e.quantize = {"abort": abort, "hang": hang}[sys.argv[1]]
from stages.__main__ import main

sys.exit(main(sys.argv[2:]))
"""


def convert_with_pt2e(
    mode: str, factory: pytest.TempPathFactory, work: Path, options: dict[str, Any]
) -> tuple[dict[str, Any], float, str]:
    """convert.litert_torch on the tiny ``cnn`` with its PT2E flow replaced by ``mode``; the
    result, the stage's wall time and its log."""
    chain = int8_chain("cnn", factory)
    prepare = chain["prepare"]
    inputs = {
        "model": chain["model"],
        "calibration": chain["calibration"],
        "samples": prepare.output("samples"),
        "reference": prepare.output("reference"),
    }
    work.mkdir(parents=True)
    request = {
        "stage": "convert.litert_torch",
        "inputs": {name: str(path) for name, path in inputs.items()},
        "spec": spec("cnn"),
        "options": options,
        "output_dir": str(work / "out"),
    }
    (work / "request.json").write_text(json.dumps(request))
    env = {**os.environ, "PYTHONPATH": stages_pythonpath(), "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    started = time.monotonic()
    proc = subprocess.run(
        [str(toolchain_python("torch")), "-c", DRIVER, mode, "convert.litert_torch", "request.json", "result.json"],
        cwd=work,
        capture_output=True,
        text=True,
        env=env,
        timeout=STAGE_TIMEOUT,
    )
    seconds = time.monotonic() - started
    log = proc.stdout + proc.stderr
    assert (work / "result.json").is_file(), log[-3000:]
    return json.loads((work / "result.json").read_text()), seconds, log


def test_activations_under_the_scale_floor_fail_the_attempt_before_the_lowering(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    convert = int8_chain("faint", tmp_path_factory)["convert"]
    assert convert.result["outputs"] == {"tflite_float32": "model_float32.tflite"}
    assert not (convert.output_dir / "model_int8_pt2e.tflite").exists()
    pt2e = convert.result["info"]["pt2e"]
    assert pt2e["error"].startswith("litert-torch's PT2E int8 graph gives constant outputs (cosine 0.0000")
    assert "3 of 4 activation tensors span fewer than 255 steps of its minimum scale 2^-12" in pt2e["error"]
    # Measured: the input's observer (standard normal) and 3 under the floor, all 3 within half a step.
    assert pt2e["activations"] == {"observed": 4, "below_floor": 3, "constant": 3, "floor_scale": 2**-12}
    assert pt2e["check"] == {"samples": 4, "min_cosine": 0.0, "constant": True}
    assert "recipe" not in pt2e  # no file was lowered


def test_a_model_above_the_floor_keeps_its_pt2e_file(tmp_path_factory: pytest.TempPathFactory) -> None:
    convert = int8_chain("cnn", tmp_path_factory)["convert"]
    assert convert.result["outputs"]["tflite_int8_pt2e"] == "model_int8_pt2e.tflite"
    pt2e = convert.result["info"]["pt2e"]
    assert "error" not in pt2e
    assert pt2e["activations"]["constant"] == 0
    # Measured 0.99994 (the quantized PyTorch graph on 4 calibration samples).
    assert pt2e["check"]["min_cosine"] > 0.999
    assert pt2e["check"]["constant"] is False
    assert not list(convert.output_dir.glob("pt2e*"))  # the fork's hand-over files are gone


def test_a_pt2e_flow_that_aborts_leaves_the_float32_conversion(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    result, _, log = convert_with_pt2e("abort", tmp_path_factory, tmp_path / "abort", {})
    assert result["ok"], result
    assert result["outputs"] == {"tflite_float32": "model_float32.tflite"}
    assert (tmp_path / "abort" / "out" / "model_float32.tflite").stat().st_size > 1000
    assert result["info"]["signature"]["inputs"]["image"]["dtype"] == "float32"
    error = result["info"]["pt2e"]["error"]
    assert error == (
        "litert-torch's PT2E flow crashed (signal SIGABRT, in its native code); "
        "its last output: stand-in: aborting inside the PT2E flow"
    )
    assert "pt2e fork: exit -6" in log  # the fork's output is in the stage log
    assert not (tmp_path / "abort" / "out" / "model_int8_pt2e.tflite").exists()


def test_a_pt2e_flow_that_hangs_is_stopped_at_its_time_limit(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    result, seconds, _ = convert_with_pt2e("hang", tmp_path_factory, tmp_path / "hang", {"pt2e_timeout_seconds": 3})
    assert result["ok"], result
    assert result["outputs"] == {"tflite_float32": "model_float32.tflite"}
    pt2e = result["info"]["pt2e"]
    assert pt2e["error"] == "litert-torch's PT2E flow did not finish within 3 s and was stopped"
    assert 3 <= pt2e["fork_seconds"] < 6
    assert seconds < 120  # the stand-in sleeps 600 s
