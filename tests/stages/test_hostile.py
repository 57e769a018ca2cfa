"""export.prepare on hostile and broken uploads: each gets its own stable code, never a crash.

The torch environment writes tiny real files (a TorchScript archive, an ExportedProgram,
a zip-format state dict, ONNX graphs); this module damages them byte by byte: cut in
half, bytes flipped inside a member, a member that inflates far beyond the file or
declares many GB, a PNG or noise in their place, nothing at all. ONNX graphs that
point their weights at an absolute path, at ``..`` or at a symlink point at FIFOs, so
a stage that opened one would be seen (and released) by ``FifoWatch``.

Each case is one stage process; the module fixture runs them side by side.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from stages.kit.contract import EXIT_STAGE_ERROR, MAX_INPUT_ELEMENTS
from tests.support.hostile_files import HUGE_SHAPE, MAKE_MODELS, UNSAFE, WEIGHT_MEMBER, MiB, hostile_files
from tests.support.stage_runner import StageRun, make_torch_models, prepare_spec, run_stage

LINEAR = {"name": "torch.nn.Linear", "kwargs": {"in_features": 64, "out_features": 64}}
ALLOW_NN = {"allowed_architectures": ["torch.nn."]}
FEATURES = [{"name": "x", "shape": ["batch", 64], "dtype": "float32"}]
# How each external-data graph names its weights' file -> the FIFO it leads to.
EXTERNAL = {"absolute": "absolute.bin", "dotdot": "dotdot.bin", "symlink": "symlink-target.bin"}


def spec(model_format: str, **changes: Any) -> dict[str, Any]:
    base = prepare_spec(model_format, validation_samples=2)
    if model_format in ("torchscript", "state_dict"):
        base["inputs"] = FEATURES
    if model_format == "state_dict":
        base["architecture"] = LINEAR
    return {**base, **changes}


# name -> (file, spec); every file is one hostile_files() writes or the model script wrote.
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "torchscript_truncated": ("torchscript_truncated", spec("torchscript")),
    "program_truncated": ("program_truncated", spec("exported_program")),
    "state_dict_truncated": ("state_dict_truncated", spec("state_dict")),
    "torchscript_flipped": ("torchscript_flipped", spec("torchscript")),
    "program_flipped": ("program_flipped", spec("exported_program")),
    "state_dict_flipped": ("state_dict_flipped", spec("state_dict")),
    "state_dict_bomb": ("state_dict_bomb", spec("state_dict")),
    "torchscript_64gib": ("torchscript_64gib", spec("torchscript")),
    "png_as_torchscript": ("png", spec("torchscript")),
    "png_as_onnx": ("png", spec("onnx")),
    "noise_as_onnx": ("noise", spec("onnx")),
    "empty_torchscript": ("empty", spec("torchscript")),
    "empty_onnx": ("empty", spec("onnx")),
    "onnx_truncated": ("onnx_truncated", spec("onnx")),
    "onnx_huge_input": ("onnx_huge_input", spec("onnx")),
    "torchscript_huge_spec_input": (
        "torchscript",
        spec("torchscript", inputs=[{"name": "x", "shape": HUGE_SHAPE, "dtype": "float32"}]),
    ),
    **{f"onnx_external_{case}": (f"onnx_external_{case}", spec("onnx")) for case in EXTERNAL},
    **{case: (case, spec("state_dict")) for case in (*UNSAFE, "pickle_p4_harmless")},
}


class FifoWatch:
    """Sees any process open one of these FIFOs to read (it would block there), and releases it.

    Opening a FIFO's write end without blocking succeeds only while a reader has it open.
    """

    def __init__(self, fifos: list[Path]) -> None:
        self.fifos = fifos
        self.opened: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(0.02):
            for fifo in self.fifos:
                try:
                    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                except OSError:  # ENXIO: nobody is reading
                    continue
                self.opened.add(fifo.name)
                os.close(fd)  # the reader sees end of file and goes on

    @contextmanager
    def running(self) -> Iterator[FifoWatch]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()


def external_data_targets(model_dir: Path) -> list[Path]:
    """The FIFOs the external-data graphs name (absolute, through ``..``, through a symlink)."""
    secret = model_dir.parent / "secret"
    secret.mkdir()
    fifos = [secret / name for name in EXTERNAL.values()]
    for fifo in fifos:
        os.mkfifo(fifo)
    (model_dir / "weights.link").symlink_to(secret / EXTERNAL["symlink"])
    return fifos


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("hostile-models")
    real = make_torch_models(MAKE_MODELS, out / "real")
    return {**real, **hostile_files(real, out / "hostile")}


@pytest.fixture(scope="module")
def watch(models: dict[str, Path]) -> FifoWatch:
    return FifoWatch(external_data_targets(models["onnx_external_absolute"].parent))


@pytest.fixture(scope="module")
def runs(models: dict[str, Path], watch: FifoWatch, tmp_path_factory: pytest.TempPathFactory) -> dict[str, StageRun]:
    work = tmp_path_factory.mktemp("hostile")

    def run(name: str) -> StageRun:
        model, case_spec = CASES[name]
        return run_stage("torch", "export.prepare", work / name, {"model": models[model]}, case_spec, ALLOW_NN)

    with watch.running(), ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return dict(zip(CASES, pool.map(run, CASES), strict=True))


def assert_error(run: StageRun, code: str, *fragments: str) -> str:
    assert run.returncode == EXIT_STAGE_ERROR, run.log[-2000:]
    assert run.error_code == code, run.result
    message: str = run.result["error"]["message"]
    for fragment in fragments:
        assert fragment in message, message
    return message


@pytest.mark.parametrize("kind", ["torchscript", "program", "state_dict"])
def test_truncated_archives_are_corrupt(runs: dict[str, StageRun], kind: str) -> None:
    assert_error(runs[f"{kind}_truncated"], "corrupt_archive", "damaged", "Upload the file torch saved again")


@pytest.mark.parametrize("kind", ["torchscript", "program", "state_dict"])
def test_flipped_bytes_fail_the_members_checksum(runs: dict[str, StageRun], kind: str) -> None:
    # torch itself would load these weights as they are (the CRC is never checked).
    assert_error(runs[f"{kind}_flipped"], "corrupt_archive", "Bad CRC-32", WEIGHT_MEMBER[kind].lstrip("/"))


def test_a_member_inflating_far_beyond_the_file_is_refused(runs: dict[str, StageRun]) -> None:
    message = assert_error(runs["state_dict_bomb"], "archive_too_large", "declare", "unpacked")
    assert str(128 * MiB) in message


def test_a_member_declaring_many_gigabytes_is_refused(runs: dict[str, StageRun]) -> None:
    message = assert_error(runs["torchscript_64gib"], "archive_too_large", "/data/0")
    assert str(64 * 1024 * MiB) in message


@pytest.mark.parametrize(
    ("case", "fragment"),
    [
        ("png_as_torchscript", "not a TorchScript archive"),
        ("png_as_onnx", "not an ONNX model"),
        ("noise_as_onnx", "not an ONNX model"),
        ("onnx_truncated", "not an ONNX model"),
    ],
)
def test_foreign_or_cut_files_are_invalid_models(runs: dict[str, StageRun], case: str, fragment: str) -> None:
    assert_error(runs[case], "invalid_model", fragment)


@pytest.mark.parametrize("case", ["empty_torchscript", "empty_onnx"])
def test_empty_files(runs: dict[str, StageRun], case: str) -> None:
    assert_error(runs[case], "empty_model", "0 bytes")


def test_an_onnx_graph_declaring_an_absurd_input_is_refused(runs: dict[str, StageRun]) -> None:
    assert_error(runs["onnx_huge_input"], "input_too_large", "'x'", str(HUGE_SHAPE), str(MAX_INPUT_ELEMENTS))


def test_a_huge_spec_input_is_refused_by_the_stage_too(runs: dict[str, StageRun]) -> None:
    # The control plane refuses this spec at submission; a stage must not trust that.
    assert_error(runs["torchscript_huge_spec_input"], "input_too_large", str(HUGE_SHAPE))


@pytest.mark.parametrize(
    ("case", "fragment"),
    [
        ("absolute", "(an absolute path)"),
        ("dotdot", "(a path outside the model's folder)"),
        ("symlink", "'weights.link'"),
    ],
)
def test_onnx_external_data_is_refused_without_opening_it(
    runs: dict[str, StageRun], watch: FifoWatch, case: str, fragment: str
) -> None:
    assert_error(runs[f"onnx_external_{case}"], "onnx_external_data", fragment, "re-save")
    assert EXTERNAL[case] not in watch.opened


@pytest.mark.parametrize("case", list(UNSAFE))
def test_a_pickle_that_would_run_code_is_unsafe_and_never_runs(
    runs: dict[str, StageRun], models: dict[str, Path], case: str
) -> None:
    # Straight to the stage, past the API's scan: torch's weights-only refusal is named.
    call, _ = UNSAFE[case]
    where = "'linear/data.pkl'" if case.startswith("archive") else "the file"
    assert_error(runs[case], "unsafe_model", "would run code", f"imports {call} (in {where}", "weights_only=True")
    assert not (models[case].parent / f"pwned-{case}").exists()


def test_a_pickle_torch_cannot_read_but_harmless_is_an_invalid_model(runs: dict[str, StageRun]) -> None:
    message = assert_error(runs["pickle_p4_harmless"], "invalid_model", "not a PyTorch state dict")
    assert "Unsupported operand 149" in message
