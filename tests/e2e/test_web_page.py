"""The page in a real browser: headless Chromium (the system's, driven by Playwright) signs in,
fills the upload form, follows the job live, and reads the report's pictures, against the real
service (API + Celery workers + converters). Screenshots go to ``$MODELPORT_SCREENSHOTS`` when
set (docs/screenshots/ was made so), else to the test's temporary directory."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import ensure_chromium
from tests.support.stack import API_KEY, Service, running_service

pytestmark = pytest.mark.e2e

PRECISIONS = ["float32", "dynamic_range", "float16", "int8"]
EXPECTED_SPEC = {
    "architecture": {"name": "torchvision.models.squeezenet1_1", "kwargs": {"num_classes": 10}},
    "inputs": [{"name": "input", "shape": [1, 3, 64, 64], "dtype": "float32"}],
    "targets": ["onnx", "tflite"],
    "quantization": PRECISIONS,
    "validation_samples": 4,
}


@pytest.fixture(scope="module")
def chromium() -> str:
    path, why = ensure_chromium()
    if path is None:
        pytest.skip(f"no Chromium for the browser test: {why}")
    return path


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, chromium: str) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("web")) as running:
        yield running


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    directory = Path(os.environ.get("MODELPORT_SCREENSHOTS") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def attrs(page: Any, selector: str, name: str) -> list[str]:
    return page.eval_on_selector_all(selector, f"(nodes) => nodes.map((n) => n.getAttribute('{name}'))")


def test_the_page_converts_a_model_and_draws_its_report(
    service: Service, chromium: str, squeezenet_pth: Path, shots: Path, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    base = str(service.client.base_url).rstrip("/")
    requested: list[str] = []
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            context = browser.new_context(viewport={"width": 1200, "height": 900}, accept_downloads=True)
            context.on("request", lambda request: requested.append(request.url))
            page = context.new_page()
            page.on("pageerror", lambda error: problems.append(str(error)))

            # Sign in: a wrong key is refused, the right one opens the (empty) job list.
            page.goto(f"{base}/")
            page.fill("input[name=key]", "not-a-key")
            page.click("#signin button")
            expect(page.locator("#signin-error")).to_contain_text("invalid_api_key")
            page.fill("input[name=key]", API_KEY)
            page.click("#signin button")
            expect(page.locator("#jobs-empty")).to_be_visible()
            assert page.evaluate("sessionStorage.getItem('modelport.key')") == API_KEY

            # The form builds the spec.
            page.click("text=New job")
            page.set_input_files("input[name=model]", str(squeezenet_pth))
            page.fill("input[name=arch]", "torchvision.models.squeezenet1_1")
            page.fill("input[name=kwargs]", '{"num_classes": 10}')
            page.fill("[name=input-shape]", "1x3x64x64")
            page.uncheck("input[value=saved_model]")
            for precision in PRECISIONS[1:]:
                page.check(f"input[value={precision}]")
            page.fill("input[name=samples]", "4")
            assert json.loads(page.inner_text("#spec-preview")) == EXPECTED_SPEC
            page.screenshot(path=str(shots / "new-job.png"), full_page=True)
            page.click("#upload button[type=submit]")

            # The job page follows the job over its event stream until it is final.
            page.wait_for_url("**/#/jobs/*")
            job_id = page.url.rsplit("/", 1)[1]
            expect(page.locator("#job-status")).to_have_text("running", timeout=120_000)
            expect(page.locator("#timeline-svg g.stage[data-state=succeeded]").first).to_be_visible(timeout=300_000)
            page.screenshot(path=str(shots / "job-running.png"), full_page=True)
            expect(page.locator("#job-status")).to_have_text("succeeded", timeout=900_000)
            assert any(url == f"{base}/v1/jobs/{job_id}/events" for url in requested)

            job = service.client.get(f"/v1/jobs/{job_id}").json()
            assert job["spec"]["quantization"] == PRECISIONS
            report = service.client.get(f"/v1/jobs/{job_id}/report").json()
            artifacts = service.client.get(f"/v1/jobs/{job_id}/artifacts").json()

            # The timeline: one row per stage, in the state the API gives.
            expect(page.locator("#timeline-svg g.stage")).to_have_count(len(job["stages"]))
            assert attrs(page, "#timeline-svg g.stage", "data-state") == [s["state"] for s in job["stages"]]

            # Error against tolerance: one bar per artifact (one output each), coloured by verdict.
            expect(page.locator("#error-svg g.bar")).to_have_count(len(report["artifacts"]))
            assert attrs(page, "#error-svg g.bar", "data-artifact") == [a["name"] for a in report["artifacts"]]
            assert attrs(page, "#error-svg g.bar", "data-verdict") == [a["verdict"] for a in report["artifacts"]]
            assert page.locator("#error-svg line.tolerance").count() == 1
            # Size and latency: one point per .tflite, at its precision.
            tflites = [a for a in report["artifacts"] if a["kind"] == "tflite"]
            assert {a["precision"] for a in tflites} == set(PRECISIONS)
            expect(page.locator("#size-latency-svg circle.point")).to_have_count(len(tflites))
            assert sorted(attrs(page, "#size-latency-svg g.point-group", "data-precision")) == sorted(PRECISIONS)
            # Quantized vs float32: a cosine bar for each quantized file, thresholds drawn.
            cosine = attrs(page, "#agreement-svg g.agree[data-metric=cosine]", "data-precision")
            assert sorted(cosine) == sorted(PRECISIONS[1:])
            assert page.locator("#agreement-svg line.threshold").count() >= 1
            expect(page.locator("#precision-table tbody tr")).to_have_count(len(PRECISIONS))
            # Every quantizer run, one row each, in the report's order; the kept ones' cosines.
            runs = [(p, a) for p, state in report["precisions"].items() for a in state.get("attempts") or []]
            assert len(runs) >= len(PRECISIONS) - 1
            expect(page.locator("#quantizer-attempts tbody tr")).to_have_count(len(runs))
            assert attrs(page, "#quantizer-attempts tbody tr", "data-precision") == [p for p, _ in runs]
            kept = page.locator("#quantizer-attempts tbody tr[data-outcome=kept] td.cosine").all_inner_texts()
            cosines = [a["min_cosine"] for _, a in runs if a["outcome"] == "kept"]
            assert kept == ["" if c is None else f"{c:.4f}" for c in cosines]
            assert any(c is not None for c in cosines)  # int8 and dynamic_range are judged by cosine
            page.screenshot(path=str(shots / "job-report.png"), full_page=True)

            # Artifacts: listed, and a download is the artifact's bytes.
            expect(page.locator("#artifacts tbody tr")).to_have_count(len(artifacts))
            onnx = next(a for a in artifacts if a["name"] == "model.onnx")
            with page.expect_download() as download_info:
                page.click("tr[data-artifact='model.onnx'] button.download")
            saved = tmp_path / "model.onnx"
            download_info.value.save_as(saved)
            assert hashlib.sha256(saved.read_bytes()).hexdigest() == onnx["sha256"]

            # The graph: netron, served here, opens the float32 .tflite with the page's key.
            with page.expect_popup() as popup_info:
                page.click("tr[data-artifact='model_float32.tflite'] button.graph")
            graph = popup_info.value
            graph.set_viewport_size({"width": 1200, "height": 900})
            graph.wait_for_selector("#canvas g.node", timeout=60_000)
            assert graph.locator("#canvas g.node").count() >= 5
            graph.screenshot(path=str(shots / "graph.png"))

            # The list shows the job's final status.
            page.goto(f"{base}/#/")
            expect(page.locator(f"tr[data-job='{job_id}']")).to_have_attribute("data-status", "succeeded")
            page.screenshot(path=str(shots / "jobs.png"))
        finally:
            browser.close()
    assert problems == []
    # Offline: nothing was asked of another host (netron's telemetry included).
    assert [url for url in requested if not url.startswith((base, "blob:", "data:"))] == []
