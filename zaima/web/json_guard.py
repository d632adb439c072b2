"""Refuses JSON request bodies that no endpoint could store or answer (see zaima.core.jsoncheck) with the
same 422 a validation error gets, before any route sees them. A pure ASGI wrapper: only requests whose
content type is JSON are buffered (they are small: the body limit applies before this), and the body is
parsed here only when a cheap scan of its bytes finds something suspect."""

from __future__ import annotations

import json

from zaima.core.jsoncheck import PROBLEMS, problem_in_raw


def _is_json(scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            return media == b"application/json" or media.endswith(b"+json")
    return False


class JsonGuard:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS") or not _is_json(scope):
            return await self.app(scope, receive, send)
        messages, chunks = [], []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        problem = problem_in_raw(b"".join(chunks))
        if problem is not None:
            zh, en = PROBLEMS[problem]
            body = json.dumps({"error": {"code": "invalid_input", "message": f"请求内容有误：{zh}",
                                         "message_en": f"Invalid request: {en}"}}, ensure_ascii=False).encode()
            await send({"type": "http.response.start", "status": 422,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return None

        async def replay():
            return messages.pop(0) if messages else await receive()

        return await self.app(scope, replay, send)
