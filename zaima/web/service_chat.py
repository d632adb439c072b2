"""Customer-facing service APIs next to the chat: structured problem reports (「提交问题」), the satisfaction
rating of a resolved ticket, and the small page an e-mailed survey link opens (/rate/{token}).

Thin: the rules live in zaima.service.reports and zaima.service.csat. Customers authenticate exactly like the
chat's HTTP calls (a bearer customer token, see docs/realtime.md §1); someone else's conversation answers
the same 404 as a missing one.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, File, Form, Header, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel

from zaima.context import AppContext
from zaima.conversations import conversations, identity
from zaima.conversations import events as ev
from zaima.core.errors import DomainError, RateLimited
from zaima.core.ratelimit import RateLimiter
from zaima.db import unit_of_work
from zaima.models import Conversation
from zaima.realtime.publish import publish_after_commit
from zaima.service import csat, queue, reports
from zaima.web.chat import bearer
from zaima.web.deps import get_ctx
from zaima.web.pages import error_message, render, service_facts

router = APIRouter(tags=["chat"])
# Per process, like the lookup limits: enough for a real customer, not for filling the queue with tickets.
REPORTS_PER_HOUR = 10


def _report_limit(request: Request) -> RateLimiter:
    limits = request.app.state.limits
    if "report_customer" not in limits:
        limits["report_customer"] = RateLimiter(REPORTS_PER_HOUR, 3600)
    return limits["report_customer"]


class RatingIn(BaseModel):
    # Loose on purpose: the service checks them and says in Chinese what is wrong.
    round: Any = None
    rating: Any = None
    comment: Any = None


@router.post("/api/v1/chat/reports", status_code=201)
async def submit_report(
    request: Request,
    ctx: AppContext = Depends(get_ctx),
    authorization: str | None = Header(default=None),
    problem_type: str = Form(""),
    wants: str = Form(""),
    description: str = Form(""),
    occurred_at: str = Form(""),
    order_no: str = Form(""),
    contact: str = Form(""),
    order_context: str = Form(""),
    files: list[UploadFile] = File(default=[]),
):
    """A problem report (multipart: the fields and up to 5 images as `files`): opens a queued ticket.
    The order is attached only from a valid `order_context` (the order page's signed context)."""
    form = reports.ReportForm(problem_type=problem_type, wants=wants, description=description,
                              occurred_at=occurred_at or None, order_no=order_no or None, contact=contact or None)
    limit = _report_limit(request)
    shots = []
    too_many = len(files) > reports.MAX_SCREENSHOTS
    for upload in files:
        # One byte past the limit is enough to refuse a huge file; past the count, nothing is read at all.
        data = b"" if too_many else await upload.read(ctx.settings.attachment_max_bytes + 1)
        shots.append(reports.Screenshot(data, upload.filename or ""))

    async def create(session):
        customer = await identity.customer_from_token(session, ctx.settings, ctx.clock, bearer(authorization))
        key = f"report:{customer.id}"
        if not limit.allowed(key):
            raise RateLimited("提交问题太频繁了，请稍后再试，或直接在会话里留言",
                              "Too many reports in a short time; try again later or write in the chat")
        order = None
        if order_context:
            order = await identity.order_from_context(session, ctx.settings, ctx.clock, order_context)
        done = await reports.submit_report(session, ctx, customer, order, form, shots)
        publish_after_commit(session, ctx.hub, done.events)
        conversation = done.conversation
        return key, {
            "ticket_no": conversation.ticket_no,
            "conversation_id": conversation.id,
            "report_id": done.report.id,
            "conversation": ev.conversation_public_view(conversation, order.order_no if order else None),
            "queue": await queue.queue_status(session, ctx, conversation),
        }

    key, payload = await ctx.transact(create)
    limit.hit(key)
    return JSONResponse(payload, status_code=201)


async def _own_conversation(session, ctx: AppContext, authorization: str | None, conversation_id: int):
    customer = await identity.customer_from_token(session, ctx.settings, ctx.clock, bearer(authorization))
    return await conversations.get_for_customer(session, customer.id, conversation_id)


@router.get("/api/v1/chat/conversations/{conversation_id}/csat")
async def get_rating(conversation_id: int, ctx: AppContext = Depends(get_ctx),
                     authorization: str | None = Header(default=None)):
    async with unit_of_work(ctx.sessions) as session:
        conversation = await _own_conversation(session, ctx, authorization, conversation_id)
        return await csat.csat_state(session, conversation)


@router.post("/api/v1/chat/conversations/{conversation_id}/csat")
async def post_rating(conversation_id: int, body: RatingIn, ctx: AppContext = Depends(get_ctx),
                      authorization: str | None = Header(default=None)):
    """1–5 stars for the current round. The first answer stands: a repeat returns it with duplicate=true."""

    async def rate(session):
        conversation = await _own_conversation(session, ctx, authorization, conversation_id)
        rated = await csat.submit_rating(session, ctx.clock, conversation, body.round, body.rating, body.comment)
        return {**await csat.csat_state(session, conversation), "duplicate": rated.duplicate}

    return await ctx.transact(rate)


# --- the e-mailed survey's page ---------------------------------------------------------------------------------


async def _rate_page(request: Request, ctx: AppContext, token: str, *, rating: int | None = None,
                     comment: str = "", error: str = "", status: int = 200) -> HTMLResponse:
    found = csat.read_link_token(ctx, token)
    state = None
    if found is not None:
        async with unit_of_work(ctx.sessions) as session:
            conversation = await session.get(Conversation, found[0])
            if conversation is not None:
                state = await csat.rate_link_state(session, conversation, found[1])
    if state is None:
        return render(request, "rate.html", status=404, private=True, state={"view": "invalid"}, token=token)
    return render(request, "rate.html", status=status, private=True, state=state, token=token,
                  rating=rating, comment=comment, error_text=error)


@router.get("/rate/{token}", response_class=HTMLResponse, include_in_schema=False,
            dependencies=[Depends(service_facts)])
async def rate_page(token: str, request: Request, ctx: AppContext = Depends(get_ctx)):
    # A GET never stores anything (mail scanners open links): the stars in the mail only preselect.
    preset = request.query_params.get("rating", "")
    rating = int(preset) if preset in ("1", "2", "3", "4", "5") else None
    return await _rate_page(request, ctx, token, rating=rating)


@router.post("/rate/{token}", response_class=HTMLResponse, include_in_schema=False,
             dependencies=[Depends(service_facts)])
async def rate_submit(token: str, request: Request, ctx: AppContext = Depends(get_ctx)):
    data = await request.form()
    raw = str(data.get("rating", ""))
    rating: Any = int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 3 else None  # not '²
    comment = str(data.get("comment", ""))[:2000]
    found = csat.read_link_token(ctx, token)
    if found is None:
        return await _rate_page(request, ctx, token)

    async def rate(session):
        conversation = await session.get(Conversation, found[0])
        if conversation is None:
            return None
        return await csat.submit_rating(session, ctx.clock, conversation, found[1], rating, comment, channel="email")

    try:
        await ctx.transact(rate)
    except DomainError as exc:
        return await _rate_page(request, ctx, token, rating=rating, comment=comment,
                                error=error_message(request, exc), status=exc.status)
    return await _rate_page(request, ctx, token)
