"""The agent socket (docs/realtime.md): the live inbox, watched conversations, replies and notes,
typing, read receipts and the agent's own presence. Authenticated with a one-minute ticket from
the console session, never with a customer token."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from zaima.context import AppContext
from zaima.conversations import conversations, messages
from zaima.conversations import events as ev
from zaima.conversations.senders import Sender
from zaima.core.errors import NotFound
from zaima.db import unit_of_work
from zaima.models import Conversation, StaffUser
from zaima.realtime.publish import AGENT, forget_online_count, publish_after_commit
from zaima.service import routing, tickets
from zaima.web.chat import publish_typing, read
from zaima.web.socket_base import (
    AGENT_FRAMES_PER_SECOND,
    CLOSE_UNAUTHENTICATED,
    FrameError,
    Socket,
    client_msg_id,
    int_field,
    run_socket,
)
from zaima.web.staff_auth import load_user, read_ticket

router = APIRouter()
PRESENCE_STATES = ("online", "away", "offline")
TAKES_OVER = ("bot", "queued")  # a public reply from an agent in these states opens the conversation


async def agent_reply(ctx: AppContext, user: StaffUser, conversation_id: int, text, internal: bool,
                      msg_id: str | None):
    """Post an agent's reply or note. A public reply to an unassigned conversation assigns it to the
    agent, and one to a conversation with the bot or in the queue opens it: the agent took over."""

    async def post(session):
        conversation = await conversations.get_conversation(session, conversation_id)
        events = []
        if not internal:
            if conversation.assignee_id is None:
                events += await tickets.assign(session, ctx, conversation, user)
            if conversation.status in TAKES_OVER:
                events += await tickets.change_status(session, ctx, conversation, "open")
        posted = await messages.post_message(session, ctx.clock, ctx.settings, conversation, Sender.agent(user), text,
                                             internal=internal, client_msg_id=msg_id)
        if posted.duplicate:
            events = []
        events += await tickets.after_post(session, ctx, conversation, posted)
        publish_after_commit(session, ctx.hub, events + posted.events)
        return posted

    return await ctx.transact(post)


async def release_conversations(ctx: AppContext, staff_id: int) -> None:
    async def release(session):
        publish_after_commit(session, ctx.hub, await routing.release_agent(session, ctx, staff_id))

    await ctx.transact(release)


class AgentSocket:
    def __init__(self, ctx: AppContext, socket: Socket, user: StaffUser, subscription):
        self.ctx, self.socket, self.user, self.subscription = ctx, socket, user, subscription
        self.lease = None

    async def set_presence(self, state: str, chosen: bool = False) -> None:
        """`chosen`: the agent picked away/offline in the console (a dropped connection is not a choice:
        the service loop releases its conversations only after a grace period)."""
        if state == "offline":
            if self.lease is not None:
                await self.lease.release()
                self.lease = None
        elif self.lease is None:
            self.lease = await self.ctx.hub.hold_presence(AGENT, self.user.username, state)
        else:
            await self.lease.update(state)
        forget_online_count(self.ctx.hub)
        if chosen and state != "online":  # going away gives back the conversations still waiting for a reply
            await release_conversations(self.ctx, self.user.id)
        self.ctx.kick_service()

    async def staff_presence(self) -> dict:
        return {"type": "staff_presence", "staff": await self.ctx.hub.get_presence(AGENT)}

    async def catch_up(self, conversation: Conversation, after_seq: int) -> None:
        while True:
            async with unit_of_work(self.ctx.sessions) as session:
                rows = await messages.list_messages(session, conversation, after_seq, 200, include_internal=True)
            for message in rows:
                await self.socket.send({"type": "message", "conversation_id": conversation.id,
                                        "message": ev.message_staff_view(message)})
            if len(rows) < 200:
                return
            after_seq = rows[-1].seq

    async def handle(self, frame: dict) -> None:
        kind = frame["type"]
        if kind == "ping":
            await self.socket.send({"type": "pong"})
        elif kind == "subscribe":
            conversation_id = int_field(frame, "conversation_id", minimum=1)
            last_seq = int_field(frame, "last_seq", 0)  # checked before subscribing: a refused frame changes nothing
            try:
                async with unit_of_work(self.ctx.sessions) as session:
                    conversation = await conversations.get_conversation(session, conversation_id)
            except NotFound:
                raise FrameError("not_found", ref="subscribe") from None
            self.subscription.add(ev.staff_topic(conversation_id))
            await self.catch_up(conversation, last_seq)
        elif kind == "unsubscribe":
            self.subscription.remove(ev.staff_topic(int_field(frame, "conversation_id", minimum=1)))
        elif kind == "send":
            msg_id = client_msg_id(frame)
            internal = frame.get("internal", False)
            if not isinstance(frame.get("text"), str) or not isinstance(internal, bool):
                raise FrameError("invalid", ref=msg_id)
            posted = await agent_reply(self.ctx, self.user, int_field(frame, "conversation_id", minimum=1),
                                       frame["text"], internal, msg_id)
            await self.socket.send({"type": "ack", "client_msg_id": msg_id, "seq": posted.message.seq,
                                    "duplicate": posted.duplicate, "message": ev.message_staff_view(posted.message)})
        elif kind == "typing":
            await publish_typing(self.ctx, int_field(frame, "conversation_id", minimum=1), "agent",
                                 self.user.display_name, bool(frame.get("state")))
        elif kind == "read":
            await read(self.ctx, int_field(frame, "conversation_id", minimum=1), "agent", int_field(frame, "seq"))
        elif kind == "presence":
            state = frame.get("state")
            if state not in PRESENCE_STATES:
                raise FrameError("invalid", ref="presence")
            await self.set_presence(state, chosen=True)
            await self.socket.send(await self.staff_presence())
        else:
            raise FrameError("unknown_type", ref=kind)

    async def transform(self, event: dict) -> dict | None:
        if event.get("type") == "presence":
            return await self.staff_presence() if event.get("kind") == AGENT else None
        return event


@router.websocket("/ws/agent")
async def agent_socket(ws: WebSocket):
    ctx: AppContext = ws.app.state.ctx
    await ws.accept()
    socket = Socket(ws, AGENT_FRAMES_PER_SECOND)
    frame = await socket.first_frame()
    user_id = read_ticket(ctx, frame.get("ticket")) if frame and frame.get("type") == "auth" else None
    user = await load_user(ctx, user_id) if isinstance(user_id, int) else None
    if user is None:
        await socket.close(CLOSE_UNAUTHENTICATED, "bad or expired ticket")
        return
    await ctx.hub.start()
    subscription = ctx.hub.subscribe([ev.INBOX_TOPIC, "presence"])
    handler = AgentSocket(ctx, socket, user, subscription)
    try:
        await handler.set_presence("online")  # connecting to the console means being on duty
        await socket.send({"type": "ready", "me": {"id": user.id, "username": user.username,
                                                   "display_name": user.display_name, "role": user.role},
                           "server_time": ctx.clock.now().isoformat(),
                           **{"staff_presence": (await handler.staff_presence())["staff"]}})
        await run_socket(socket, subscription, handler.transform, handler.handle)
    finally:
        subscription.close()
        if handler.lease is not None:
            await handler.lease.release()
            forget_online_count(ctx.hub)
            ctx.kick_service()
