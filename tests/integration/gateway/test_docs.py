"""The gateway's /docs page renders in a real headless Chromium with no network but the gateway.

Chromium is started with a proxy that leads nowhere and only the gateway bypassing it, so
Swagger UI can only render if its assets come from the gateway's own ``/docs/static``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from .conftest import RetailStack

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def chromium(stack: RetailStack, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium on the gateway's /docs, every other host unreachable."""
    assert CHROMIUM is not None, "Debian's chromium is needed: apt-get install chromium"
    gateway = urlsplit(stack.url).netloc
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--proxy-server=127.0.0.1:9",  # nothing listens there: every other host fails
            f"--proxy-bypass-list={gateway}",
            "--window-size=1280,2000",
            "--virtual-time-budget=10000",
            *args,
            f"{stack.url}/docs",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_docs_html_loads_its_assets_from_the_gateway_only(stack: RetailStack) -> None:
    with stack.client() as http:
        page = http.get("/docs")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        html = page.text
        assert re.findall(r"https?://", html) == []
        assets = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
        assert len(assets) >= 3, assets
        assert [a for a in assets if not a.startswith("/docs/static/")] == []
        assert "/openapi.json" in html
        for asset in assets:
            served = http.get(asset)
            assert served.status_code == 200, asset
            assert len(served.content) > 1000, asset
        bundle = http.get("/docs/static/swagger-ui-bundle.js")
        assert "javascript" in bundle.headers["content-type"]


def test_swagger_ui_renders_the_retail_operations(stack: RetailStack, tmp_path: Path) -> None:
    done = chromium(stack, tmp_path / "profile-dom", "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    # Rendered by Swagger UI's JavaScript from /openapi.json: not in the served HTML.
    assert 'id="swagger-ui"' in dom
    assert "opblock" in dom, dom[:2000]
    for path in (
        "/retail/store_stock/record_sale",
        "/retail/supplier/register_supplier",
        "/retail/item/add_item",
        "/retail/queries/low_stock",
    ):
        assert path in dom, path
    assert "RecordSale" in dom
    assert "retail — streamfold command gateway" in dom


def test_a_screenshot_of_the_docs_is_a_real_png(stack: RetailStack, tmp_path: Path) -> None:
    shot = tmp_path / "docs.png"
    done = chromium(stack, tmp_path / "profile-shot", f"--screenshot={shot}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.exists(), done.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == PNG_MAGIC
    width = int.from_bytes(data[16:20], "big")
    height = int.from_bytes(data[20:24], "big")
    assert (width, height) == (1280, 2000)
    # A blank page compresses to a few kilobytes; a rendered Swagger UI is far larger.
    assert len(data) > 50_000, len(data)
    print(f"docs screenshot: {shot}")
