"""The agent console (/console): login, the app page, and the JSON API it calls. Session cookie plus
CSRF token on every state-changing request (zaima.web.staff_auth). Live updates come over /ws/agent."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel, Field
from sqlalchemy import select

from zaima.context import AppContext
from zaima.conversations import canned, conversations, messages
from zaima.conversations import events as ev
from zaima.core.audit import Actor
from zaima.core.errors import Forbidden, NotFound
from zaima.core.ratelimit import RateLimiter
from zaima.db import unit_of_work
from zaima.models import Customer, Order, StaffUser
from zaima.models.conversations import CONVERSATION_STATUSES
from zaima.realtime.publish import AGENT, publish_after_commit
from zaima.service import tickets
from zaima.staff import authenticate
from zaima.store import orders, stock
from zaima.store.views import order_view
from zaima.web.deps import client_ip, get_ctx
from zaima.web.pages import _lang as page_lang
from zaima.web.pages import render
from zaima.web.staff_auth import (
    COOKIE,
    check_csrf,
    current_agent,
    issue_session,
    issue_ticket,
    load_user,
    read_session,
    set_session_cookie,
)

router = APIRouter(include_in_schema=False)
api = APIRouter(prefix="/console/api", include_in_schema=False)

STATUS_TEXT = {
    "bot": ("机器人接待", "With bot"), "queued": ("排队中", "Queued"), "open": ("处理中", "Open"),
    "pending_customer": ("等待客户回复", "Waiting on customer"), "resolved": ("已解决", "Resolved"),
    "closed": ("已关闭", "Closed"),
}
ROLE_TEXT = {"agent": ("客服", "Agent"), "supervisor": ("主管", "Supervisor"), "admin": ("管理员", "Admin")}
login_limiter = RateLimiter(10, 600)


def _lang(request: Request) -> str:
    return page_lang(request)[0]


def _same_origin(request: Request) -> bool:
    """A login form posted from another site is refused (login CSRF)."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin:
        return True
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:  # not a URL at all (e.g. "http://[::1"): not our page either
        return False
    return netloc == request.headers.get("host", "")


@router.get("/console/login", response_class=HTMLResponse)
async def login_page(request: Request):
    return render(request, "console/login.html", private=True, error="", username="")


@router.post("/console/login", response_class=HTMLResponse)
async def login(request: Request, ctx: AppContext = Depends(get_ctx)):
    form = await request.form()
    username = str(form.get("username", ""))[:64].strip()
    password = str(form.get("password", ""))[:200]
    en = _lang(request) == "en"
    key = f"{client_ip(request)}:{username.lower()}"
    if not _same_origin(request):
        error = "Login must come from this site" if en else "登录请求来源不明，请从本站登录页登录"
    elif not login_limiter.allowed(key):
        error = "Too many attempts; wait ten minutes" if en else "尝试次数太多，请 10 分钟后再试"
    else:
        async with unit_of_work(ctx.sessions) as session:
            user = await authenticate(session, username, password)
        if user is not None:
            response = RedirectResponse("/console", status_code=303)
            set_session_cookie(response, ctx, issue_session(ctx, user))
            return response
        login_limiter.hit(key)
        error = "Wrong username or password" if en else "用户名或密码错误"
    return render(request, "console/login.html", status=401, private=True, error=error, username=username)


@router.post("/console/logout")
async def logout(request: Request, ctx: AppContext = Depends(get_ctx)):
    payload = read_session(ctx, request)
    if payload is not None:
        form = await request.form()
        check_csrf(request, payload, str(form.get("csrf", "")))
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


@router.get("/console", response_class=HTMLResponse)
async def console_page(request: Request, ctx: AppContext = Depends(get_ctx)):
    payload = read_session(ctx, request)
    user = await load_user(ctx, payload["uid"]) if payload else None
    if user is None:
        return RedirectResponse("/console/login", status_code=303)
    lang = _lang(request)
    pick = 1 if lang == "en" else 0
    me = {"id": user.id, "username": user.username, "display_name": user.display_name, "role": user.role}
    return render(request, "console/app.html", private=True, user=user, csrf=payload["csrf"],
                  me_json=json.dumps(me, ensure_ascii=False).replace("<", "\\u003c"),
                  role_text=ROLE_TEXT[user.role][pick],
                  statuses=[(s, STATUS_TEXT[s][pick]) for s in CONVERSATION_STATUSES])


# --- JSON API --------------------------------------------------------------------------------------------------


@api.post("/ws-ticket")
async def ws_ticket(ctx: AppContext = Depends(get_ctx), user: StaffUser = Depends(current_agent)):
    return {"ticket": issue_ticket(ctx, user)}


@api.get("/staff")
async def staff_list(ctx: AppContext = Depends(get_ctx), _: StaffUser = Depends(current_agent)):
    async with unit_of_work(ctx.sessions) as session:
        users = (await session.scalars(select(StaffUser).where(StaffUser.active.is_(True))
                                       .order_by(StaffUser.id))).all()
    presence = await ctx.hub.get_presence(AGENT)
    return {"staff": [{"id": u.id, "username": u.username, "display_name": u.display_name, "role": u.role,
                       "presence": presence.get(u.username, "offline")} for u in users]}


@api.get("/canned")
async def canned_list(q: str = "", ctx: AppContext = Depends(get_ctx), _: StaffUser = Depends(current_agent)):
    async with unit_of_work(ctx.sessions) as session:
        rows = await canned.search_canned(session, q, limit=50) if q else await canned.list_canned(session)
    return {"canned": [{"id": c.id, "shortcut": c.shortcut, "title": c.title, "body": c.body} for c in rows]}


@api.get("/conversations")
async def inbox(view: str = "mine", status: str = "", ctx: AppContext = Depends(get_ctx),
                user: StaffUser = Depends(current_agent)):
    statuses = status or conversations.ACTIVE_STATUSES
    async with unit_of_work(ctx.sessions) as session:
        items = await conversations.list_inbox(session, view=view, staff_id=user.id, status=statuses, limit=100)
        return {"conversations": [item.to_dict() for item in items]}


@api.get("/conversations/{conversation_id}")
async def conversation_detail(conversation_id: int, ctx: AppContext = Depends(get_ctx),
                              _: StaffUser = Depends(current_agent)):
    async with unit_of_work(ctx.sessions) as session:
        conversation = await conversations.get_conversation(session, conversation_id)
        item = await conversations.inbox_item(session, conversation)
        rows = await messages.list_messages(session, conversation, max(0, conversation.last_seq - 200), 500,
                                            include_internal=True)
        order = await session.get(Order, conversation.order_id) if conversation.order_id else None
        order_data = await order_view(session, ctx, order, staff=True) if order is not None else None
        customer = await session.get(Customer, conversation.customer_id)
        return {"conversation": item.to_dict(), "messages": [ev.message_staff_view(m) for m in rows],
                "order": order_data,
                "customer": {"id": customer.id, "kind": customer.kind, "display_name": customer.display_name,
                             "contact": customer.contact}}


class StatusIn(BaseModel):
    status: str = Field(max_length=24)


class AssignIn(BaseModel):
    assignee_id: int | None = None


async def _change(ctx: AppContext, conversation_id: int, change) -> dict:
    async def run(session):
        conversation = await conversations.get_conversation(session, conversation_id)
        publish_after_commit(session, ctx.hub, await change(session, conversation))
        return (await conversations.inbox_item(session, conversation)).to_dict()

    return {"conversation": await ctx.transact(run)}


@api.post("/conversations/{conversation_id}/status")
async def set_status(conversation_id: int, body: StatusIn, ctx: AppContext = Depends(get_ctx),
                     user: StaffUser = Depends(current_agent)):
    async def change(session, conversation):
        if body.status == "queued":  # back to the queue lets go of the owner: the assignment rule applies
            check_may_assign(user, conversation.assignee_id, None, bool(conversation.sla_breached))
        return await tickets.change_status(session, ctx, conversation, body.status)

    return await _change(ctx, conversation_id, change)


def check_may_assign(user: StaffUser, current: int | None, new: int | None, breached: bool = False) -> None:
    """Agents take unassigned conversations and let go of their own; supervisors and admins may also
    hand anyone's conversation to anyone. A ticket that breached its SLA may be taken by any agent."""
    if user.role in ("supervisor", "admin"):
        return
    if breached and new == user.id:
        return
    if current not in (None, user.id) or new not in (None, user.id):
        raise Forbidden("只有主管可以改派其他客服的会话", "only a supervisor can reassign other agents' conversations")


@api.post("/conversations/{conversation_id}/assign")
async def assign(conversation_id: int, body: AssignIn, ctx: AppContext = Depends(get_ctx),
                 user: StaffUser = Depends(current_agent)):
    async def change(session, conversation):
        check_may_assign(user, conversation.assignee_id, body.assignee_id, bool(conversation.sla_breached))
        staff = None
        if body.assignee_id is not None:
            staff = await session.get(StaffUser, body.assignee_id)
            if staff is None or not staff.active:
                raise NotFound("找不到这位客服", "no such agent", field="assignee_id")
        return await tickets.assign(session, ctx, conversation, staff)

    return await _change(ctx, conversation_id, change)


class RevealIn(BaseModel):
    conversation_id: int | None = None


@api.post("/orders/{order_no}/reveal-keys")
async def reveal_keys(order_no: str, body: RevealIn, ctx: AppContext = Depends(get_ctx),
                      user: StaffUser = Depends(current_agent)):
    """Plaintext keys for the agent; the reveal goes into the order's audit log with the conversation."""
    async with unit_of_work(ctx.sessions) as session:
        order = await orders.get_order(session, order_no)
        actor = Actor("agent", user.username, body.conversation_id)
        keys = await stock.reveal_order_keys(session, ctx.box, ctx.clock, order, actor)
        return {"keys": keys}
