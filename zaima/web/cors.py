"""CORS for the widget's HTTP calls only (/api/v1/chat/…): the widget runs on the store's other sites.
Those calls carry a bearer token, never cookies, so any origin may make them. A pure ASGI wrapper that
ignores every other path, so the rest of the app pays one string comparison."""

from __future__ import annotations

PREFIX = "/api/v1/chat/"
HEADERS = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
    (b"access-control-allow-headers", b"authorization, content-type"),
    (b"access-control-max-age", b"600"),
]


class ChatCors:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            return await self.app(scope, receive, send)
        if scope["method"] == "OPTIONS":
            await send({"type": "http.response.start", "status": 204, "headers": HEADERS})
            await send({"type": "http.response.body", "body": b""})
            return None

        async def send_with_cors(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), HEADERS[0]]}
            await send(message)

        return await self.app(scope, receive, send_with_cors)
