"""Service settings for operators (/api/v1/admin): service hours, SLA policy, VIP rules and each agent's
routing settings; and the console's read-only view of the human queue (/console/api/queue).

Authentication as in the rest of the admin API: HTTP Basic against staff accounts (zaima.store.admin_api).
A staff member logged into the console may call the same endpoints with the session cookie instead (plus
the `X-CSRF-Token` header for writes). Every staff member may read; supervisors and admins may change.

The rules live in zaima.service (calendar, policy): a body they reject answers 422 with a message in
Chinese (and English) and nothing is saved.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from sqlalchemy import select

from zaima.context import AppContext
from zaima.conversations import events as ev
from zaima.core.errors import Forbidden, NotFound, ValidationFailed
from zaima.db import on_commit, unit_of_work
from zaima.models import Conversation, Customer, Order, StaffUser
from zaima.models.catalog import PRODUCT_KINDS
from zaima.realtime.publish import AGENT
from zaima.service import queue, routing, sla
from zaima.service.calendar import describe_time, load_calendar, save_service_hours
from zaima.service.metrics import service_metrics
from zaima.service.policy import load_sla, load_vip, save_sla, save_vip
from zaima.store.admin_api import Unauthorized, current_staff
from zaima.store.views import KIND_TEXT
from zaima.web.deps import get_ctx
from zaima.web.pages import forget_service_facts
from zaima.web.staff_auth import current_agent, read_session

router = APIRouter(prefix="/api/v1/admin", tags=["service admin"])
console_api = APIRouter(prefix="/console/api", include_in_schema=False)

basic = HTTPBasic(realm="Zaima", auto_error=False)
MANAGERS = ("supervisor", "admin")
LANGUAGES = ("zh", "en")
MAX_CONCURRENT = (1, 50)
ROUTING_FIELDS = ("max_concurrent", "skills", "languages")
QUEUE_LIMIT = 200


# --- authentication ----------------------------------------------------------------------------------------------


async def service_staff(request: Request, credentials: HTTPBasicCredentials | None = Depends(basic),
                        ctx: AppContext = Depends(get_ctx)) -> StaffUser:
    """HTTP Basic when the request carries it, else the console session (CSRF checked for writes)."""
    if credentials is not None:
        return await current_staff(credentials, ctx)
    if read_session(ctx, request) is not None:
        return await current_agent(request, ctx)
    raise Unauthorized()


async def service_manager(user: StaffUser = Depends(service_staff)) -> StaffUser:
    if user.role not in MANAGERS:
        raise Forbidden("只有主管或管理员可以修改服务设置", "only a supervisor or an admin can change service settings")
    return user


def _object(body: Any, what_zh: str, what_en: str) -> dict:
    if not isinstance(body, dict):
        raise ValidationFailed(f"{what_zh}应为 JSON 对象", f"{what_en} must be a JSON object")
    return body


# --- service hours, SLA, VIP -------------------------------------------------------------------------------------


@router.get("/settings/service-hours")
async def get_service_hours(ctx: AppContext = Depends(get_ctx), _: StaffUser = Depends(service_staff)):
    """The business calendar (timezone, weekly periods, holidays, 调休 workdays, special dates)."""
    async with unit_of_work(ctx.sessions) as session:
        return (await load_calendar(session)).to_dict()


@router.put("/settings/service-hours")
async def put_service_hours(body: Any = Body(...), ctx: AppContext = Depends(get_ctx),
                            _: StaffUser = Depends(service_manager)):
    """Replace the service hours; keys left out take their defaults. Answers the normalised settings."""
    async with unit_of_work(ctx.sessions) as session:
        calendar = await save_service_hours(session, _object(body, "营业时间设置", "Service hours"))
        queue.schedule_routing(session, ctx)  # queued customers learn the new opening times
        on_commit(session, forget_service_facts)  # and the pages show them
        return calendar.to_dict()


@router.get("/settings/sla")
async def get_sla(ctx: AppContext = Depends(get_ctx), _: StaffUser = Depends(service_staff)):
    async with unit_of_work(ctx.sessions) as session:
        return (await load_sla(session)).to_dict()


@router.put("/settings/sla")
async def put_sla(body: Any = Body(...), ctx: AppContext = Depends(get_ctx), _: StaffUser = Depends(service_manager)):
    """Top-level keys left out keep their value; inside `targets` and `vip`, what is left out takes its default.
    Tickets already in progress keep their due times; new targets start with the next hand-off."""
    async with unit_of_work(ctx.sessions) as session:
        policy = await save_sla(session, _object(body, "SLA 设置", "SLA settings"))
        queue.schedule_routing(session, ctx)
        on_commit(session, forget_service_facts)  # the reply promise on /support
        return policy.to_dict()


@router.get("/settings/vip")
async def get_vip(ctx: AppContext = Depends(get_ctx), _: StaffUser = Depends(service_staff)):
    async with unit_of_work(ctx.sessions) as session:
        return (await load_vip(session)).to_dict()


@router.put("/settings/vip")
async def put_vip(body: Any = Body(...), ctx: AppContext = Depends(get_ctx), _: StaffUser = Depends(service_manager)):
    """Keys left out keep their value. A buyer becomes VIP at their next hand-off."""
    async with unit_of_work(ctx.sessions) as session:
        return (await save_vip(session, _object(body, "VIP 规则", "VIP rules"))).to_dict()


# --- staff routing -------------------------------------------------------------------------------------------------


def routing_view(user: StaffUser, presence: dict[str, str]) -> dict:
    return {"id": user.id, "username": user.username, "display_name": user.display_name, "role": user.role,
            "active": user.active, "presence": presence.get(user.username, "offline"),
            "max_concurrent": user.max_concurrent, "skills": list(user.skills or []),
            "languages": list(user.languages or ["zh"])}


def parse_routing(values: dict) -> dict:
    """Validate a routing change: `max_concurrent` 1–50, `skills` ⊆ product kinds (empty: every kind),
    `languages` ⊆ zh/en and not empty. Duplicates are dropped; the order is the canonical one."""
    unknown = [key for key in values if key not in ROUTING_FIELDS]
    if unknown:
        raise ValidationFailed(f"未知的字段「{unknown[0]}」，可修改：{'、'.join(ROUTING_FIELDS)}",
                               f"Unknown field {unknown[0]!r}; expected {', '.join(ROUTING_FIELDS)}", field=unknown[0])
    if not values:
        raise ValidationFailed("没有要修改的内容（可修改：max_concurrent、skills、languages）",
                               "Nothing to change (fields: max_concurrent, skills, languages)")
    changes: dict = {}
    if "max_concurrent" in values:
        value = values["max_concurrent"]
        low, high = MAX_CONCURRENT
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ValidationFailed(f"同时接待上限 max_concurrent 必须是 {low} 到 {high} 之间的整数",
                                   f"max_concurrent must be a whole number from {low} to {high}",
                                   field="max_concurrent")
        changes["max_concurrent"] = value
    if "skills" in values:
        skills = values["skills"]
        kinds = "、".join(f"{k}（{KIND_TEXT[k][0]}）" for k in PRODUCT_KINDS)
        if not isinstance(skills, list) or any(s not in PRODUCT_KINDS for s in skills):
            raise ValidationFailed(f"技能 skills 应为商品类型列表，只能包含 {kinds}；空列表表示接待所有类型",
                                   f"skills must be a list of product kinds ({', '.join(PRODUCT_KINDS)}); "
                                   "empty means every kind", field="skills")
        changes["skills"] = [k for k in PRODUCT_KINDS if k in skills]
    if "languages" in values:
        languages = values["languages"]
        if not isinstance(languages, list) or not languages or any(x not in LANGUAGES for x in languages):
            raise ValidationFailed("语言 languages 至少选一种，只能是 zh（中文）或 en（英文）",
                                   "languages must hold at least one of zh, en", field="languages")
        changes["languages"] = [x for x in LANGUAGES if x in languages]
    return changes


@router.get("/service/metrics")
async def get_metrics(hours: int = 24, ctx: AppContext = Depends(get_ctx), _: StaffUser = Depends(service_staff)):
    """Service levels over the last `hours` (1–2160), as defined in docs/metrics.md."""
    if not 1 <= hours <= 24 * 90:
        raise ValidationFailed("hours 必须在 1 到 2160 之间", "hours must be from 1 to 2160", field="hours")
    now = ctx.clock.now()
    async with unit_of_work(ctx.sessions) as session:
        return await service_metrics(session, await load_calendar(session), now - timedelta(hours=hours), now)


@router.get("/staff/routing")
async def list_routing(ctx: AppContext = Depends(get_ctx), _: StaffUser = Depends(service_staff)):
    presence = await ctx.hub.get_presence(AGENT)
    async with unit_of_work(ctx.sessions) as session:
        users = await session.scalars(select(StaffUser).order_by(StaffUser.id))
        return {"staff": [routing_view(u, presence) for u in users]}


async def _staff(session, staff_id: int) -> StaffUser:
    user = await session.get(StaffUser, staff_id)
    if user is None:
        raise NotFound("找不到这位客服", "no such staff member", field="staff_id")
    return user


@router.get("/staff/{staff_id}/routing")
async def get_routing(staff_id: int, ctx: AppContext = Depends(get_ctx), _: StaffUser = Depends(service_staff)):
    presence = await ctx.hub.get_presence(AGENT)
    async with unit_of_work(ctx.sessions) as session:
        return routing_view(await _staff(session, staff_id), presence)


@router.patch("/staff/{staff_id}/routing")
async def patch_routing(staff_id: int, body: Any = Body(...), ctx: AppContext = Depends(get_ctx),
                        _: StaffUser = Depends(service_manager)):
    """Change any of max_concurrent, skills, languages; the fields left out keep their value."""
    changes = parse_routing(_object(body, "路由设置", "Routing settings"))
    presence = await ctx.hub.get_presence(AGENT)
    async with unit_of_work(ctx.sessions) as session:
        user = await _staff(session, staff_id)
        for key, value in changes.items():
            setattr(user, key, value)
        await session.flush()
        queue.schedule_routing(session, ctx)  # more capacity or another skill may take from the queue now
        return routing_view(user, presence)


# --- the console's queue view -------------------------------------------------------------------------------------


def _seconds(delta) -> int | None:
    return None if delta is None else max(0, int(delta.total_seconds()))


@console_api.get("/queue")
async def console_queue(ctx: AppContext = Depends(get_ctx), _: StaffUser = Depends(current_agent)):
    """The human queue in queue order (position, waited, expected wait, VIP, priority, skill, SLA due times), the
    agents on duty with their load and capacity, and the SLA policy the console draws its countdowns with.
    `server_time` lets the console correct its clock."""
    presence = await ctx.hub.get_presence(AGENT)
    online = {name for name, state in presence.items() if state == "online"}
    now = ctx.clock.now()
    async with unit_of_work(ctx.sessions) as session:
        cfg = await sla.load_config(session)
        snap = await queue.snapshot(session, online, now)
        open_now = cfg.calendar.is_open(now)
        waits = snap.waits()
        ids = snap.queued[:QUEUE_LIMIT]
        rows = {conv.id: (conv, customer, order_no) for conv, customer, order_no in await session.execute(
            select(Conversation, Customer, Order.order_no)
            .join(Customer, Customer.id == Conversation.customer_id)
            .outerjoin(Order, Order.id == Conversation.order_id)
            .where(Conversation.id.in_(ids)))} if ids else {}
        items = []
        for position, cid in enumerate(ids, start=1):
            conv, customer, order_no = rows[cid]
            since: datetime = conv.queued_at or conv.handoff_at or conv.created_at
            wait = waits.get(cid) if open_now else None
            items.append({**ev.conversation_staff_view(conv, order_no), "position": position,
                          "customer": {"id": customer.id, "kind": customer.kind,
                                       "display_name": customer.display_name},
                          "language": conv.language, "returned": conv.queue_front,
                          "waited_seconds": _seconds(now - since), "expected_wait_seconds": _seconds(wait)})
        staff = list(await session.scalars(
            select(StaffUser).where(StaffUser.username.in_(list(presence)), StaffUser.active.is_(True))
            .order_by(StaffUser.id))) if presence else []
        load = await routing.loads(session, [u.id for u in staff])
        next_open = None if open_now else cfg.calendar.next_open(now)
        return {
            "server_time": now.isoformat(),
            "open_now": open_now,
            "next_open_at": next_open.isoformat() if next_open else None,
            "next_open_text": describe_time(cfg.calendar, next_open, now, "zh") if next_open else None,
            "next_open_text_en": describe_time(cfg.calendar, next_open, now, "en") if next_open else None,
            "waiting": len(snap.queued),
            "agents_online": snap.agents_online,
            "handle_seconds": _seconds(snap.handle),
            "queue": items,
            "agents": [{**routing_view(u, presence), "load": load.get(u.id, 0)} for u in staff],
            "sla": cfg.sla.to_dict(),
        }
