"""convert.onnx2tf runs onnx2tf in a fork of the stage process (``stages.kit.forked_cli``), not
in a fresh interpreter: under the warm runner no ``python -m onnx2tf`` process appears, the
fork sees what its stage process had loaded, a crash or failure of the tool is still
``conversion_failed`` with its reason, and a stage killed on timeout takes its fork along."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from domain.toolchains import stages_pythonpath
from worker.runner import RunLimits, StageFailure, SubprocessRunner
from worker.warm import WarmRunner

LIMITS = RunLimits(timeout_seconds=300, memory_bytes=None, threads=1, nice=0)
ONNX2TF_MODULES = {"onnx2tf", "stages.convert.onnx2tf_launch"}


@pytest.fixture(scope="module")
def warm() -> Iterator[WarmRunner]:
    runner = WarmRunner()
    yield runner
    runner.close()


class Descendants(threading.Thread):
    """Every process below this test process seen while it runs (polled every 20 ms):
    pid -> (ppid, cmdline, cwd)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.seen: dict[int, tuple[int, list[str], str]] = {}
        self._done = threading.Event()

    def run(self) -> None:
        me = psutil.Process()
        while not self._done.is_set():
            for proc in me.children(recursive=True):
                try:
                    self.seen.setdefault(proc.pid, (proc.ppid(), proc.cmdline(), proc.cwd()))
                except psutil.Error:
                    continue
            time.sleep(0.02)

    def __enter__(self) -> Descendants:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self.join(timeout=5)


def gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.Error:
            return True
        time.sleep(0.05)
    return False


def test_warm_onnx2tf_runs_in_a_fork_not_a_new_interpreter(
    warm: WarmRunner, tmp_path: Path, squeezenet_pth: Path
) -> None:
    from tests.support.stage_runner import ALLOW_TORCHVISION, image_spec

    spec = image_spec("torchvision.models.squeezenet1_1", toolchain="onnx2tf")

    def stage(toolchain: str, entry: str, inputs: dict[str, Path], options: Any):  # type: ignore[no-untyped-def]
        workdir = tmp_path / entry
        request = {
            "stage": entry,
            "inputs": {key: str(path) for key, path in inputs.items()},
            "spec": spec,
            "options": options,
            "output_dir": str(workdir / "out"),
        }
        workdir.mkdir()
        outcome = warm.run(toolchain, entry, request, workdir, LIMITS)
        assert outcome.result["ok"], (outcome.result, (workdir / "stage.log").read_text()[-3000:])
        assert "warm_fork" in outcome.isolation
        return outcome

    prepared = stage("torch", "export.prepare", {"model": squeezenet_pth}, ALLOW_TORCHVISION)
    out = tmp_path / "export.prepare" / "out"
    inputs = {name: out / prepared.result["outputs"][name] for name in ("onnx", "samples", "reference")}
    server = warm.server("onnx2tf", LIMITS)
    assert server is not None
    with Descendants() as watch:
        converted = stage("onnx2tf", "convert.onnx2tf", inputs, {})
    assert converted.result["info"]["converter"]["command"][:3] == ["python", "-m", "onnx2tf"]

    def module_of(cmdline: list[str]) -> str | None:
        return cmdline[cmdline.index("-m") + 1] if "-m" in cmdline[:-1] else None

    stage_pids = {pid for pid, (ppid, _, _) in watch.seen.items() if ppid == server.proc.pid}
    assert len(stage_pids) == 1
    forks = [
        pid for pid, (ppid, cmdline, _) in watch.seen.items() if ppid in stage_pids and cmdline == server.proc.args
    ]
    assert len(forks) >= 1  # the onnx2tf attempt: a fork of the stage, so the warm parent's command line
    interpreters = [cmdline for _, cmdline, _ in watch.seen.values() if module_of(cmdline) in ONNX2TF_MODULES]
    assert interpreters == []  # no python -m onnx2tf (or its launcher) was started
    assert "Float32 tflite output complete!" in (tmp_path / "convert.onnx2tf" / "stage.log").read_text()


DRIVER = """
import json, os, sys
from pathlib import Path
from typing import Any
from stages.convert.onnx2tf import _run_onnx2tf
from stages.kit.contract import StageError

json.marker = os.getpid()  # what the stage process has loaded, as a warm parent's preload
answers = {}
for mode in sys.argv[2:]:
    work = Path(sys.argv[1]) / mode
    work.mkdir()
    try:
        log = _run_onnx2tf(work, [mode], "tests.support.fake_onnx2tf")
        answers[mode] = {"log": log, "found": json.loads(log.split("FOUND ", 1)[1].splitlines()[0])}
    except StageError as exc:
        answers[mode] = {"code": str(exc.code), "message": exc.message}
answers["stage"] = {"pid": os.getpid(), "cwd": os.getcwd(), "tqdm_disable": os.environ.get("TQDM_DISABLE")}
print("ANSWERS " + json.dumps(answers))
"""


def test_the_tool_runs_forked_and_its_failures_are_conversion_failed(tmp_path: Path) -> None:
    modes = ["write", "abort", "exit", "raise", "nothing"]
    env = {**os.environ, "PYTHONPATH": stages_pythonpath()}
    env.pop("TQDM_DISABLE", None)
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, str(tmp_path), *modes],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    answers = json.loads(proc.stdout.rsplit("ANSWERS ", 1)[1])
    stage = answers["stage"]

    found = answers["write"]["found"]
    assert found["marker"] == stage["pid"]  # a fork of the stage process, not a fresh interpreter
    assert found["ppid"] == stage["pid"]
    assert found["argv"] == ["write"]
    assert found["cwd"] == str(tmp_path / "write")
    assert found["path0"] == str(Path(sys.executable).parent)  # the env's bin first (onnxsim)
    assert found["tqdm_disable"] == "1"
    assert "\x1b[" not in answers["write"]["log"]
    assert "coloured" in answers["write"]["log"]
    assert stage["cwd"] == str(tmp_path)  # the stage's own working directory and environment are untouched
    assert stage["tqdm_disable"] is None
    assert "fake onnx2tf: write" in proc.stdout  # the tool's output is in the stage log

    for mode in ("abort", "exit", "raise", "nothing"):
        assert answers[mode]["code"] == "conversion_failed", answers[mode]
    assert answers["abort"]["message"].startswith("onnx2tf was killed by signal SIGABRT.")
    assert "(exit 3): ERROR: the stand-in gives up on this model." in answers["exit"]["message"]
    assert "(exit 1): RuntimeError: the stand-in broke." in answers["raise"]["message"]
    assert "(exit 0): fake onnx2tf: nothing." in answers["nothing"]["message"]
    assert "onnx-tf" in answers["exit"]["message"]  # the advice follows the reason


@pytest.mark.parametrize(("kind", "sandbox"), [("cold", True), ("cold", False), ("warm", True)])
def test_a_timed_out_stage_takes_its_fork_along(warm: WarmRunner, tmp_path: Path, kind: str, sandbox: bool) -> None:
    """Without namespaces the cold stage's PID namespace does not end the fork: its process
    group and PR_SET_PDEATHSIG must."""
    runner = SubprocessRunner() if kind == "cold" else warm
    out = tmp_path / "out"
    request = {
        "stage": "selftest.fork_sleep",
        "inputs": {},
        "spec": {},
        "options": {"seconds": 60},
        "output_dir": str(out),
    }
    # 6 s: a cold stage on a loaded machine (the suite's other process converting) must have
    # forked before the limit; with 3 s the fork was once never seen.
    limits = RunLimits(timeout_seconds=6, memory_bytes=None, threads=1, nice=0, sandbox=sandbox)
    started = time.monotonic()
    with Descendants() as watch, pytest.raises(StageFailure) as failure:
        runner.run("torch", "selftest.fork_sleep", request, tmp_path, limits)
    assert failure.value.code == "timeout"
    assert time.monotonic() - started < 20  # the fork sleeps 60 s: it was stopped, not waited for
    forks = [pid for pid, (_, _, cwd) in watch.seen.items() if cwd == str(out)]
    assert len(forks) == 1  # the fork sleeping in python -m timeit, in the stage's output directory
    assert gone(forks[0], within=3)
