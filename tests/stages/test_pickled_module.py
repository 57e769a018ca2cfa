"""``model_format: pickled_module`` (a whole ``torch.save(model)``) in the stages.

The control plane accepts it only when the operator enabled it (tests/api/test_pickled_module_api.py);
here the stages load it: ``export.prepare`` unpickles it with code execution allowed, run by
the worker's own runner so that it happens inside the sandbox the stage reports, then
exports and validates it like a state dict's module; ``convert.litert_torch`` loads it the
same way. The model is a ``torch.nn.Sequential`` of torch's own layers (a pickle names its
classes by reference, so they must be importable in the stage), saved in training mode
with dropout and batch norm: a module left in training mode would not match its reference.
The same file sent as ``auto`` or ``state_dict`` is still refused as a pickle with code.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stages.kit.contract import EXIT_STAGE_ERROR
from tests.support.stage_runner import StageRun, make_torch_models, prepare_spec, run_stage
from tests.support.toolchain import toolchain_python
from worker.runner import RunLimits, SubprocessRunner, sandbox_available

TOLERANCE = 1e-4
IMAGE = [{"name": "image", "shape": ["batch", 3, 16, 16], "dtype": "float32"}]
BOTH = ["onnx-tf", "onnx2tf"]

MAKE_MODELS = r"""
import json, sys
from pathlib import Path

import torch

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
model = torch.nn.Sequential(
    torch.nn.Conv2d(3, 8, 3, padding=1),
    torch.nn.BatchNorm2d(8),
    torch.nn.ReLU(),
    torch.nn.Dropout(0.5),
    torch.nn.AdaptiveAvgPool2d(1),
    torch.nn.Flatten(),
    torch.nn.Linear(8, 5),
)
with torch.no_grad():
    model(torch.randn(8, 3, 16, 16))  # training mode: batch norm learns running statistics
assert model.training
files = {"module": out / "module.pt", "dict": out / "dict.pt"}
torch.save(model, files["module"])
torch.save({"weights": torch.zeros(3)}, files["dict"])
print(json.dumps({name: str(path) for name, path in files.items()}))
"""


# A module carrying a probe: unpickling it runs code (as any pickled module may) that writes
# down what that code sees and reaches from where it runs. argv: out dir, a port, the probe file.
MAKE_PROBED = r"""
import json, sys
from pathlib import Path

import torch

CODE = '''
import json, os, socket
try:
    socket.create_connection(("127.0.0.1", PORT), timeout=3).close()
    network = "connected"
except OSError as exc:
    network = type(exc).__name__
status = open("/proc/self/status").read().splitlines()
no_new_privs = [line.split()[1] for line in status if line.startswith("NoNewPrivs")]
with open(PROBE, "w") as handle:
    json.dump({"pid": os.getpid(), "network": network, "no_new_privs": no_new_privs}, handle)
'''.replace("PORT", sys.argv[2]).replace("PROBE", repr(sys.argv[3]))


class Probe:
    def __reduce__(self):
        return (exec, (CODE,))


out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
model.probe = Probe()  # a plain attribute: pickled with the module, run when it is loaded
torch.save(model.eval(), out / "probed.pt")
print(json.dumps({"probed": str(out / "probed.pt")}))
"""


def spec(model_format: str, **changes: Any) -> dict[str, Any]:
    return prepare_spec(model_format, tolerance={"float32": TOLERANCE}, **changes)


# name -> (model file, spec); "sandboxed" goes through the worker's runner.
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "sandboxed": ("module", spec("pickled_module", inputs=IMAGE, onnx_consumers=BOTH)),
    "probed": ("probed", spec("pickled_module", inputs=IMAGE, onnx_consumers=["onnx2tf"])),
    "dynamo": ("module", spec("pickled_module", inputs=IMAGE, exporter="dynamo", onnx_consumers=["onnx2tf"])),
    "not_a_module": ("dict", spec("pickled_module", inputs=IMAGE)),
    "without_inputs": ("module", spec("pickled_module")),
    "as_auto": ("module", spec("auto", inputs=IMAGE)),
    "as_state_dict": ("module", spec("state_dict", inputs=IMAGE)),
    "switched_off": ("module", spec("pickled_module", inputs=IMAGE)),
}
ENABLED = {"enable_pickled_module": True}  # what the worker passes when the operator enabled it


def _sandboxed(work: Path, model: Path, case_spec: dict[str, Any]) -> StageRun:
    request = {
        "stage": "export.prepare",
        "inputs": {"model": str(model)},
        "spec": case_spec,
        "options": ENABLED,
        "output_dir": str(work / "out"),
    }
    work.mkdir(parents=True)
    limits = RunLimits(timeout_seconds=600, memory_bytes=4 * 1024**3, threads=1, nice=0)
    outcome = SubprocessRunner().run("torch", "export.prepare", request, work, limits)
    result = {**outcome.result, "isolation": outcome.isolation}
    return StageRun(0 if result.get("ok") else EXIT_STAGE_ERROR, result, (work / "stage.log").read_text(), work / "out")


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the probed module's unpickling writes what it saw."""
    return tmp_path_factory.mktemp("probe") / "probe.json"


def make_probed(out: Path, port: int, probe: Path) -> Path:
    proc = subprocess.run(
        [str(toolchain_python("torch")), "-c", MAKE_PROBED, str(out), str(port), str(probe)],
        capture_output=True,
        text=True,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return Path(json.loads(proc.stdout.strip().splitlines()[-1])["probed"])


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, probe: Path) -> dict[str, StageRun]:
    work = tmp_path_factory.mktemp("pickled-module")
    models = make_torch_models(MAKE_MODELS, work / "models")

    def run(name: str) -> StageRun:
        model, case_spec = CASES[name]
        if name in ("sandboxed", "probed"):
            return _sandboxed(work / name, models[model], case_spec)
        options = {} if name == "switched_off" else ENABLED
        return run_stage("torch", "export.prepare", work / name, {"model": models[model]}, case_spec, options)

    # A listener on the host's loopback, open while the stages run: the probe tries to reach it.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        socket.create_connection(("127.0.0.1", port), timeout=3).close()  # reachable from the host
        models["probed"] = make_probed(work / "models", port, probe)
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            done = dict(zip(CASES, pool.map(run, CASES), strict=True))
    prepared = done["sandboxed"]
    assert prepared.ok, prepared.result
    shared = {"samples": prepared.output("samples"), "reference": prepared.output("reference")}
    litert_spec = spec("pickled_module", inputs=IMAGE, toolchain="litert-torch", layout="nchw")
    convert = run_stage(
        "torch", "convert.litert_torch", work / "convert", {"model": models["module"], **shared}, litert_spec, ENABLED
    )
    done["convert"] = convert
    if convert.ok:
        inputs = {"tflite": convert.output("tflite_float32"), **shared}
        done["validate"] = run_stage("torch", "validate.tflite", work / "validate", inputs, litert_spec)
    return done


def passed(run: StageRun) -> dict[str, Any]:
    """The info of a successful run whose ONNX file matches the PyTorch reference."""
    assert run.returncode == 0, run.result.get("error") or run.log[-3000:]
    assert run.ok, run.result
    metrics = run.result["metrics"]["onnx"]
    assert metrics["verdict"] == "pass", metrics["reasons"]
    info: dict[str, Any] = run.result["info"]
    assert info["output_names"] == list(metrics["outputs"]) == ["output"]
    for name, numbers in metrics["outputs"].items():
        assert numbers["scale"] > 0, name
        assert numbers["max_abs"] <= TOLERANCE * numbers["scale"], (name, numbers)
    assert info["model_format"] == "pickled_module"
    assert info["reference_runtime"] == "pytorch"
    assert info["inputs_source"] == "spec"
    assert info["output_shapes"] == {"output": ["batch", 5]}
    assert info["parameters"] == 3 * 8 * 9 + 8 + 2 * 8 + 8 * 5 + 5
    return info


def assert_error(run: StageRun, code: str, *fragments: str) -> None:
    assert run.returncode == EXIT_STAGE_ERROR, run.log[-2000:]
    assert run.error_code == code, run.result
    for fragment in fragments:
        assert fragment in run.result["error"]["message"], run.result["error"]["message"]


def test_pickled_module_is_unpickled_in_the_sandbox_and_exported(runs: dict[str, StageRun]) -> None:
    run = runs["sandboxed"]
    info = passed(run)
    assert info["exporter"] == "torchscript"
    assert info["opset"] <= 15  # onnx-tf reads it too
    unpickled = info["unpickled"]
    assert unpickled["call"] == "torch.load(path, weights_only=False, map_location='cpu')"
    assert unpickled["code_execution_allowed"] is True
    assert unpickled["class"] == "torch.nn.modules.container.Sequential"
    if not sandbox_available():
        pytest.skip("this host cannot create namespaces (unshare --net --pid): stages run without a sandbox")
    # What the stage itself saw: no network but loopback, no way to gain privileges.
    assert {"network_namespace", "pid_namespace", "no_new_privileges"} <= set(run.result["isolation"])
    assert unpickled["seen_from_inside"] == {"no_new_privileges": True, "network_interfaces": ["lo"]}


def test_code_run_by_unpickling_is_isolated(runs: dict[str, StageRun], probe: Path) -> None:
    # Measured by the pickle's own code as it is loaded, not reported by the stage.
    if not sandbox_available():
        pytest.skip("this host cannot create namespaces (unshare --net --pid): stages run without a sandbox")
    run = runs["probed"]
    assert run.ok, run.result
    assert run.result["info"]["unpickled"]["code_execution_allowed"] is True
    seen = json.loads(probe.read_text())
    assert seen["pid"] < 10, seen  # a PID namespace of its own: the host's pids run far higher
    # The test's listener on the host's loopback, reachable from the host, is not from inside.
    assert seen["network"] != "connected", seen
    assert seen["no_new_privs"] == ["1"], seen


def test_pickled_module_takes_the_dynamo_exporter_too(runs: dict[str, StageRun]) -> None:
    info = passed(runs["dynamo"])
    assert info["exporter"] == "dynamo"
    assert [a["exporter"] for a in info["export_attempts"] if a["ok"]][0] == "dynamo"


def test_a_pickle_that_is_not_a_module_says_what_it_holds(runs: dict[str, StageRun]) -> None:
    assert_error(runs["not_a_module"], "invalid_model", "torch.nn.Module", "builtins.dict", "'state_dict'")


def test_pickled_module_needs_the_inputs_in_the_spec(runs: dict[str, StageRun]) -> None:
    assert_error(runs["without_inputs"], "inputs_required", "spec.inputs", "pickled_module")


@pytest.mark.parametrize("case", ["as_auto", "as_state_dict"])
def test_the_same_file_as_a_state_dict_is_never_unpickled(runs: dict[str, StageRun], case: str) -> None:
    # Only an explicit pickled_module unpickles code: weights_only=True refuses the module's classes.
    assert_error(runs[case], "unsafe_model", "weights_only=True")


def test_litert_torch_converts_the_pickled_module(runs: dict[str, StageRun]) -> None:
    convert = runs["convert"]
    assert convert.ok, convert.result
    assert convert.result["info"]["model_format"] == "pickled_module"
    assert convert.result["info"]["requires_flex"] is False
    metrics = runs["validate"].result["metrics"]["tflite_float32"]
    assert metrics["verdict"] == "pass", metrics["reasons"]
    numbers = metrics["outputs"]["output"]
    assert numbers["max_abs"] <= TOLERANCE * numbers["scale"]
    with np.load(runs["sandboxed"].output("reference")) as reference:
        assert reference["output"].shape[-1] == 5


def test_the_stage_refuses_when_the_operator_switched_it_off(runs: dict[str, StageRun]) -> None:
    # A job accepted while the switch was on, run after it was turned off: nothing unpickled.
    assert_error(runs["switched_off"], "format_disabled", "disabled on this server")
