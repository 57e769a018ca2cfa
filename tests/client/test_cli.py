"""The modelport command: flags to spec, the report table, exit statuses, and the commands against the
real API (no workers, so jobs stay queued), in-process."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from modelport.cli import build_parser, main
from modelport.cli.render import missed, report_notes, report_table
from modelport.cli.spec import build_spec, input_argument
from tests.client.conftest import SPEC

REPORT: dict[str, Any] = {
    "verdict": "pass",
    "reasons": [],
    "artifacts": [
        {
            "name": "model_float32.tflite",
            "precision": "float32",
            "toolchain": "onnx2tf",
            "size": 2_900_000,
            "verdict": "pass",
            "reasons": [],
            "outputs": {
                "logits": {"max_abs": 2.5e-6, "mean_abs": 4e-7, "scale": 10.0, "cosine": 1.0, "top1_agreement": 1.0},
                "aux": {"max_abs": 1e-6, "mean_abs": 9e-7, "scale": 0.5, "cosine": 0.99999},
            },
            "latency_ms": {"median_1_thread": 1.234, "median_all_threads": 0.9, "runs": 20},
        },
        {
            "name": "model_int8.tflite",
            "precision": "int8",
            "toolchain": "ai-edge-quantizer",
            "size": 800_000,
            "verdict": "fail",
            "reasons": ["output 'logits': min cosine similarity 0.8 is below 0.99"],
            "outputs": {"logits": {"max_abs": 0.7, "mean_abs": 0.1, "scale": 10.0, "cosine": 0.8}},
            "min_cosine": 0.8,
            "top1_agreement": 0.75,
            "latency_ms": {"median_1_thread": 0.5},
        },
    ],
    "precisions": {
        "float32": {"status": "produced", "artifact": "model_float32.tflite", "verdict": "pass"},
        "float16": {"status": "not_produced", "code": "quantization_failed", "reason": "the quantizer crashed"},
    },
}


def convert_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["convert", "model.pth", *argv])


def test_flags_become_the_spec() -> None:
    args = convert_args(
        "--arch", "resnet18", "--arch-kwargs", '{"num_classes": 10}', "--input", "1x3x224x224",
        "--quant", "float32,int8", "--targets", "onnx,tflite", "--toolchain", "best", "--int8-io",
        "--tolerance", "float32=1e-3",
    )  # fmt: skip
    assert build_spec(args) == {
        "architecture": {"name": "torchvision.models.resnet18", "kwargs": {"num_classes": 10}},
        "inputs": [{"name": "input", "shape": [1, 3, 224, 224], "dtype": "float32"}],
        "targets": ["onnx", "tflite"],
        "quantization": ["float32", "int8"],
        "toolchain": "best",
        "tolerance": {"float32": 1e-3},
        "int8_io": True,
    }
    # Nothing given: the server's defaults (format sniffed, inputs read from the file).
    assert build_spec(convert_args()) == {}
    # --spec is the base; flags win; several inputs are named in order unless named.
    args = convert_args("--spec", '{"targets": ["onnx"], "seed": 3}', "--targets", "tflite",
                        "--input", "1x8", "--input", "mask=1,8:bool")  # fmt: skip
    assert build_spec(args) == {
        "targets": ["tflite"],
        "seed": 3,
        "inputs": [
            {"name": "input_0", "shape": [1, 8], "dtype": "float32"},
            {"name": "mask", "shape": [1, 8], "dtype": "bool"},
        ],
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1x3x224x224", {"shape": [1, 3, 224, 224], "dtype": "float32"}),
        ("ids=batchx128:int64", {"name": "ids", "shape": ["batch", 128], "dtype": "int64"}),
        ("max_len=1,max_len:int32", {"name": "max_len", "shape": [1, "max_len"], "dtype": "int32"}),
    ],
)
def test_input_argument(text: str, expected: dict[str, Any]) -> None:
    assert input_argument(text) == expected


@pytest.mark.parametrize("text", ["", "1x0x3", "1x3:complex64", "1x-3", "a b"])
def test_input_argument_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        input_argument(text)


def render(renderable: Any) -> str:
    from rich.console import Console

    console = Console(width=200, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(renderable)
    return console.export_text()


def test_report_table_shows_each_artifacts_numbers() -> None:
    text = render(report_table(REPORT))
    rows = {line.split("│")[1].strip(): line for line in text.splitlines() if "model_" in line}
    assert set(rows) == {"model_float32.tflite", "model_int8.tflite"}
    f32 = [cell.strip() for cell in rows["model_float32.tflite"].split("│")[1:-1]]
    # artifact, toolchain, size, max abs, max/scale (the worst output's: aux 1e-6/0.5), mean abs, cosine, top-1,
    # latency, verdict
    assert f32 == ["model_float32.tflite", "onnx2tf", "2.9 MB", "2.5e-06", "2e-06", "9e-07", "0.99999", "100%", "1.23",
                   "pass"]  # fmt: skip
    int8 = [cell.strip() for cell in rows["model_int8.tflite"].split("│")[1:-1]]
    assert int8[6:] == ["0.8", "75%", "0.50", "fail"]
    notes = [note.plain for note in report_notes(REPORT)]
    assert notes == [
        "model_int8.tflite: output 'logits': min cosine similarity 0.8 is below 0.99",
        "float16: not produced (quantization_failed): the quantizer crashed",
    ]
    assert missed(REPORT) == ["model_int8.tflite", "float16 (not produced)"]
    # A failed report's reasons follow, without repeating an artifact's own.
    failed = {**REPORT, "verdict": "fail", "reasons": [notes[0], "target 'onnx' was not produced at float32"]}
    assert [note.plain for note in report_notes(failed)] == [*notes, "job: target 'onnx' was not produced at float32"]


def test_help_has_examples_and_server_commands() -> None:
    result = subprocess.run([sys.executable, "-m", "modelport", "--help"], capture_output=True, text=True, check=True)
    assert "modelport convert resnet18.pth --arch torchvision.models.resnet18" in result.stdout
    assert "server commands" in result.stdout
    result = subprocess.run(
        [sys.executable, "-m", "modelport", "convert", "--help"], capture_output=True, text=True, check=True
    )
    assert "--calibration" in result.stdout
    assert (
        "Exits 1 when the job failed, an artifact missed its tolerance, or a requested precision was not produced"
        in result.stdout
    )


def test_the_server_script_runs_server_commands_and_hands_the_rest_to_the_client(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'm.db'}", "MODELPORT_DATA_DIR": str(tmp_path), "PATH": "/usr/bin"}
    script = "import sys; from app.cli import entry; sys.exit(entry(sys.argv[1:]))"
    client = subprocess.run([sys.executable, "-c", script, "--help"], capture_output=True, text=True, check=True)
    assert "modelport convert resnet18.pth" in client.stdout
    alone = subprocess.run([sys.executable, "-m", "modelport", "migrate"], capture_output=True, text=True, check=False)
    assert alone.returncode == 2
    assert "a server command" in alone.stderr
    result = subprocess.run(
        [sys.executable, "-c", script, "migrate"], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "migrations: at head"
    assert (tmp_path / "m.db").stat().st_size > 0


def test_commands_against_the_api(api_env: str, plain_state_dict: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec_file = plain_state_dict.with_name("spec.json")
    spec_file.write_text(json.dumps(SPEC))
    # A spec the shared schema refuses is refused before the upload: exit 2, the field named, no job.
    for flags, field in (
        (["--quant", "float32,int4"], "quantization.1"),
        (["--input", "100000x100000x100000"], "inputs.0.shape"),
    ):
        status = main(["convert", str(plain_state_dict), "--spec", f"@{spec_file}", *flags])
        captured = capsys.readouterr()
        assert status == 2
        assert "invalid_spec (checked before the upload)" in captured.err
        assert field in captured.err
        assert "upload" not in captured.err.replace("before the upload", "")
    assert main(["jobs", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    # What only the server knows (its allow-list) is its 422, with the problem's code.
    status = main(["convert", str(plain_state_dict), "--spec", f"@{spec_file}", "--arch", "os.system"])
    captured = capsys.readouterr()
    assert status == 2
    assert "422 architecture_not_allowed" in captured.err

    # A job nobody runs: convert gives up at --timeout (exit 3) and says how to follow it.
    status = main(["convert", str(plain_state_dict), "--spec", f"@{spec_file}", "--timeout", "0.5",
                   "--poll-interval", "0.1", "--out", str(plain_state_dict.parent / "out")])  # fmt: skip
    captured = capsys.readouterr()
    assert status == 3
    job_id = captured.err.split("job ", 1)[1].split()[0]
    assert f"job {job_id} is still queued after 0.5 s" in captured.err

    assert main(["jobs", "--status", "queued"]) == 0
    assert job_id in capsys.readouterr().out
    assert main(["status", job_id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "queued"
    assert main(["report", job_id]) == 2
    assert "409 report_not_ready" in capsys.readouterr().err
    assert main(["cancel", job_id]) == 0
    assert f"job {job_id}: cancelled" in capsys.readouterr().err
    assert main(["cancel", job_id]) == 2
    assert "409 job_finished" in capsys.readouterr().err
    assert main(["status", job_id]) == 0
    assert "cancelled" in capsys.readouterr().out
    assert main(["toolchains"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("torch", "onnx-tf", "onnx2tf"))
    # A wrong key from the flag overrides the environment's.
    assert main(["jobs", "--api-key", "wrong"]) == 2
    assert "401 invalid_api_key" in capsys.readouterr().err
    # Nothing listens there: exit 3.
    assert main(["--url", "http://127.0.0.1:9", "jobs"]) == 3
    assert "cannot reach the service" in capsys.readouterr().err


def test_a_failed_jobs_message_is_printed_once() -> None:
    """The failed stage's line, the job's error and the stage log's tail all carry the message; the CLI
    prints it once (it printed the same state_dict_mismatch message three times)."""
    from io import StringIO

    from rich.console import Console

    from modelport.cli.commands import describe_failure, follow_line
    from modelport.schemas.job import JobOut

    message = "the state dict does not fit torchvision.models.resnet18: 2 missing keys (fc.weight, fc.bias)"
    error = {"code": "state_dict_mismatch", "message": message, "stage": "export_onnx"}
    stage = {"name": "export_onnx", "toolchain": "torch", "state": "failed", "seconds": 1.5, "attempts": 1,
             "started_at": None, "finished_at": None, "error": error}  # fmt: skip
    now = "2026-12-01T10:00:00Z"
    info = JobOut.model_validate(
        {
            "id": "j1", "status": "failed", "stage": None, "stages": [stage], "model": {}, "spec": {},
            "error": {**error, "log_tail": f"loading the state dict\nERROR {message}\nstage failed"},
            "created_at": now, "updated_at": now, "started_at": now, "finished_at": now,
            "links": {"self": "", "artifacts": "", "report": "", "cancel": ""},
        }
    )  # fmt: skip
    console = Console(file=StringIO(), width=300, highlight=False)
    console.print(follow_line(info.stages[0]))
    describe_failure(info, console)
    printed = console.file.getvalue()  # type: ignore[attr-defined]
    assert printed.count(message) == 1, printed
    assert "job j1 failed in export_onnx: state_dict_mismatch" in printed
    assert "loading the state dict" in printed  # the rest of the log tail stays
    # Without a stage line that gave it (a job error outside any stage), the message is printed.
    console = Console(file=StringIO(), width=300, highlight=False)
    describe_failure(info.model_copy(update={"stages": []}), console)
    assert console.file.getvalue().count(message) == 1  # type: ignore[attr-defined]


def test_run_on_a_taken_port_says_so_before_starting_anything(tmp_path: Path) -> None:
    script = "import sys; from app.cli import entry; sys.exit(entry(sys.argv[1:]))"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            "PATH": os.environ["PATH"],
            "PORT": str(port),
            "MODELPORT_DATA_DIR": str(tmp_path),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'm.db'}",
        }
        result = subprocess.run(
            [sys.executable, "-c", script, "run"], capture_output=True, text=True, env=env, timeout=60, check=False
        )
    assert result.returncode == 1, result.stderr
    assert f"port {port} is already in use" in result.stderr
    assert "PORT=<port> make run" in result.stderr
    assert "[run] starting" not in result.stdout  # no Redis, no worker was started and stopped


def test_the_command_without_a_key_names_its_own_flag(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "MODELPORT_URL": "http://127.0.0.1:9"}
    result = subprocess.run(
        [sys.executable, "-m", "modelport", "jobs"], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 2
    assert "pass --api-key KEY or set MODELPORT_API_KEY" in result.stderr
    assert "api_key=" not in result.stderr
