"""``GET /``: the page and its assets, served offline (no URL of another host), and netron's
viewer beside it. The page in a real browser is tests/e2e/test_web_page.py."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from app.web.routes import ASSETS, netron_dir

URL = re.compile(r"""(?:https?:)?//[^\s"'`)<>]+""")
# Namespace names, never fetched: the SVG elements the page draws need this one.
NAMESPACES = {"http://www.w3.org/2000/svg"}


def foreign_urls(text: str) -> list[str]:
    return [u for u in URL.findall(text) if u not in NAMESPACES and not u.startswith(("//#", "// "))]


@pytest.fixture
def page(client: TestClient) -> dict[str, str]:
    """The page and every file it loads, by path."""
    response = client.get("/", headers={"Accept": "text/html"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    linked = re.findall(r'(?:src|href)="(/web/[^"]+)"', html)
    assert sorted(linked) == ["/web/app.css", "/web/app.js"]
    files = {"/": html}
    for path in linked:
        asset = client.get(path)
        assert asset.status_code == 200, path
        files[path] = asset.text
    return files


def test_the_page_and_its_assets_name_no_other_host(page: dict[str, str]) -> None:
    for path, text in page.items():
        # Comments aside (a "//" comment is not a URL), nothing may point off this origin.
        code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))
        assert foreign_urls(code) == [], path
    assert '<script src="/web/app.js"' in page["/"]


def test_the_foreign_url_check_can_fail() -> None:
    assert foreign_urls('<script src="https://cdn.example.com/x.js">') == ["https://cdn.example.com/x.js"]
    assert foreign_urls("@import url(//fonts.example.com/a.css);") == ["//fonts.example.com/a.css"]


def test_the_page_has_each_view_and_calls_the_documented_api(page: dict[str, str]) -> None:
    html, script = page["/"], page["/web/app.js"]
    for view in ("signin-view", "jobs-view", "new-view", "job-view"):
        assert f'<template id="{view}">' in html
    for plot in ("plot-error", "plot-size-latency", "plot-agreement", "timeline"):
        assert f'id="{plot}"' in html
    for route in ("/v1/jobs?limit=", "/events", "/artifacts", "/report", "/cancel", "/netron/?url="):
        assert route in script, route
    assert "sessionStorage" in script
    assert "localStorage" not in script


def test_the_page_forbids_other_origins(client: TestClient) -> None:
    policy = client.get("/").headers["content-security-policy"]
    assert "default-src 'self'" in policy
    assert "connect-src 'self'" in policy


def test_a_json_client_still_learns_what_the_service_is(client: TestClient) -> None:
    response = client.get("/", headers={"Accept": "application/json"})
    assert response.json()["service"] == "modelport"
    assert response.json()["api"] == "/v1/jobs"


def test_only_the_pages_own_files_are_served(client: TestClient) -> None:
    assert set(ASSETS) == {"app.js", "app.css", "netron-auth.js"}
    for name in ("index.html", "routes.py", "..%2Froutes.py", "nope.js"):
        assert client.get(f"/web/{name}").status_code == 404, name


@pytest.mark.skipif(netron_dir() is None, reason="netron is not installed (it is pinned in locks/control.txt)")
def test_netron_is_served_offline_with_the_key_added(client: TestClient) -> None:
    response = client.get("/netron/?url=http%3A%2F%2Ftestserver%2Fv1%2Fjobs%2Fx%2Fartifacts%2Fmodel.onnx")
    assert response.status_code == 200  # the page opens it with ?url= (no /v1 parameter check here)
    html = response.text
    assert '<meta name="version" content="0.0.0">' in html  # netron sends no telemetry then
    assert '<meta name="date"' not in html  # and never asks to be updated
    assert html.index('src="/web/netron-auth.js"') < html.index('src="index.js"')
    assert "connect-src 'self'" in response.headers["content-security-policy"]
    assert "consent=1" in response.headers["set-cookie"]
    script = client.get("/netron/view.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert client.get("/netron/tflite-metadata.json").json()
    for name in ("server.py", "__init__.py", "missing.js"):
        assert client.get(f"/netron/{name}").status_code == 404, name
