"""End to end: real HTTP, real Celery workers on Redis, real converters, real PostgreSQL."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from modelport.schemas.report import Report
from tests.support.stack import Service, running_service
from tests.support.toolchain import run_script, torch_script

pytestmark = pytest.mark.e2e

SQUEEZENET = {
    "architecture": {"name": "torchvision.models.squeezenet1_1", "kwargs": {"num_classes": 10}},
    "inputs": [{"name": "input", "shape": [1, 3, 64, 64], "dtype": "float32"}],
}
MOBILENET = {
    "architecture": {"name": "torchvision.models.mobilenet_v2", "kwargs": {"num_classes": 7}},
    "inputs": [{"name": "image", "shape": [1, 3, 32, 32], "dtype": "float32"}],
    "validation_samples": 3,
}
ARTIFACTS = {"model.onnx", "saved_model.zip", "model_float32.tflite"}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("e2e")) as running:
        yield running


@pytest.fixture(scope="module")
def mobilenet_pth(models_dir: Path) -> Path:
    path = models_dir / "mobilenet7.pth"
    torch_script("state_dict", "mobilenet_v2", str(path), "--kwargs", '{"num_classes": 7}', "--wrap", "checkpoint")
    return path


RUNNERS = {".onnx": "run_onnx", ".tflite": "run_tflite", ".ts": "run_torchscript"}


def independent_error(artifact: Path, inputs: Path, reference: np.ndarray, toolchain: str = "onnx-tf") -> float:
    """max |ours - reference| of the artifact run by us on ``inputs``: onnxruntime, LiteRT or
    TorchScript in the torch env, a SavedModel's serving_default in the TensorFlow of the
    environment that wrote it (``toolchain``: onnx-tf's 2.15 or onnx2tf's 2.21)."""
    out = artifact.with_name(artifact.name + ".ours.npz")
    if artifact.suffix == ".zip":
        run_script(toolchain, "tf_models.py", "run_saved_model", str(artifact), str(inputs), str(out))
    else:
        torch_script(RUNNERS[artifact.suffix], str(artifact), str(inputs), str(out))
    ours = np.load(out)["output"]
    assert ours.shape == reference.shape, (artifact.name, ours.shape, reference.shape)
    return float(np.abs(ours - reference).max())


def assert_same_error(reported: float, ours: float, name: str) -> None:
    """The report's max_abs is the error we measure ourselves (a stage reporting 0.0, or
    another file's numbers, fails this)."""
    assert reported == pytest.approx(ours, rel=0.05), (name, reported, ours)
    if ours > 0:
        assert reported > 0, (name, reported, ours)


def test_state_dict_to_validated_tflite(service: Service, squeezenet_pth: Path, tmp_path: Path) -> None:
    samples = np.random.default_rng(1).random((4, 1, 3, 64, 64), dtype=np.float32)
    np.save(tmp_path / "inputs.npy", samples)
    job = service.submit(squeezenet_pth, SQUEEZENET, inputs=tmp_path / "inputs.npy")
    assert job["status"] in ("queued", "running")

    final = service.wait(job["id"])
    assert final["status"] == "succeeded", final["error"]
    assert final["error"] is None
    assert final["stage"] is None
    states = {s["name"]: s["state"] for s in final["stages"]}
    # auto: the first candidate (onnx2tf) passed with its .tflite and its SavedModel, so
    # the later ones are skipped, onnx-tf (the other SavedModel candidate) too.
    assert states == {
        "export_onnx": "succeeded",
        "convert_onnx2tf": "succeeded",
        "validate_onnx2tf": "succeeded",
        "validate_flex_onnx2tf": "skipped",
        "convert_litert_torch": "skipped",
        "validate_litert_torch": "skipped",
        "validate_flex_litert_torch": "skipped",
        "convert_onnx_tf": "skipped",
        "validate_onnx_tf": "skipped",
        "validate_flex_onnx_tf": "skipped",
        "report": "succeeded",
    }
    reasons = {s["name"]: s["skipped_reason"] for s in final["stages"] if s["state"] == "skipped"}
    # Its .tflite has builtin ops only: no second validation in TensorFlow's interpreter.
    assert reasons.pop("validate_flex_onnx2tf") == "builtin ops only: stock LiteRT validated it"
    assert all(reason.startswith("auto: an earlier candidate") for reason in reasons.values()), reasons
    assert all(s["seconds"] is not None for s in final["stages"] if s["state"] == "succeeded")

    listed = service.client.get(f"/v1/jobs/{job['id']}/artifacts").json()
    assert {a["name"] for a in listed} == ARTIFACTS
    files: dict[str, Path] = {}
    for artifact in listed:
        response = service.client.get(f"/v1/jobs/{job['id']}/artifacts/{artifact['name']}")
        assert response.status_code == 200
        assert len(response.content) == artifact["size"]
        assert hashlib.sha256(response.content).hexdigest() == artifact["sha256"]
        files[artifact["name"]] = tmp_path / artifact["name"]
        files[artifact["name"]].write_bytes(response.content)
    assert files["saved_model.zip"].read_bytes()[:2] == b"PK"

    report = service.client.get(f"/v1/jobs/{job['id']}/report").json()
    assert report["verdict"] == "pass", report["reasons"]
    assert report["validation"]["samples"] == 4
    assert report["validation"]["source"] == "uploaded"
    entries = {a["name"]: a for a in report["artifacts"]}
    assert set(entries) == ARTIFACTS
    assert all(e["verdict"] == "pass" for e in entries.values())

    # Our own PyTorch, onnxruntime and LiteRT runs on the same samples agree with the report.
    torch_script(
        "reference",
        "squeezenet1_1",
        str(squeezenet_pth),
        str(tmp_path / "inputs.npy"),
        str(tmp_path / "ref.npz"),
        "--kwargs",
        '{"num_classes": 10}',
    )
    reference = np.load(tmp_path / "ref.npz")["output"]
    scale = float(np.abs(reference).max())
    for name in ("model.onnx", "model_float32.tflite", "saved_model.zip"):
        ours = independent_error(files[name], tmp_path / "inputs.npy", reference, entries[name]["toolchain"])
        assert ours <= 1e-4 * scale, (name, ours, scale)
        (reported,) = entries[name]["outputs"].values()
        assert reported["scale"] == pytest.approx(scale, rel=1e-5)
        assert_same_error(reported["max_abs"], ours, name)
        assert reported["top1_agreement"] == 1.0
    tflite = entries["model_float32.tflite"]
    # auto: the first candidate that passes with builtin ops wins; the SavedModel too is
    # the first SavedModel candidate's that passes (onnx2tf's).
    attempts = {a["toolchain"]: a for a in report["attempts"]}
    assert attempts[tflite["toolchain"]]["chosen"] is True
    assert [a["toolchain"] for a in report["attempts"] if a["chosen"]] == [tflite["toolchain"]]
    assert entries["saved_model.zip"]["toolchain"] == "onnx2tf"
    saved_attempts = {a["toolchain"]: a["outcome"] for a in report["saved_model_attempts"]}
    assert saved_attempts["onnx2tf"] == "chosen"
    assert saved_attempts["onnx-tf"].startswith("skipped: auto: an earlier")
    assert tflite["requires_flex"] is False
    assert tflite["latency_ms"]["median_1_thread"] > 0
    assert tflite["operators"]["builtin"]
    assert not tflite["operators"]["flex"]


def test_failed_stage_is_named_and_the_worker_goes_on(service: Service, mobilenet_pth: Path) -> None:
    wrong = {
        **MOBILENET,
        "architecture": {"name": "torchvision.models.mobilenet_v2", "kwargs": {"num_classes": 3}},
    }
    bad = service.submit(mobilenet_pth, wrong)
    good = service.submit(mobilenet_pth, MOBILENET)

    failed = service.wait(bad["id"])
    assert failed["status"] == "failed"
    assert failed["error"]["stage"] == "export_onnx"
    assert failed["error"]["code"] == "state_dict_mismatch"
    assert "classifier" in failed["error"]["message"]
    assert failed["error"]["log_tail"]
    states = [(s["name"], s["state"]) for s in failed["stages"]]
    assert states[0] == ("export_onnx", "failed")
    assert {state for _, state in states[1:]} == {"skipped"}
    log = service.client.get(f"/v1/jobs/{bad['id']}/logs/export_onnx")
    assert log.status_code == 200
    # The stage's own log holds the failure, its code and what to fix.
    assert "state_dict_mismatch" in log.text, log.text[-2000:]
    assert "classifier" in log.text

    done = service.wait(good["id"])
    assert done["status"] == "succeeded", done["error"]
    report = service.client.get(f"/v1/jobs/{good['id']}/report").json()
    assert [o["name"] for o in report["outputs"]] == ["output"]
    assert report["inputs"][0]["name"] == "image"
    assert report["outputs"][0]["shape"] == [1, 7]


def test_the_report_is_served_as_stored_and_matches_its_model(service: Service, mobilenet_pth: Path) -> None:
    spec = {**MOBILENET, "targets": ["onnx", "tflite"], "toolchain": "onnx2tf"}
    job = service.wait(service.submit(mobilenet_pth, spec)["id"])
    assert job["status"] == "succeeded", job["error"]
    served = service.client.get(f"/v1/jobs/{job['id']}/report")
    assert served.status_code == 200, served.text
    stored = (service.stack.data_dir / "objects" / "jobs" / job["id"] / "report.json").read_bytes()
    assert served.content == stored
    raw = json.loads(stored)
    report = Report.model_validate(raw)
    # The model reads every field and keeps the ones it does not name.
    assert report.model_dump(mode="json", exclude_unset=True) == raw
    assert report.verdict == "pass"
    assert report.job_id == job["id"]
    assert [(a.name, a.toolchain, a.verdict) for a in report.artifacts] == [
        ("model.onnx", "torch", "pass"),
        ("model_float32.tflite", "onnx2tf", "pass"),
    ]
    assert report.artifacts[1].signature is not None
    assert report.artifacts[1].signature["layout"] == "nchw"
    assert report.artifacts[0].outputs["output"].max_abs is not None
    assert [(a.toolchain, a.outcome) for a in report.attempts] == [("onnx2tf", "chosen")]
    assert report.precisions["float32"].status == "produced"
    assert [s.name for s in report.stages][0] == "export_onnx"
    assert report.stages[-1].name == "report"


def test_code_in_a_pickle_never_runs(service: Service, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    bomb = tmp_path / "bomb.pth"
    torch_script("pickle_bomb", str(bomb), str(marker))
    # Refused at submission by the pickle scan (the stage's own refusal: tests/stages/test_hostile.py).
    response = service.client.post(
        "/v1/jobs", data={"spec": json.dumps(SQUEEZENET)}, files={"model": (bomb.name, bomb.read_bytes())}
    )
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "unsafe_model"
    # The bomb reduces to the builtin open(), which pickle records by its module: io.open.
    assert "io.open" in response.json()["detail"]
    assert not marker.exists()


def test_nhwc_layout_for_mobile(service: Service, mobilenet_pth: Path) -> None:
    job = service.wait(service.submit(mobilenet_pth, {**MOBILENET, "layout": "nhwc", "targets": ["tflite"]})["id"])
    assert job["status"] == "succeeded", job["error"]
    report = service.client.get(f"/v1/jobs/{job['id']}/report").json()
    (tflite,) = report["artifacts"]
    assert tflite["toolchain"] == "onnx2tf"
    assert tflite["signature"]["layout"] == "nhwc"
    (shape,) = [i["shape"] for i in tflite["signature"]["inputs"].values()]
    assert shape[1:] == [32, 32, 3]
    assert tflite["verdict"] == "pass"


def test_every_precision_with_uploaded_calibration(service: Service, mobilenet_pth: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    np.savez(tmp_path / "calibration.npz", image=rng.random((16, 1, 3, 32, 32), dtype=np.float32))
    spec = {**MOBILENET, "targets": ["tflite"], "quantization": ["float32", "dynamic_range", "float16", "int8"]}
    job = service.wait(service.submit(mobilenet_pth, spec, calibration=tmp_path / "calibration.npz")["id"])
    assert job["status"] == "succeeded", job["error"]
    # int8 under auto: every candidate converts, so the quantizers have their float32 files to fall back on.
    states = {s["name"]: s["state"] for s in job["stages"]}
    assert states["convert_litert_torch"] == states["validate_litert_torch"] == "succeeded", states
    listed = {a["name"]: a for a in service.client.get(f"/v1/jobs/{job['id']}/artifacts").json()}
    assert set(listed) == {f"model_{p}.tflite" for p in spec["quantization"]}
    assert {a["precision"] for a in listed.values()} == set(spec["quantization"])
    report = service.client.get(f"/v1/jobs/{job['id']}/report").json()
    assert {p: s["status"] for p, s in report["precisions"].items()} == dict.fromkeys(spec["quantization"], "produced")
    entries = {a["precision"]: a for a in report["artifacts"]}
    assert entries["float16"]["verdict"] == "pass"
    for precision in ("dynamic_range", "int8"):
        entry = entries[precision]
        assert entry["advisory"] is True
        # int8 is calibrated on the uploaded file; dynamic range needs no calibration.
        assert entry["calibration"]["source"] == ("uploaded" if precision == "int8" else "none")
        (output,) = entry["outputs"].values()
        assert output["cosine"] >= 0.9, (precision, output)
        assert entry["vs_float32"]["outputs"]
        assert entry["min_cosine"] == output["cosine"]
        assert 0 < entry["size_ratio_vs_float32"] < 1
        # Calibrated on the uploaded file: no "accuracy unknown" warning.
        assert not any("synthetic" in warning for warning in entry.get("warnings") or []), entry.get("warnings")
    assert entries["int8"]["size"] < entries["float32"]["size"] / 2
    # TensorFlow's PTQ of onnx2tf's SavedModel is onnx2tf's first int8 attempt, through the real
    # workers: the convert stage made it from the uploaded calibration, the quantize stage judged it.
    int8_runs = report["precisions"]["int8"]["attempts"]
    tf_ptq = int8_runs[0]
    assert (tf_ptq["source"], tf_ptq["variant"]) == ("onnx2tf", "tf_ptq")
    assert tf_ptq["quantizer"].startswith("tf-lite-converter 2.")
    assert not tf_ptq["outcome"].startswith("failed"), tf_ptq["outcome"]  # made, ran, judged
    assert tf_ptq["min_cosine"] is not None


def test_torchscript_and_onnx_uploads(service: Service, models_dir: Path, tmp_path: Path) -> None:
    scripted, exported = models_dir / "mobilenet.ts", models_dir / "mobilenet.onnx"
    kwargs = '{"num_classes": 5}'
    torch_script("torchscript", "mobilenet_v2", str(scripted), "--kwargs", kwargs)
    torch_script("onnx", "mobilenet_v2", str(exported), "--kwargs", kwargs)
    inputs = tmp_path / "inputs.npy"
    np.save(inputs, np.random.default_rng(2).random((2, 1, 3, 32, 32), dtype=np.float32))
    # TorchScript carries no signature: the spec gives it. ONNX carries its own.
    ts_job = service.submit(scripted, {"inputs": MOBILENET["inputs"]}, inputs=inputs)
    # The legacy exporter's opset-17 file is full of Identity nodes, which
    # onnx.version_converter cannot take down to onnx-tf's opset 15: the export stage
    # bypasses them, so the upload gets its SavedModel too.
    onnx_job = service.submit(exported, {}, inputs=inputs)
    for job, upload, model_format, runtime in (
        (ts_job, scripted, "torchscript", "pytorch"),
        (onnx_job, exported, "onnx", "onnxruntime"),
    ):
        done = service.wait(job["id"])
        assert done["status"] == "succeeded", (
            done["error"],
            [(s["name"], s["skipped_reason"]) for s in done["stages"]],
        )
        assert done["spec"]["model_format"] == model_format
        report = service.client.get(f"/v1/jobs/{job['id']}/report").json()
        assert report["reference"]["runtime"] == runtime
        assert report["validation"]["samples"] == 2
        entries = {a["name"]: a for a in report["artifacts"]}
        assert set(entries) == ARTIFACTS
        # Our own runs: the upload itself is the reference (TorchScript in PyTorch, the ONNX
        # file in onnxruntime); every artifact, run by us on the same samples, is within
        # tolerance and has the error the report states.
        reference_out = tmp_path / f"{model_format}.reference.npz"
        torch_script(RUNNERS[upload.suffix], str(upload), str(inputs), str(reference_out))
        reference = np.load(reference_out)["output"]
        scale = float(np.abs(reference).max())
        for name in ARTIFACTS:
            artifact = tmp_path / f"{model_format}-{name}"
            artifact.write_bytes(service.client.get(f"/v1/jobs/{job['id']}/artifacts/{name}").content)
            ours = independent_error(artifact, inputs, reference, entries[name]["toolchain"])
            assert ours <= 1e-4 * scale, (model_format, name, ours, scale)
            (reported,) = entries[name]["outputs"].values()
            assert_same_error(reported["max_abs"], ours, f"{model_format} {name}")
    onnx_report = service.client.get(f"/v1/jobs/{onnx_job['id']}/report").json()
    # The graph's own names, read from the upload (the spec gave none).
    assert [i["name"] for i in onnx_report["inputs"]] == ["pixels"]
    assert [o["name"] for o in onnx_report["outputs"]] == ["scores"]


def test_best_converts_with_every_toolchain_at_once(service: Service, mobilenet_pth: Path) -> None:
    spec = {**MOBILENET, "toolchain": "best", "targets": ["tflite"], "validation_samples": 2}
    done = service.wait(service.submit(mobilenet_pth, spec)["id"])
    assert done["status"] == "succeeded", done["error"]
    stages = {s["name"]: s for s in done["stages"]}
    converts = [stages[f"convert_{c}"] for c in ("onnx2tf", "litert_torch", "onnx_tf")]
    assert all(s["state"] == "succeeded" for s in converts), [(s["name"], s["state"]) for s in converts]
    # Each runs on its own toolchain's worker, released together after the export: their
    # running times overlap (the export had finished before any of them started).
    spans = sorted((s["started_at"], s["finished_at"]) for s in converts)
    assert all(start > stages["export_onnx"]["finished_at"] for start, _ in spans)
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:], strict=False)), spans
    report = service.client.get(f"/v1/jobs/{done['id']}/report").json()
    outcomes = {a["toolchain"]: a["outcome"] for a in report["attempts"]}
    assert sorted(outcomes) == ["litert-torch", "onnx-tf", "onnx2tf"]
    assert sum(outcome == "chosen" for outcome in outcomes.values()) == 1
    assert all(o == "chosen" or o.startswith("lost: ") for o in outcomes.values()), outcomes
    assert [a["name"] for a in service.client.get(f"/v1/jobs/{done['id']}/artifacts").json()] == [
        "model_float32.tflite"
    ]
