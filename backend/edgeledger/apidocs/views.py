"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), served whole by the app.

FastAPI's own pages load Swagger UI and ReDoc from a public CDN (and ReDoc's fonts from Google), so
without internet access they were blank. Here every asset comes from the npm toolchain
(``swagger-ui-dist`` and ``redoc`` in package.json, installed by scripts/bootstrap.sh) through
``/docs/assets/<name>``, a fixed list of files (no path from the request reaches the file system).
URLs in the pages are relative, so the pages work under a path prefix too.

Both pages carry a Content-Security-Policy that lets them reach only the app itself:
scripts from the app and no inline script (the start-up code is a file of its own); styles from the app
plus inline styles, which both UIs set at run time (ReDoc injects its styled-components rules as
``<style>`` elements); images from the app and ``data:``; ReDoc's search worker from a ``blob:`` URL;
requests ("Try it out", the OpenAPI document) only to the app.

One asset is served changed: ReDoc's bundle always shows a "Redocly" logo image from its vendor's CDN
(``REDOC_LOGO``). The policy would block that request, but the page would still try it and log a
violation, so the bundle is served with that URL replaced by an empty ``data:`` URL, which the bundle
already treats as a logo that failed to load (it hides the image). The "API docs by Redocly" link
stays.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse, Response

from edgeledger.config import PROJECT_ROOT
from edgeledger.errors import EdgeLedgerError

HERE = Path(__file__).parent
NODE_MODULES = PROJECT_ROOT / "node_modules"

#: name under /docs/assets/ -> (file, media type)
ASSETS: dict[str, tuple[Path, str]] = {
    "swagger-ui.css": (NODE_MODULES / "swagger-ui-dist" / "swagger-ui.css", "text/css"),
    "swagger-ui-bundle.js": (NODE_MODULES / "swagger-ui-dist" / "swagger-ui-bundle.js", "text/javascript"),
    "favicon.png": (NODE_MODULES / "swagger-ui-dist" / "favicon-32x32.png", "image/png"),
    "redoc.standalone.js": (NODE_MODULES / "redoc" / "bundles" / "redoc.standalone.js", "text/javascript"),
    "swagger-init.js": (HERE / "static" / "swagger-init.js", "text/javascript"),
    "redoc-init.js": (HERE / "static" / "redoc-init.js", "text/javascript"),
}

REDOC_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)

router = APIRouter(include_in_schema=False)


class DocsAssetMissing(EdgeLedgerError):
    status = 503
    code = "docs_assets_missing"


def _page(title: str, head: str, body: str, body_style: str = "") -> HTMLResponse:
    html = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" type="image/png" href="docs/assets/favicon.png">
{head}
</head>
<body{body_style}>
{body}
</body>
</html>
"""
    return HTMLResponse(html, headers=_headers())


def _headers() -> dict[str, str]:
    return {
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }


@router.get("/docs", response_class=HTMLResponse)
async def swagger_ui() -> HTMLResponse:
    return _page(
        "EdgeLedger API - Swagger UI",
        '<link rel="stylesheet" href="docs/assets/swagger-ui.css">',
        '<div id="swagger-ui" data-spec-url="openapi.json"></div>\n'
        '<script src="docs/assets/swagger-ui-bundle.js"></script>\n'
        '<script src="docs/assets/swagger-init.js"></script>',
    )


@router.get("/redoc", response_class=HTMLResponse)
async def redoc() -> HTMLResponse:
    return _page(
        "EdgeLedger API - ReDoc",
        "",
        '<div id="redoc" data-spec-url="openapi.json"></div>\n'
        '<script src="docs/assets/redoc.standalone.js"></script>\n'
        '<script src="docs/assets/redoc-init.js"></script>',
        ' style="margin: 0"',
    )


@router.get("/docs/assets/{name}")
async def asset(name: str) -> Response:
    """One file of :data:`ASSETS`; 404 for any other name."""
    if name not in ASSETS:
        raise EdgeLedgerError(f"no documentation asset {name!r}", code="not_found", status=404)
    path, media_type = ASSETS[name]
    if not path.is_file():
        raise DocsAssetMissing(
            f"{path.relative_to(PROJECT_ROOT)} is not installed: run scripts/bootstrap.sh (npm toolchain)"
        )
    headers = {**_headers(), "Cache-Control": "public, max-age=3600"}
    if name == "redoc.standalone.js":
        return Response(_redoc_bundle(path), media_type=media_type, headers=headers)
    return FileResponse(path, media_type=media_type, headers=headers)


@cache
def _redoc_bundle(path: Path) -> bytes:
    """ReDoc's bundle with its one outside image (the vendor logo) replaced; see the module docstring."""
    return path.read_bytes().replace(REDOC_LOGO, b"data:,")
