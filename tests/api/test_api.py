"""The HTTP contract on a real database (SQLite and PostgreSQL, schema from the migrations)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.support.api import SPEC, assert_problem, submit
from tests.support.plans import EVERY_CANDIDATE


def test_health_needs_no_key(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/").status_code == 200


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_api_key"),
        ({"Authorization": "Bearer wrong"}, "invalid_api_key"),
        ({"Authorization": "Basic abc"}, "missing_api_key"),
    ],
)
def test_v1_routes_need_a_valid_key(client: TestClient, headers: dict[str, str], code: str) -> None:
    for method, path in [("get", "/v1/jobs"), ("get", "/v1/toolchains"), ("post", "/v1/jobs")]:
        response = getattr(client, method)(path, headers=headers)
        assert response.status_code == 401, (path, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["code"] == code


def test_a_request_id_sent_is_echoed_and_one_is_made_otherwise(client: TestClient, auth: dict[str, str]) -> None:
    for path, headers, status in [("/v1/jobs", auth, 200), ("/v1/jobs", {}, 401), ("/nowhere", auth, 404)]:
        sent = client.get(path, headers={**headers, "X-Request-ID": "abc"})
        assert sent.status_code == status, sent.text
        assert sent.headers["x-request-id"] == "abc"
        made = client.get(path, headers=headers)
        assert len(made.headers["x-request-id"]) == 32  # a fresh uuid4 hex
        assert made.headers["x-request-id"] != "abc"


def test_framework_errors_are_problems(client: TestClient, auth: dict[str, str]) -> None:
    assert_problem(client.get("/nowhere"), 404, "not_found")
    assert_problem(client.put("/v1/jobs", headers=auth), 405, "method_not_allowed")
    assert_problem(client.get("/v1/jobs?limit=0", headers=auth), 422, "validation_error")
    assert_problem(client.get("/v1/jobs/not-a-uuid", headers=auth), 404, "job_not_found")
    assert_problem(client.get("/v1/jobs/00000000-0000-0000-0000-000000000000", headers=auth), 404, "job_not_found")


def test_submit_creates_a_queued_job(client: TestClient, auth: dict[str, str], squeezenet_pth: Path) -> None:
    response = submit(client, auth, squeezenet_pth.read_bytes())
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued"
    assert job["error"] is None
    assert [s["name"] for s in job["stages"]] == ["export_onnx", *EVERY_CANDIDATE, "report"]
    assert all(s["state"] == "pending" for s in job["stages"])
    assert job["spec"]["model_format"] == "state_dict"
    assert job["spec"]["targets"] == ["onnx", "saved_model", "tflite"]
    assert job["spec"]["quantization"] == ["float32"]
    assert job["model"]["size"] == squeezenet_pth.stat().st_size
    fetched = client.get(f"/v1/jobs/{job['id']}", headers=auth).json()
    assert fetched["id"] == job["id"]
    assert fetched["status"] == "queued"
    listed = client.get("/v1/jobs", headers=auth).json()
    assert [j["id"] for j in listed["items"]] == [job["id"]]
    assert_problem(client.get(f"/v1/jobs/{job['id']}/report", headers=auth), 409, "report_not_ready")
    assert client.get(f"/v1/jobs/{job['id']}/artifacts", headers=auth).json() == []


def test_only_what_the_targets_need_is_planned(client: TestClient, auth: dict[str, str], squeezenet_pth: Path) -> None:
    response = submit(client, auth, squeezenet_pth.read_bytes(), {**SPEC, "targets": ["onnx"]})
    assert [s["name"] for s in response.json()["stages"]] == ["export_onnx", "report"]


def test_list_is_newest_first_and_paginated(client: TestClient, auth: dict[str, str], squeezenet_pth: Path) -> None:
    model = squeezenet_pth.read_bytes()
    ids = [submit(client, auth, model).json()["id"] for _ in range(3)]
    first = client.get("/v1/jobs?limit=2", headers=auth).json()
    assert [j["id"] for j in first["items"]] == ids[::-1][:2]
    second = client.get(f"/v1/jobs?limit=2&cursor={first['next_cursor']}", headers=auth).json()
    assert [j["id"] for j in second["items"]] == [ids[0]]
    assert second["next_cursor"] is None
    assert client.get("/v1/jobs?status=succeeded", headers=auth).json()["items"] == []
    assert_problem(client.get("/v1/jobs?cursor=%%%", headers=auth), 422, "invalid_cursor")


@pytest.mark.parametrize(
    ("name", "suggested"),
    [
        ("torchvision.models.resnet19", "torchvision.models.resnet18"),
        ("torchvision.models.mobilenet_v3_smal", "torchvision.models.mobilenet_v3_small"),
        ("torchvision.models.segmentaton.fcn_resnet50", "torchvision.models.segmentation"),
        ("transformers.BertModle", "transformers.BertModel"),
    ],
)
def test_a_misspelt_architecture_is_refused_at_submission_with_the_closest_names(
    client: TestClient, auth: dict[str, str], squeezenet_pth: Path, name: str, suggested: str
) -> None:
    response = submit(client, auth, squeezenet_pth.read_bytes(), {**SPEC, "architecture": {"name": name}})
    body = assert_problem(response, 422, "architecture_not_found")
    assert suggested in body["detail"]
    assert client.get("/v1/jobs", headers=auth).json()["items"] == []


def test_real_architectures_pass_the_submission_check(
    client: TestClient, auth: dict[str, str], squeezenet_pth: Path
) -> None:
    """Builders in submodules, transformers classes and paths the catalog does not cover are accepted
    (the stage resolves them)."""
    for name in (
        "torchvision.models.segmentation.lraspp_mobilenet_v3_large",
        "torchvision.models.resnet.resnet18",
        "transformers.BertModel",
        "transformers.models.bert.modeling_bert.BertModel",
    ):
        response = submit(client, auth, squeezenet_pth.read_bytes(), {**SPEC, "architecture": {"name": name}})
        assert response.status_code == 202, (name, response.text)


@pytest.mark.parametrize(
    ("model", "spec", "code"),
    [
        (b"", SPEC, "empty_model"),
        (b"this is not a model at all", SPEC, "unrecognized_format"),
        (None, "{not json", "invalid_spec"),
        (None, '{"validation_samples": NaN}', "invalid_spec"),
        (None, {**SPEC, "targets": ["coreml"]}, "invalid_spec"),
        (None, {**SPEC, "surprise": 1}, "invalid_spec"),
        (None, {**SPEC, "inputs": [{"name": "x", "shape": [1, -3]}]}, "invalid_spec"),
        (None, {**SPEC, "inputs": [{"name": "x", "shape": [100000, 100000, 100000]}]}, "invalid_spec"),
        (None, {"inputs": SPEC["inputs"]}, "architecture_required"),
        (None, {**SPEC, "architecture": {"name": "os.system"}}, "architecture_not_allowed"),
        (None, {**SPEC, "inputs": []}, "inputs_required"),
        (None, {**SPEC, "model_format": "onnx"}, "format_mismatch"),
        (None, {**SPEC, "toolchain": "coreml"}, "invalid_spec"),
        (None, {**SPEC, "layout": "nhwc", "toolchain": "onnx-tf"}, "unsupported_option"),
        (None, {**SPEC, "quantization": ["int8"], "targets": ["onnx"]}, "unsupported_option"),
    ],
)
def test_bad_submissions_are_422_problems(
    client: TestClient,
    auth: dict[str, str],
    squeezenet_pth: Path,
    model: bytes | None,
    spec: dict | str,
    code: str,
) -> None:
    response = submit(client, auth, squeezenet_pth.read_bytes() if model is None else model, spec)
    assert_problem(response, 422, code)
    assert client.get("/v1/jobs", headers=auth).json()["items"] == []


def test_missing_parts_and_wrong_media_type(client: TestClient, auth: dict[str, str]) -> None:
    response = client.post("/v1/jobs", headers=auth, data={"spec": json.dumps(SPEC)}, files={"x": ("x", b"1")})
    assert_problem(response, 422, "unknown_field")
    assert_problem(client.post("/v1/jobs", headers=auth, data={"spec": "{}"}), 415, "multipart_required")
    assert_problem(client.post("/v1/jobs", headers=auth, json=SPEC), 415, "multipart_required")


def test_upload_over_the_limit_is_413_and_stores_nothing(
    db_url: str, tmp_path: Path, auth: dict[str, str], squeezenet_pth: Path
) -> None:
    from app.main import create_app
    from tests.support.api import make_settings

    settings = make_settings(db_url, tmp_path / "data", max_upload_bytes=1000)
    with TestClient(create_app(settings)) as small:
        response = submit(small, auth, squeezenet_pth.read_bytes())
        assert_problem(response, 413, "payload_too_large")
        uploads = tmp_path / "data" / "objects" / "uploads"
        assert not uploads.exists() or not any(p.is_file() for p in uploads.rglob("*"))


def test_spec_may_be_a_json_file_part(client: TestClient, auth: dict[str, str], squeezenet_pth: Path) -> None:
    response = client.post(
        "/v1/jobs",
        headers=auth,
        files={
            "model": ("m.pth", squeezenet_pth.read_bytes()),
            "spec": ("spec.json", json.dumps(SPEC).encode(), "application/json"),
        },
    )
    assert response.status_code == 202, response.text


def test_uploaded_samples_must_be_numpy(client: TestClient, auth: dict[str, str], squeezenet_pth: Path) -> None:
    response = submit(client, auth, squeezenet_pth.read_bytes(), inputs=("inputs.npy", b"garbage"))
    assert_problem(response, 422, "invalid_samples")


def test_idempotency_key_replays_byte_identical(client: TestClient, auth: dict[str, str], squeezenet_pth: Path) -> None:
    model = squeezenet_pth.read_bytes()
    first = submit(client, auth, model, headers={"Idempotency-Key": "abc-1"})
    again = submit(client, auth, model, headers={"Idempotency-Key": "abc-1"})
    assert first.status_code == again.status_code == 202
    assert first.content == again.content
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["location"] == first.headers["location"]
    assert first.headers["x-request-id"] != again.headers["x-request-id"]
    other = submit(client, auth, model, {**SPEC, "seed": 7}, headers={"Idempotency-Key": "abc-1"})
    assert_problem(other, 422, "idempotency_key_reused")
    assert len(client.get("/v1/jobs", headers=auth).json()["items"]) == 1


def test_cancel_a_queued_job(client: TestClient, auth: dict[str, str], squeezenet_pth: Path) -> None:
    job = submit(client, auth, squeezenet_pth.read_bytes()).json()
    cancelled = client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth).json()
    assert cancelled["status"] == "cancelled"
    assert {s["state"] for s in cancelled["stages"]} == {"cancelled"}
    assert_problem(client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth), 409, "job_finished")


def test_tenants_see_only_their_jobs(client: TestClient, auth: dict[str, str], squeezenet_pth: Path) -> None:
    created = client.post("/v1/admin/keys", headers=auth, json={"tenant": "acme"})
    assert created.status_code == 201, created.text
    acme = {"Authorization": f"Bearer {created.json()['key']}"}
    job = submit(client, auth, squeezenet_pth.read_bytes()).json()
    assert_problem(client.get(f"/v1/jobs/{job['id']}", headers=acme), 404, "job_not_found")
    assert client.get("/v1/jobs", headers=acme).json()["items"] == []
    assert_problem(client.post("/v1/admin/keys", headers=acme, json={"tenant": "x"}), 403, "admin_required")
    assert client.delete(f"/v1/admin/keys/{created.json()['id']}", headers=auth).status_code == 204
    assert_problem(client.get("/v1/jobs", headers=acme), 401, "invalid_api_key")


def test_toolchains_list_exact_versions(client: TestClient, auth: dict[str, str]) -> None:
    toolchains = {t["name"]: t for t in client.get("/v1/toolchains", headers=auth).json()}
    assert {"torch", "onnx-tf"} <= set(toolchains)
    assert toolchains["torch"]["packages"]["torch"] == "2.14.1"
    assert toolchains["onnx-tf"]["packages"]["tensorflow-cpu"] == "2.15.1"
    assert toolchains["onnx-tf"]["packages"]["onnx-tf"] == "1.10.0"
    assert toolchains["torch"]["ready"]
    assert toolchains["onnx-tf"]["ready"]
    assert toolchains["onnx-tf"]["converters"] == ["onnx-tf"]
    assert "onnx-tf" in toolchains["onnx-tf"]["enabled"]


# The errors each /v1 operation can answer (docs/api.md), beyond 401 which all of them can.
DECLARED_ERRORS = {
    ("post", "/v1/jobs"): {"401", "409", "413", "415", "422"},
    ("get", "/v1/jobs"): {"401", "422"},
    ("get", "/v1/jobs/{job_id}"): {"401", "404"},
    ("post", "/v1/jobs/{job_id}/cancel"): {"401", "404", "409"},
    ("get", "/v1/jobs/{job_id}/artifacts"): {"401", "404"},
    ("get", "/v1/jobs/{job_id}/artifacts/{name}"): {"401", "404", "410"},
    ("get", "/v1/jobs/{job_id}/report"): {"401", "404", "409", "410"},
    ("get", "/v1/jobs/{job_id}/logs/{stage}"): {"401", "404", "409"},
    ("get", "/v1/jobs/{job_id}/events"): {"401", "404"},
    ("get", "/v1/toolchains"): {"401"},
    ("get", "/v1/webhooks/secret"): {"401"},
    ("post", "/v1/webhooks/secret/rotate"): {"401"},
    ("post", "/v1/admin/keys"): {"401", "403", "422"},
    ("delete", "/v1/admin/keys/{key_id}"): {"401", "403", "404"},
}


def test_openapi_declares_problem_responses(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    operations = {(m, p): op for p, methods in paths.items() if p.startswith("/v1") for m, op in methods.items()}
    assert set(operations) == set(DECLARED_ERRORS)
    for (method, path), operation in operations.items():
        errors = {status: r for status, r in operation["responses"].items() if int(status) >= 400}
        assert DECLARED_ERRORS[method, path] <= set(errors), (method, path, sorted(errors))
        for status, response in errors.items():
            where = (method, path, status)
            # problem+json only: no error is ever sent as plain application/json.
            assert list(response["content"]) == ["application/problem+json"], where
            schema = response["content"]["application/problem+json"]["schema"]
            assert {"type", "title", "status", "detail", "code"} <= set(schema["required"]), where
            assert schema["properties"]["code"]["type"] == "string", where
    assert "multipart/form-data" in paths["/v1/jobs"]["post"]["requestBody"]["content"]


def test_client_digest_is_checked_and_a_mismatch_stores_nothing(
    client: TestClient, auth: dict[str, str], squeezenet_pth: Path, settings
) -> None:  # type: ignore[no-untyped-def]
    import hashlib

    model = squeezenet_pth.read_bytes()
    good = client.post(
        "/v1/jobs",
        headers=auth,
        data={"spec": json.dumps(SPEC), "model_sha256": hashlib.sha256(model).hexdigest()},
        files={"model": ("m.pth", model)},
    )
    assert good.status_code == 202, good.text
    bad = client.post(
        "/v1/jobs",
        headers=auth,
        data={"spec": json.dumps(SPEC), "model_sha256": "0" * 64},
        files={"model": ("m.pth", model)},
    )
    assert_problem(bad, 422, "digest_mismatch")
    stored = [p for p in (settings.storage_root / "uploads").rglob("*") if p.is_file()]
    assert len(stored) == 1  # only the good job's model


def test_concurrent_duplicate_is_409(client: TestClient, auth: dict[str, str], squeezenet_pth: Path) -> None:
    from app.services.idempotency import KeyReservation

    # Another request with this key is still uploading: it holds the reservation.
    reservation = KeyReservation(client.app.state.redis, "default", "busy-key", "another-request")  # type: ignore[attr-defined]
    assert reservation.acquire()
    try:
        response = submit(client, auth, squeezenet_pth.read_bytes(), headers={"Idempotency-Key": "busy-key"})
        assert_problem(response, 409, "idempotency_key_in_use")
    finally:
        reservation.release()
    assert submit(client, auth, squeezenet_pth.read_bytes(), headers={"Idempotency-Key": "busy-key"}).status_code == 202


def test_an_unknown_query_parameter_is_refused(client: TestClient, auth: dict[str, str]) -> None:
    # A typo must not read as "no filter": GET /v1/jobs?statuss=failed would list every job.
    response = client.get("/v1/jobs?statuss=failed", headers=auth)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["code"] == "unknown_parameter"
    assert "statuss" in problem["detail"]
    assert "status" in problem["detail"]  # what the route takes
    assert client.get("/v1/jobs?status=failed&limit=5", headers=auth).status_code == 200
    # A route without query parameters has nothing to misspell: a cache-buster passes (netron
    # adds ?cb=<time> to the artifact URL it opens).
    assert client.get("/v1/toolchains?cb=1733000000", headers=auth).status_code == 200
