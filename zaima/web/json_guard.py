"""Refuses JSON request bodies that no endpoint could store or answer (see zaima.core.jsoncheck) with the
same 422 a validation error gets, before any route sees them. A pure ASGI wrapper: only requests whose
content type is JSON are buffered (the route would read them whole anyway), at most MAX_JSON_BYTES (a
larger one gets 413), and the body is parsed here only when a cheap scan of it finds something suspect."""

from __future__ import annotations

import json

from zaima.core.errors import error_body
from zaima.core.jsoncheck import PROBLEMS, problem_in_raw


def _is_json(scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            return media == b"application/json" or media.endswith(b"+json")
    return False


MAX_JSON_BYTES = 8 * 1024 * 1024  # our largest JSON bodies (knowledge-base imports) are far smaller


async def _refuse(send, status: int, code: str, message: tuple[str, str]) -> None:
    body = json.dumps(error_body(code, *message), ensure_ascii=False).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class JsonGuard:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS") or not _is_json(scope):
            return await self.app(scope, receive, send)
        messages, chunks, size = [], [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > MAX_JSON_BYTES:
                return await _refuse(send, 413, "too_large", ("请求内容太大", "The request is too large"))
            if not message.get("more_body", False):
                break
        problem = problem_in_raw(b"".join(chunks))
        if problem is not None:
            zh, en = PROBLEMS[problem]
            return await _refuse(send, 422, "invalid_input", (f"请求内容有误：{zh}", f"Invalid request: {en}"))

        async def replay():
            return messages.pop(0) if messages else await receive()

        return await self.app(scope, replay, send)
