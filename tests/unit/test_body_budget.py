"""The request bodies the API holds at once are bounded across requests, and given back."""

from __future__ import annotations

import asyncio
from typing import Any

from api.body_limit import BodyBudget, BodyLimit


def test_bodies_held_at_once_are_bounded_and_given_back() -> None:
    """A second body that would pass the budget while the first is still held gets 503."""
    budget = BodyBudget(150)
    release = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await release.wait()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    limit = BodyLimit(app, max_bytes=100, timeout_s=5, budget=budget, retry_after_s=7)

    async def request(body: bytes) -> list[Any]:
        sent: list[Any] = []
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> Any:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: Any) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "headers": [], "path": "/v1/x"}
        await limit(scope, receive, send)
        return sent

    async def scenario() -> None:
        first = asyncio.create_task(request(b"x" * 100))
        await asyncio.sleep(0)  # the first body is read and held by its app
        while budget.held != 100:
            await asyncio.sleep(0)
        refused = await request(b"y" * 80)
        assert refused[0]["status"] == 503
        assert (b"retry-after", b"7") in refused[0]["headers"]
        release.set()
        assert (await first)[0]["status"] == 204
        assert budget.held == 0
        assert (await request(b"z" * 80))[0]["status"] == 204

    asyncio.run(scenario())
