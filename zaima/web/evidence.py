"""A ticket's evidence bundle for staff: JSON download and a printable page. Every export is written to the
order's timeline (who, when, which format), so handing evidence out is audited like revealing keys."""

from __future__ import annotations

import json
import secrets

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from zaima.context import AppContext
from zaima.conversations import conversations
from zaima.core.audit import Actor
from zaima.db import unit_of_work
from zaima.models import Order, StaffUser
from zaima.service.evidence import build_bundle
from zaima.store import timeline
from zaima.store.views import KIND_TEXT, REFUND_TEXT
from zaima.store.views import STATUS_TEXT as ORDER_STATUS_TEXT
from zaima.web.console import STATUS_TEXT as TICKET_STATUS_TEXT
from zaima.web.deps import get_ctx
from zaima.web.pages import SECURITY_HEADERS, render
from zaima.web.staff_auth import current_agent, load_user, read_session

router = APIRouter(include_in_schema=False)

PRIORITY_TEXT = {"low": ("低", "Low"), "normal": ("普通", "Normal"), "high": ("高", "High"),
                 "urgent": ("紧急", "Urgent")}
CHANNEL_TEXT = {"web": ("网页在线客服", "Web chat"), "email": ("邮件", "E-mail"), "phone": ("电话", "Phone"),
                "webhook": ("第三方渠道", "Webhook channel")}
CUSTOMER_KIND_TEXT = {"device": ("匿名访客", "Anonymous visitor"), "order": ("订单联系人", "Order contact"),
                      "external": ("商户站点用户", "Host-site user")}
SENDER_TEXT = {"customer": ("客户", "Customer"), "bot": ("机器人", "Bot"), "agent": ("客服", "Agent"),
               "system": ("系统", "System")}
ACTOR_TEXT = {"customer": ("客户", "Customer"), "bot": ("机器人", "Bot"), "agent": ("客服", "Agent"),
              "system": ("系统", "System"), "gateway": ("支付网关", "Gateway"), "supplier": ("供应商", "Supplier")}
BOT_ACTION_TEXT = {"refund": ("退款", "Refund"), "replace": ("更换卡密", "Replace key"),
                   "redeliver": ("补发", "Re-deliver"), "resend": ("重新提供卡密（链接）", "Show keys again (link)"),
                   "query_payment": ("查询付款", "Query payment"), "handoff": ("转人工", "Hand-off")}
DELIVERY_RESULT_TEXT = {"delivered": ("已发货", "Delivered"), "partial": ("部分发货", "Partly delivered"),
                        "short": ("缺货", "Out of stock"), "submitted": ("已提交", "Submitted"), "failed": ("失败", "Failed")}
VERDICT_TEXT = {"accepted": ("已接受", "Accepted"), "duplicate": ("重复通知", "Duplicate"),
                "rejected": ("已拒绝", "Rejected")}
KEY_STATUS_TEXT = {"sold": ("已售出", "Sold"), "reserved": ("已预留", "Reserved"),
                   "quarantined": ("已标记异常", "Quarantined"), "void": ("已作废", "Void"),
                   "available": ("可售", "Available")}


def _compact(value) -> str:
    """JSON on one line for the page, Chinese as it is (autoescaping makes it safe in HTML)."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _generated_by(user: StaffUser) -> str:
    return f"{user.display_name} ({user.username})"


async def _export(ctx: AppContext, conversation_id: int, user: StaffUser, fmt: str) -> dict:
    """Build the bundle and record the export on the order's timeline, in one unit of work: an export that
    is not recorded does not happen."""
    async with unit_of_work(ctx.sessions) as session:
        conversation = await conversations.get_conversation(session, conversation_id)
        now = ctx.clock.now()
        bundle = await build_bundle(session, conversation, generated_by=_generated_by(user), now=now, ctx=ctx)
        if conversation.order_id is not None:
            order = await session.get(Order, conversation.order_id)
            await timeline.record(session, order, "evidence_exported", Actor("agent", user.username, conversation.id),
                                  now, ticket_no=conversation.ticket_no, format=fmt)
    return bundle


@router.get("/console/api/conversations/{conversation_id}/evidence.json")
async def evidence_json(conversation_id: int, ctx: AppContext = Depends(get_ctx),
                        user: StaffUser = Depends(current_agent)):
    bundle = await _export(ctx, conversation_id, user, "json")
    filename = f"{bundle['ticket']['ticket_no']}-evidence.json"
    body = json.dumps(bundle, ensure_ascii=False, indent=2)
    return Response(body, media_type="application/json; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="{filename}"',
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
    })


@router.get("/console/conversations/{conversation_id}/evidence")
async def evidence_page(conversation_id: int, request: Request, ctx: AppContext = Depends(get_ctx)):
    payload = read_session(ctx, request)
    user = await load_user(ctx, payload["uid"]) if payload else None
    if user is None:
        return RedirectResponse("/console/login", status_code=303)
    bundle = await _export(ctx, conversation_id, user, "html")
    # The page's own print stylesheet and print button, allowed by a per-response nonce; nothing else inline.
    nonce = secrets.token_urlsafe(16)
    base = ctx.settings.base_url
    # Images in the page load from this site, whatever public address the bundle's links carry.
    thumbs = {a["id"]: a["thumb_url"].removeprefix(base) for a in bundle["attachments"]}
    response = render(request, "console/evidence.html", private=True, b=bundle, nonce=nonce,
                      thumbs=thumbs, ticket_status=TICKET_STATUS_TEXT, order_status=ORDER_STATUS_TEXT,
                      kind_text=KIND_TEXT, priority_text=PRIORITY_TEXT, channel_text=CHANNEL_TEXT,
                      customer_kind_text=CUSTOMER_KIND_TEXT, sender_text=SENDER_TEXT, actor_text=ACTOR_TEXT,
                      bot_action_text=BOT_ACTION_TEXT, key_status_text=KEY_STATUS_TEXT,
                      result_text=DELIVERY_RESULT_TEXT, verdict_text=VERDICT_TEXT, refund_text=REFUND_TEXT,
                      compact=_compact, json_url=f"/console/api/conversations/{conversation_id}/evidence.json")
    csp = SECURITY_HEADERS["Content-Security-Policy"]
    response.headers["Content-Security-Policy"] = (f"{csp}; style-src 'self' 'nonce-{nonce}'; "
                                                   f"script-src 'self' 'nonce-{nonce}'")
    return response
