"""The page a person opens first, its assets, and netron's viewer beside it (no API key:
the page signs in with one and sends it from the browser; docs/web.md)."""

from __future__ import annotations

import re
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from app.core.codes import ErrorCode
from app.core.errors import NotFound

router = APIRouter(tags=["web"])

STATIC = Path(__file__).parent / "static"
# The page's own files, by name: nothing else under static/ (or beside it) is served.
ASSETS = {"app.js": "text/javascript", "app.css": "text/css", "netron-auth.js": "text/javascript"}
# netron's viewer: its scripts, metadata, styles and icons; never its Python files.
NETRON_FILE = re.compile(r"[A-Za-z0-9_-]+\.(?:js|json|css|png|ico)")
# The page may talk to this origin only: no CDN, no telemetry (netron's included).
NETRON_CSP = (
    "default-src 'self'; script-src 'self'; connect-src 'self'; img-src 'self' data: blob:; "
    "style-src 'self' 'unsafe-inline'; worker-src 'self'; frame-src 'none'"
)
PAGE_CSP = NETRON_CSP.replace("frame-src 'none'", "frame-src 'none'; object-src 'none'")


def _service() -> dict[str, str]:
    return {"service": "modelport", "page": "/", "docs": "/docs", "openapi": "/openapi.json", "api": "/v1/jobs"}


@router.get(
    "/",
    response_class=HTMLResponse,
    responses={200: {"content": {"text/html": {}, "application/json": {}}}},
    summary="The web page (HTML), or what this service is (JSON, for Accept: application/json)",
)
def page(request: Request) -> Response:
    accept = request.headers.get("accept", "")
    if "application/json" in accept and "text/html" not in accept:
        return JSONResponse(_service())
    return FileResponse(
        STATIC / "index.html",
        media_type="text/html",
        headers={"Cache-Control": "no-cache", "Content-Security-Policy": PAGE_CSP},
    )


@router.get("/web/{name}", include_in_schema=False)
def asset(name: str) -> FileResponse:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFound(f"the page has no file {name!r}", code=ErrorCode.NOT_FOUND)
    return FileResponse(STATIC / name, media_type=media_type, headers={"Cache-Control": "no-cache"})


@lru_cache(maxsize=1)
def netron_dir() -> Path | None:
    """Where the ``netron`` package keeps its viewer (None when it is not installed)."""
    spec = find_spec("netron")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations)))
    return path if (path / "index.html").is_file() else None


@lru_cache(maxsize=1)
def netron_index() -> str | None:
    """netron's index.html for offline use here: the version meta reads 0.0.0 (netron then
    sends no telemetry), the build date is dropped (no "please update" prompt as it ages),
    the CSP allows this origin only, and netron-auth.js adds the page's API key to the
    artifact download netron makes."""
    directory = netron_dir()
    if directory is None:
        return None
    html = (directory / "index.html").read_text(encoding="utf-8")
    html = re.sub(r'<meta name="version" content="[^"]*">', '<meta name="version" content="0.0.0">', html)
    html = re.sub(r'<meta name="date" content="[^"]*">\n?', "", html)
    html = re.sub(
        r'<meta http-equiv="Content-Security-Policy" content="[^"]*">',
        f'<meta http-equiv="Content-Security-Policy" content="{NETRON_CSP}">',
        html,
    )
    return html.replace(
        '<script type="text/javascript" src="index.js"></script>',
        '<script type="text/javascript" src="/web/netron-auth.js"></script>\n'
        '<script type="text/javascript" src="index.js"></script>',
    )


def _netron_missing() -> NotFound:
    return NotFound(
        "the graph viewer is not installed: pip install netron (locks/control.txt)", code=ErrorCode.NOT_FOUND
    )


@router.get("/netron/", include_in_schema=False)
def netron_page() -> HTMLResponse:
    html = netron_index()
    if html is None:
        raise _netron_missing()
    response = HTMLResponse(html, headers={"Cache-Control": "no-cache", "Content-Security-Policy": NETRON_CSP})
    # netron asks for cookie consent (after a look-up on another host) unless this is set.
    response.set_cookie("consent", "1", path="/netron/", samesite="strict")
    return response


@router.get("/netron/{name}", include_in_schema=False)
def netron_file(name: str) -> FileResponse:
    directory = netron_dir()
    if directory is None:
        raise _netron_missing()
    if not NETRON_FILE.fullmatch(name) or not (directory / name).is_file():
        raise NotFound(f"netron has no file {name!r}", code=ErrorCode.NOT_FOUND)
    headers: dict[str, Any] = {"Cache-Control": "public, max-age=86400"}
    return FileResponse(directory / name, headers=headers)
