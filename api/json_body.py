"""JSON request bodies parsed off the event loop when they are large: a few MB of JSON parsed
on the loop stalls every other request (health checks included) for the time it takes."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
from fastapi import Request, Response
from fastapi.routing import APIRoute

# Below this a parse takes well under a millisecond: a thread hop would cost more.
OFF_LOOP_BYTES = 64 * 1024


class OffLoopJsonRequest(Request):
    """A request whose JSON body is parsed in a worker thread when it is large."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            if len(body) > OFF_LOOP_BYTES:
                self._json = await anyio.to_thread.run_sync(json.loads, body)
            else:
                self._json = json.loads(body)
        return self._json


class OffLoopJsonRoute(APIRoute):
    """The route class of every router: its endpoints read their body as OffLoopJsonRequest."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def off_loop(request: Request) -> Response:
            return await handler(OffLoopJsonRequest(request.scope, request.receive))

        return off_loop
