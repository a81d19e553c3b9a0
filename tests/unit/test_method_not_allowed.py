"""A 405 states every method the path serves, across the routes that serve it (Starlette's own
names the first route's only), as the OpenAPI document lists them."""

from __future__ import annotations

from fastapi.testclient import TestClient

from api.main import create_app
from embedq_core.settings import Settings


def test_allow_lists_every_method_of_the_path() -> None:
    settings = Settings(
        database_url="postgresql://nobody@127.0.0.1:9/none",
        redis_url="redis://127.0.0.1:9/0",
        auth_required=False,
    )
    with TestClient(create_app(settings)) as client:
        spec = client.get("/openapi.json").json()["paths"]
        for path, served in (("/v1/vectorizers", "/v1/vectorizers"),
                             ("/v1/vectorizers/some_name", "/v1/vectorizers/{name}"),
                             ("/v1/collections", "/v1/collections")):  # fmt: skip
            answer = client.request("OPTIONS", path)
            assert answer.status_code == 405
            allowed = set(answer.headers["Allow"].split(", "))
            assert allowed == {m.upper() for m in spec[served]}, (path, allowed)
