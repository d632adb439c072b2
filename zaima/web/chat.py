"""The customer side of chat: start a session (HTTP), catch up and upload images (HTTP), and the
customer socket. Thin: identity, conversations and messages are zaima.conversations' business.
Protocol: docs/realtime.md.
"""

from __future__ import annotations

import structlog
from fastapi import APIRouter, Depends, File, Form, Header, Request, UploadFile, WebSocket
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from zaima.bot import engine as bot_engine
from zaima.context import AppContext
from zaima.conversations import attachments, conversations, identity, messages
from zaima.conversations import events as ev
from zaima.conversations.conversations import ConversationClosed
from zaima.conversations.senders import Sender
from zaima.core.errors import DomainError, NotFound
from zaima.db import is_unstorable_value, unit_of_work
from zaima.models import Attachment, Conversation, Customer, Order
from zaima.realtime.publish import agents_online, publish_after_commit
from zaima.service import queue, tickets
from zaima.web.deps import get_ctx
from zaima.web.message_writer import writer_for
from zaima.web.socket_base import (
    CLOSE_TRY_AGAIN,
    CLOSE_UNAUTHENTICATED,
    FrameError,
    Socket,
    client_msg_id,
    int_field,
    run_socket,
)

router = APIRouter(tags=["chat"])
log = structlog.get_logger("zaima.chat")
HISTORY = 50
IMAGE_TYPES = ["image/png", "image/jpeg", "image/webp", "image/gif"]


class IdentityIn(BaseModel):
    user_id: str = Field(max_length=128)
    ts: int | str
    sig: str = Field(max_length=128)
    name: str | None = Field(default=None, max_length=100)


class SessionIn(BaseModel):
    customer_token: str | None = Field(default=None, max_length=4096)
    order_context: str | None = Field(default=None, max_length=4096)
    identity: IdentityIn | None = None


async def _current_conversation(session, ctx: AppContext, customer: Customer, order) -> tuple[Conversation, list]:
    """The conversation the widget shows: the one about this order, else the customer's latest open one."""
    if order is None:
        for conversation in await conversations.list_for_customer(session, customer.id):
            if conversation.status != "closed":
                return conversation, []
    opened = await conversations.open_conversation(session, ctx.clock, customer, order)
    return opened.conversation, opened.events


async def history(session, conversation: Conversation, limit: int = HISTORY) -> list:
    """The last `limit` customer-visible messages, oldest first."""
    rows = await messages.list_messages(session, conversation, max(0, conversation.last_seq - 4 * limit), 500)
    return rows[-limit:]


@router.post("/api/v1/chat/session")
async def start_session(body: SessionIn | None = None, ctx: AppContext = Depends(get_ctx)):
    body = body or SessionIn()
    external = None
    if body.identity is not None:
        external = identity.ExternalIdentity(body.identity.user_id, body.identity.ts, body.identity.sig,
                                             body.identity.name)
    async with unit_of_work(ctx.sessions) as session:
        resolved = await identity.resolve_customer(session, ctx.settings, ctx.clock, customer_token=body.customer_token,
                                                   order_context=body.order_context, external=external)
        conversation, events = await _current_conversation(session, ctx, resolved.customer, resolved.order)
        publish_after_commit(session, ctx.hub, events)
        order_no = await conversations.order_no_of(session, conversation)
        rows = await history(session, conversation)
        payload = {
            "customer_token": resolved.token,
            "customer": {"id": resolved.customer.id, "name": resolved.customer.display_name},
            "conversation": ev.conversation_public_view(conversation, order_no),
            "messages": [ev.message_public_view(m) for m in rows],
        }
    payload["agents_online"] = await agents_online(ctx.hub)
    payload["limits"] = {"text_chars": ctx.settings.message_max_chars, "image_bytes": ctx.settings.attachment_max_bytes,
                         "image_types": IMAGE_TYPES}
    return payload


def bearer(authorization: str | None) -> str | None:
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return None


async def _customer_conversation(session, ctx: AppContext, token: str | None, conversation_id: int):
    customer = await identity.customer_from_token(session, ctx.settings, ctx.clock, token)
    return customer, await conversations.get_for_customer(session, customer.id, conversation_id)


@router.get("/api/v1/chat/conversations/{conversation_id}/messages")
async def list_messages(conversation_id: int, after_seq: int = 0, ctx: AppContext = Depends(get_ctx),
                        authorization: str | None = Header(default=None)):
    async with unit_of_work(ctx.sessions) as session:
        _, conversation = await _customer_conversation(session, ctx, bearer(authorization), conversation_id)
        rows = await messages.list_messages(session, conversation, after_seq)
        return {"messages": [ev.message_public_view(m) for m in rows]}


@router.post("/api/v1/chat/conversations/{conversation_id}/attachments")
async def upload_image(conversation_id: int, file: UploadFile = File(...), client_msg_id: str | None = Form(None),
                       ctx: AppContext = Depends(get_ctx), authorization: str | None = Header(default=None)):
    # At most one byte past the limit: enough for store_image to refuse a huge file without reading it all.
    data = await file.read(ctx.settings.attachment_max_bytes + 1)

    async def store(session):
        customer, conversation = await _customer_conversation(session, ctx, bearer(authorization), conversation_id)
        sender = Sender.customer(customer)
        attachment = await attachments.store_image(session, ctx.settings, ctx.clock, conversation, sender, data,
                                                   file.filename or "")
        posted = await messages.post_message(session, ctx.clock, ctx.settings, conversation, sender, "",
                                             client_msg_id=client_msg_id or None, attachment=attachment)
        extra = await tickets.after_post(session, ctx, conversation, posted)
        publish_after_commit(session, ctx.hub, posted.events + extra)
        return {"message": ev.message_public_view(posted.message), "duplicate": posted.duplicate}

    return await ctx.transact(store)


@router.get("/chat/attachments/{attachment_id}/{key}", include_in_schema=False)
async def attachment_file(attachment_id: int, key: str, request: Request, ctx: AppContext = Depends(get_ctx)):
    """An image by its capability URL (the id and a secret derived from it, handed out only inside
    messages its viewers may read). `?thumb=1` for the thumbnail."""
    async with unit_of_work(ctx.sessions) as session:
        attachment = await session.get(Attachment, attachment_id)
    if attachment is None or not ev.check_attachment_key(attachment, key):
        raise NotFound("图片不存在", "image not found")
    thumb = request.query_params.get("thumb") == "1"
    path = attachments.attachment_file(ctx.settings, attachment, thumbnail=thumb)
    media = ("image/png" if path.suffix == ".png" else "image/jpeg") if thumb else attachment.content_type
    return FileResponse(path, media_type=media, headers={
        "Cache-Control": "private, max-age=31536000, immutable", "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; sandbox"})


# --- the customer socket ---------------------------------------------------------------------------------------


class CustomerSocket:
    def __init__(self, ctx: AppContext, socket: Socket, customer: Customer, conversation: Conversation):
        self.ctx, self.socket, self.customer, self.conversation = ctx, socket, customer, conversation
        self.sender = Sender.customer(customer)
        self.subscription = None

    def switch_to(self, conversation: Conversation) -> None:
        self.subscription.remove(ev.public_topic(self.conversation.id))
        self.subscription.add(ev.public_topic(conversation.id))
        self.conversation = conversation

    async def ready_frame(self) -> dict:
        async with unit_of_work(self.ctx.sessions) as session:
            conversation = await session.get(Conversation, self.conversation.id)
            order_no = await conversations.order_no_of(session, conversation)
            queue_view = await queue.queue_status(session, self.ctx, conversation)
        return {"type": "ready", "conversation": ev.conversation_public_view(conversation, order_no),
                "agents_online": await agents_online(self.ctx.hub), "server_time": self.ctx.clock.now().isoformat(),
                "queue": queue_view}

    async def catch_up(self, after_seq: int) -> None:
        while True:
            async with unit_of_work(self.ctx.sessions) as session:
                rows = await messages.list_messages(session, self.conversation, after_seq, 200)
            for message in rows:
                await self.socket.send({"type": "message", "conversation_id": self.conversation.id,
                                        "message": ev.message_public_view(message)})
            if len(rows) < 200:
                return
            after_seq = rows[-1].seq

    def _check_conversation(self, frame: dict) -> None:
        if int_field(frame, "conversation_id", self.conversation.id, 1) != self.conversation.id:
            raise FrameError("not_found", ref=frame.get("client_msg_id"))

    async def handle(self, frame: dict) -> None:
        kind = frame["type"]
        if kind == "ping":
            await self.socket.send({"type": "pong"})
        elif kind == "send":
            await self.send_message(frame)
        elif kind == "typing":
            self._check_conversation(frame)
            await publish_typing(self.ctx, self.conversation.id, "customer", self.customer.display_name,
                                 bool(frame.get("state")))
        elif kind == "read":
            self._check_conversation(frame)
            await read(self.ctx, self.conversation.id, "customer", int_field(frame, "seq"))
        else:
            raise FrameError("unknown_type", ref=kind)

    async def send_message(self, frame: dict) -> None:
        self._check_conversation(frame)
        msg_id = client_msg_id(frame)
        text = frame.get("text")
        if not isinstance(text, str):
            raise FrameError("invalid", ref=msg_id)
        if len(text) > self.ctx.settings.message_max_chars:
            raise FrameError("too_long", ref=msg_id, message=(
                f"消息不能超过 {self.ctx.settings.message_max_chars} 个字",
                f"a message can be at most {self.ctx.settings.message_max_chars} characters"))

        async def alone(session):
            conversation = await session.get(Conversation, self.conversation.id)
            events = []
            if conversation.status == "closed":
                # A closed ticket stays closed: writing again starts a new conversation (same order).
                order = await session.get(Order, conversation.order_id) if conversation.order_id else None
                customer = await session.get(Customer, self.customer.id)
                opened = await conversations.open_conversation(session, self.ctx.clock, customer, order)
                conversation, events = opened.conversation, opened.events
            posted = await messages.post_message(session, self.ctx.clock, self.ctx.settings, conversation, self.sender,
                                                 text, client_msg_id=msg_id)
            events += await tickets.after_post(session, self.ctx, conversation, posted)
            publish_after_commit(session, self.ctx.hub, events + posted.events)
            return conversation, posted

        try:  # stored together with other sockets' messages (one transaction per batch)
            conversation, posted = await writer_for(self.ctx).post(
                messages.Draft(self.conversation.id, self.sender, text, msg_id))
        except (ConversationClosed, messages.ConversationBusy):
            conversation, posted = await self.ctx.transact(alone)
        if conversation.id != self.conversation.id:
            async with unit_of_work(self.ctx.sessions) as session:
                order_no = await conversations.order_no_of(session, conversation)
            self.switch_to(conversation)
            await self.socket.send({"type": "conversation", "conversation_id": conversation.id,
                                    "conversation": ev.conversation_public_view(conversation, order_no)})
        await self.socket.send({"type": "ack", "client_msg_id": msg_id, "seq": posted.message.seq,
                                "duplicate": posted.duplicate, "message": ev.message_public_view(posted.message)})
        if not posted.duplicate and self.ctx.settings.bot_enabled and conversation.status == "bot":
            # After the ack: the customer's message is safe whatever the bot does. (The bot re-checks
            # the status in its own transaction: an agent may take the conversation meanwhile.)
            self.ctx.spawn(bot_engine.respond(self.ctx, self.conversation.id, posted.message.body), "bot-turn")

    async def transform(self, event: dict) -> dict | None:
        if event.get("type") == "presence":
            if event.get("kind") != "agent":
                return None
            return {"type": "presence", "agents_online": await agents_online(self.ctx.hub, fresh=True)}
        return event


async def publish_typing(ctx: AppContext, conversation_id: int, sender_kind: str, name: str, state: bool) -> None:
    frame = {"type": "typing", "conversation_id": conversation_id, "sender_kind": sender_kind, "name": name,
             "state": state}
    await ctx.hub.publish(ev.public_topic(conversation_id), frame)
    await ctx.hub.publish(ev.staff_topic(conversation_id), frame)


async def read(ctx: AppContext, conversation_id: int, reader: str, seq: int) -> None:
    async def mark(session):
        conversation = await session.get(Conversation, conversation_id)
        if conversation is None:
            raise FrameError("not_found")
        marker = await messages.mark_read(session, conversation, reader, seq)
        publish_after_commit(session, ctx.hub, marker.events)

    await ctx.transact(mark)


@router.websocket("/ws/customer")
async def customer_socket(ws: WebSocket):
    ctx: AppContext = ws.app.state.ctx
    await ws.accept()
    socket = Socket(ws, ctx.settings.customer_frames_per_second)
    frame = await socket.first_frame()
    if frame is None or frame.get("type") != "auth":
        await socket.close(CLOSE_UNAUTHENTICATED, "auth required")
        return
    try:
        conversation_id = int_field(frame, "conversation_id", minimum=1)
        last_seq = int_field(frame, "last_seq", 0)
        async with unit_of_work(ctx.sessions) as session:
            customer, conversation = await _customer_conversation(session, ctx, frame.get("token"), conversation_id)
    except Exception as exc:
        if not isinstance(exc, DomainError | FrameError) and not is_unstorable_value(exc):
            raise
        await socket.close(CLOSE_UNAUTHENTICATED, "bad token or conversation")
        return
    handler = CustomerSocket(ctx, socket, customer, conversation)
    await ctx.hub.start()
    subscription = ctx.hub.subscribe([ev.public_topic(conversation.id), "presence"])
    handler.subscription = subscription
    try:
        # Subscribed before reading the database: nothing published in between is missed (the client
        # de-duplicates by seq what arrives both ways).
        await socket.send(await handler.ready_frame())
        await handler.catch_up(last_seq)
    except Exception as exc:  # e.g. the database pool is exhausted under a reconnect storm
        subscription.close()
        log.warning("customer_socket_catch_up_failed", error=repr(exc)[:200])
        await socket.close(CLOSE_TRY_AGAIN, "try again")
        return
    await run_socket(socket, subscription, handler.transform, handler.handle)
