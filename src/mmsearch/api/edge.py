"""The HTTP edge: limits applied to every request before a route sees it.

Entry point: `EdgeGuard(app, max_header_bytes=..., body_timeout_s=...)`, added by `create_app`.
- Request headers larger than `max_header_bytes` in total are answered 431 without running the app.
- While a request body is incomplete, each read waits at most `body_timeout_s`; a body that stalls (or a
  Content-Length that promises more than is sent) ends in 408 (`RequestTimeoutError`), and the server closes the
  connection since the rest of the body was never read. Once the body is complete, reads pass through unchanged.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from mmsearch.api.errors import RequestTimeoutError, error_body

Scope = dict[str, Any]


class EdgeGuard:
    """Pure ASGI middleware (it wraps `receive`, which BaseHTTPMiddleware cannot do cleanly)."""

    def __init__(self, app, *, max_header_bytes: int, body_timeout_s: float):
        self.app = app
        self.max_header_bytes = max_header_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        size = sum(len(name) + len(value) + 4 for name, value in scope.get("headers", []))  # "k: v\r\n"
        if size > self.max_header_bytes:
            await _reply(send, 431, "headers_too_large",
                         f"request headers are {size} bytes; the limit is {self.max_header_bytes} bytes")  # fmt: skip
            return
        await self.app(scope, self._timed(receive), send)

    def _timed(self, receive):
        done = False
        timeout = self.body_timeout_s

        async def timed_receive():
            nonlocal done
            if done:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), timeout)
            except TimeoutError:
                raise RequestTimeoutError(
                    f"the request body stalled: nothing arrived for {timeout:g} s; send the whole body "
                    "(and a Content-Length that matches it)"
                ) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                done = True
            return message

        return timed_receive


async def _reply(send, status: int, code: str, message: str) -> None:
    body = json.dumps(error_body(code, message)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]  # fmt: skip
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


__all__ = ["EdgeGuard"]
