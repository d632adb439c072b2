"""What every realtime socket shares (docs/realtime.md): the auth deadline, frame parsing and limits,
error frames, the heartbeat timeout, and the pump from a hub subscription to the socket.

A bad frame is answered with an `error` frame and the socket stays open; only authentication problems
and a client that fell behind close it, with the documented codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import structlog
from fastapi import WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketState

from zaima.core.errors import DomainError
from zaima.core.jsoncheck import PROBLEMS, problem_in_raw
from zaima.db import is_unstorable_value, unstorable_message
from zaima.realtime.hub import HUB_CLOSED, RESYNC_TOPIC

log = structlog.get_logger("zaima.realtime")

AUTH_TIMEOUT = 10.0
IDLE_TIMEOUT = 70.0  # clients ping every 25 s
MAX_FRAME_BYTES = 64 * 1024
FRAMES_PER_SECOND = 20  # a customer
AGENT_FRAMES_PER_SECOND = 200  # an agent's console subscribes to many conversations at once on resume
QUEUE_SIZE = 256

CLOSE_UNAUTHENTICATED = 4001
CLOSE_RESUME = 4009
CLOSE_GOING_AWAY = 1001
CLOSE_TRY_AGAIN = 1013

ERRORS = {
    "bad_json": ("消息格式错误：需要一个 JSON 对象", "the frame must be a JSON object"),
    "unknown_type": ("不支持的消息类型", "unknown frame type"),
    "invalid": ("消息字段缺失或格式错误", "a field is missing or has the wrong type"),
    "too_long": ("消息太长", "the frame is too long"),
    "rate_limited": ("发送太快了，请稍等片刻", "too many frames; slow down"),
    "not_found": ("找不到这个会话", "no such conversation"),
    "not_authenticated": ("请先登录", "authenticate first"),
}


class FrameError(Exception):
    def __init__(self, code: str, ref: str | None = None, message: tuple[str, str] | None = None):
        super().__init__(code)
        self.code, self.ref = code, ref
        self.message = message or ERRORS.get(code, ERRORS["invalid"])


def error_frame(code: str, message: tuple[str, str], ref: str | None = None) -> dict:
    frame = {"type": "error", "code": code, "message": message[0], "message_en": message[1]}
    if ref is not None:
        frame["ref"] = ref
    return frame


def parse_frame(raw: str) -> dict:
    if len(raw.encode()) > MAX_FRAME_BYTES:
        raise FrameError("too_long")
    problem = problem_in_raw(raw)
    if problem is not None:
        raise FrameError("invalid", message=PROBLEMS[problem])
    try:
        frame = json.loads(raw)
    except ValueError:
        raise FrameError("bad_json") from None
    if not isinstance(frame, dict):
        raise FrameError("bad_json")
    if not isinstance(frame.get("type"), str):
        raise FrameError("unknown_type")
    return frame


MAX_FIELD_INT = 2**31 - 1  # ids and sequence numbers are 32-bit columns on PostgreSQL


def int_field(frame: dict, name: str, default: int | None = None, minimum: int = 0) -> int:
    value = frame.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= MAX_FIELD_INT:
        raise FrameError("invalid", ref=name)
    return value


def client_msg_id(frame: dict) -> str:
    value = frame.get("client_msg_id")
    if not isinstance(value, str) or not (1 <= len(value) <= 64) or not value.isprintable():
        raise FrameError("invalid", ref="client_msg_id")
    return value


class RateLimit:
    """A token bucket per socket: FRAMES_PER_SECOND sustained, the same again as a burst."""

    def __init__(self, rate: float = FRAMES_PER_SECOND):
        self.rate, self.tokens, self.at = rate, rate * 2, time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.rate * 2, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class Socket:
    """One websocket: send helpers that never raise on a closed socket, and the receive loop."""

    def __init__(self, ws: WebSocket, frames_per_second: float = FRAMES_PER_SECOND):
        self.ws = ws
        self.limit = RateLimit(frames_per_second)
        self.send_lock = asyncio.Lock()

    async def send(self, frame: dict) -> None:
        if self.ws.application_state != WebSocketState.CONNECTED:
            return
        async with self.send_lock:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                await self.ws.send_text(json.dumps(frame, ensure_ascii=False, separators=(",", ":")))

    async def close(self, code: int, reason: str = "") -> None:
        with contextlib.suppress(RuntimeError):
            await self.ws.close(code, reason)

    async def receive(self, timeout: float) -> str | None:
        """The next text frame; None when the client went away or stayed silent too long."""
        try:
            async with asyncio.timeout(timeout):  # no extra task per frame, unlike wait_for on 3.11
                message = await self.ws.receive()
        except TimeoutError:
            return None
        if message["type"] == "websocket.disconnect":
            return None
        text = message.get("text")
        if text is None:
            data = message.get("bytes") or b""
            text = data.decode("utf-8", errors="replace")
        return text

    async def first_frame(self) -> dict | None:
        raw = await self.receive(AUTH_TIMEOUT)
        if raw is None:
            return None
        try:
            return parse_frame(raw)
        except FrameError:
            return None

    async def serve(self, handle) -> None:
        """Read frames until the client leaves; `handle(frame)` may raise FrameError or DomainError,
        which become error frames."""
        while True:
            raw = await self.receive(IDLE_TIMEOUT)
            if raw is None:
                return
            ref = None
            try:
                frame = parse_frame(raw)
                # The reference a client can match an error with: its message id, else the frame type.
                ref = frame.get("client_msg_id") if isinstance(frame.get("client_msg_id"), str) else frame["type"]
                if frame["type"] != "ping" and not self.limit.allow():
                    raise FrameError("rate_limited")
                await handle(frame)
            except FrameError as exc:
                await self.send(error_frame(exc.code, exc.message, ref or exc.ref))
            except DomainError as exc:
                body = exc.to_dict()
                await self.send(error_frame(body.get("code", "invalid"), (body["message"], body["message_en"]), ref))
            except Exception as exc:
                if not is_unstorable_value(exc):
                    raise
                await self.send(error_frame("invalid", unstorable_message(exc), ref))

    async def pump(self, subscription, transform) -> None:
        """Forward hub events to the socket (after `transform`, which may drop them by returning None).
        If the subscription overflowed the client fell behind: close with CLOSE_RESUME so it resumes."""
        async for topic, event in subscription:
            if topic == RESYNC_TOPIC:  # the hub may have lost events: let the client resume from the database
                await self.close(CLOSE_RESUME, "resume")
                return
            frame = await transform(event)
            if frame is not None:
                await self.send(frame)
        if subscription.overflowed:
            await self.close(CLOSE_RESUME, "resume")
        elif subscription.close_reason == HUB_CLOSED:
            await self.close(CLOSE_GOING_AWAY, "server restarting")


async def run_socket(socket: Socket, subscription, transform, handle) -> None:
    """Serve frames and pump events together; whichever ends first ends the other."""
    pump = asyncio.create_task(socket.pump(subscription, transform))
    try:
        reader = asyncio.create_task(socket.serve(handle))
        done, _ = await asyncio.wait({pump, reader}, return_when=asyncio.FIRST_COMPLETED)
        for task in (pump, reader):
            if task not in done:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        for task in done:
            if task.exception() is not None:
                log.warning("socket task failed", error=repr(task.exception()))
    finally:
        subscription.close()
