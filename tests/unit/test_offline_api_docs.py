"""/docs and /redoc work on an intranet: every script, style and icon they load is served by
the API itself (the app is built on a database and broker it never reaches)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from embedq_core.settings import Settings

ASSET_RE = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url:\s*["']([^"']+)["']""")


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    settings = Settings(
        database_url="postgresql://nobody@127.0.0.1:9/none", redis_url="redis://127.0.0.1:9/0"
    )
    with TestClient(create_app(settings), base_url="http://api.internal") as test_client:
        yield test_client


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_load_nothing_from_another_host(client: TestClient, page: str) -> None:
    answer = client.get(page)
    assert answer.status_code == 200
    html = answer.text
    assert "cdn.jsdelivr.net" not in html and "fonts.googleapis.com" not in html
    references = [a or b for a, b in ASSET_RE.findall(html)]
    scripts = [ref for ref in references if ref.endswith((".js", ".css", ".png"))]
    assert scripts, f"{page} references no script: {html[:300]}"
    for ref in references:
        assert not re.match(r"^(https?:)?//", ref) or ref.startswith("http://api.internal/"), ref
    for ref in scripts:
        asset = client.get(ref)
        assert asset.status_code == 200 and len(asset.content) > 1000, ref
    assert client.get("/openapi.json").json()["info"]["title"] == "embedq"
