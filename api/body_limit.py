"""Request bodies read under a byte limit and a deadline, before the app parses them.

A pure ASGI middleware: it counts bytes as they arrive, so a body without Content-Length
(chunked) is cut off at the limit instead of being buffered whole, and a body trickling in
slowly is answered 408 at the deadline instead of holding a worker thread."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from api.errors import error_response

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

BODY_METHODS = {"POST", "PUT", "PATCH"}


class BodyBudget:
    """The bytes of request bodies the API process holds at once, across requests (one event
    loop: no lock needed). Past it, a new body is refused with 503 instead of being buffered."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.held = 0

    def take(self, size: int) -> bool:
        """Hold size more bytes, if the budget allows."""
        if self.held + size > self.max_bytes:
            return False
        self.held += size
        return True

    def give_back(self, size: int) -> None:
        self.held -= size


class BodyLimit:
    """413 past max_bytes, 408 past timeout_s, 422 when the body is not UTF-8, 503 while the
    bodies already held fill the budget."""

    def __init__(
        self,
        app: App,
        max_bytes: int,
        timeout_s: float,
        budget: BodyBudget,
        retry_after_s: int,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.budget = budget
        self.retry_after_s = retry_after_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        held = [0]
        try:
            await self._limited(scope, receive, send, held)
        finally:
            self.budget.give_back(held[0])

    async def _limited(self, scope: Scope, receive: Receive, send: Send, held: list[int]) -> None:
        too_large = error_response(413, ["body"], f"body over {self.max_bytes} bytes", "too_large")
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        while True:
            try:
                message = await asyncio.wait_for(receive(), timeout=deadline - loop.time())
            except TimeoutError:
                slow = f"body not received within {self.timeout_s:g}s"
                await error_response(408, ["body"], slow, "timeout")(scope, receive, send)
                return
            if message["type"] == "http.disconnect":
                return
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await too_large(scope, receive, send)
                return
            if not self.budget.take(len(chunk)):
                busy = "too many request bodies being read at once; retry later"
                retry = {"Retry-After": str(self.retry_after_s)}
                await error_response(503, ["body"], busy, "busy", retry)(scope, receive, send)
                return
            held[0] += len(chunk)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad = f"body is not valid UTF-8 (byte {exc.start})"
            await error_response(422, ["body"], bad, "utf8_invalid")(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the app the whole body once, then waits for the disconnect."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
