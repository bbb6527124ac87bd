"""What every request passes before a handler sees it: the API key, the body size limit, and the
count of responses by endpoint and status (for /metrics). Plain ASGI, so it also bounds bodies sent
without a Content-Length (chunked): the read that crosses the limit ends the request with a 413."""
from __future__ import annotations

import hmac
import json

from .images import BadInput

ENDPOINTS = ("/health", "/metrics", "/v1/models", "/v1/chat/completions", "/v1/dsocr/ocr",
             "/v1/dsocr/tokenizer", "/v1/convert")


class Guard:
    def __init__(self, app, server):
        self.app, self.server = app, server
        self.key = f"Bearer {server.api_key}".encode() if server.api_key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        endpoint = scope["path"] if scope["path"] in ENDPOINTS else "other"

        async def counted_send(message):
            if message["type"] == "http.response.start":
                self.server.responses[(endpoint, message["status"])] += 1
            await send(message)

        headers = dict(scope["headers"])
        if self.key is not None and not hmac.compare_digest(headers.get(b"authorization", b""), self.key):
            return await _refuse(counted_send, 401, "missing or wrong API key (send Authorization: Bearer KEY)",
                                 "invalid_api_key")
        limit = self.server.limits.max_body
        length = headers.get(b"content-length", b"0")
        if not length.isdigit():
            return await _refuse(counted_send, 400, "bad Content-Length", "invalid_request")
        if int(length) > limit:
            return await _refuse(counted_send, 413, _too_large(limit), "request_too_large")
        seen = 0

        async def bounded_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BadInput(_too_large(limit), 413, "request_too_large")
            return message

        await self.app(scope, bounded_receive, counted_send)


def _too_large(limit: int) -> str:
    return f"request body over this server's {limit / 1024 ** 2:g} MiB limit (--max-body-mb)"


async def _refuse(send, status: int, message: str, code: str) -> None:
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "code": code,
                                 "param": None}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
