"""Clients for the chat tests: a customer (HTTP session + socket) and an agent (console login + socket),
speaking the protocol of docs/realtime.md over real HTTP and WebSocket connections."""

from __future__ import annotations

import asyncio
import json
import re
import uuid

import httpx
import websockets

from zaima.db import unit_of_work
from zaima.staff import create_staff


def ws_url(base: str, path: str) -> str:
    return base.replace("http://", "ws://") + path


class Client:
    """One socket with a frame buffer: `expect(type)` waits for the next frame of that type."""

    def __init__(self, ws):
        self.ws = ws
        self.frames: list[dict] = []

    async def send(self, frame: dict | str) -> None:
        await self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def expect(self, kind: str, timeout: float = 5.0, where=None, **match) -> dict:
        async def find():
            while True:
                for i, frame in enumerate(self.frames):
                    if frame.get("type") == kind and all(frame.get(k) == v for k, v in match.items()) \
                            and (where is None or where(frame)):
                        return self.frames.pop(i)
                self.frames.append(json.loads(await self.ws.recv()))

        return await asyncio.wait_for(find(), timeout)

    async def quiet(self, seconds: float = 0.3) -> list[dict]:
        """Whatever arrives in the next `seconds` (plus what is buffered)."""
        try:
            while True:
                self.frames.append(json.loads(await asyncio.wait_for(self.ws.recv(), seconds)))
        except TimeoutError:
            pass
        frames, self.frames = self.frames, []
        return frames

    async def close(self) -> None:
        await self.ws.close()


async def customer_session(base: str, **body) -> dict:
    async with httpx.AsyncClient(base_url=base) as http:
        r = await http.post("/api/v1/chat/session", json=body)
        assert r.status_code == 200, r.text
        return r.json()


async def customer_socket(base: str, session: dict, last_seq: int = 0, conversation_id: int | None = None) -> Client:
    ws = await websockets.connect(ws_url(base, "/ws/customer"))
    client = Client(ws)
    await client.send({"type": "auth", "token": session["customer_token"],
                       "conversation_id": conversation_id or session["conversation"]["id"], "last_seq": last_seq})
    await client.expect("ready")
    return client


async def say(client: Client, conversation_id: int, text: str, msg_id: str | None = None, **extra) -> dict:
    msg_id = msg_id or uuid.uuid4().hex
    await client.send({"type": "send", "conversation_id": conversation_id, "client_msg_id": msg_id, "text": text,
                       **extra})
    return await client.expect("ack", client_msg_id=msg_id)


async def make_agent(ctx, username: str = "agent1", password: str = "agent-pass-2026", role: str = "agent"):
    async with unit_of_work(ctx.sessions) as session:
        return await create_staff(session, ctx.clock, username, password, role, display_name=f"客服{username[-1]}")


class Agent:
    def __init__(self, http: httpx.AsyncClient, csrf: str):
        self.http, self.csrf = http, csrf

    async def post(self, path: str, json_body: dict | None = None, csrf: bool = True) -> httpx.Response:
        headers = {"X-CSRF-Token": self.csrf} if csrf else {}
        return await self.http.post(path, json=json_body or {}, headers=headers)

    async def socket(self) -> Client:
        r = await self.post("/console/api/ws-ticket")
        assert r.status_code == 200, r.text
        ws = await websockets.connect(ws_url(str(self.http.base_url), "/ws/agent"))
        client = Client(ws)
        await client.send({"type": "auth", "ticket": r.json()["ticket"]})
        await client.expect("ready")
        return client


async def agent_login(base: str, username: str = "agent1", password: str = "agent-pass-2026") -> Agent:
    http = httpx.AsyncClient(base_url=base)
    r = await http.post("/console/login", data={"username": username, "password": password})
    assert r.status_code == 303, r.text
    page = await http.get("/console")
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)
    return Agent(http, csrf)
