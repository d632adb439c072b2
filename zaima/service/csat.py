"""Satisfaction (CSAT): after each resolve the customer is asked for 1–5 stars, in the chat and, when the
ticket has an e-mail contact, by a signed link to a small page (/rate/{token}).

Rounds: `conversation.csat_round` is advanced at every resolve, so a reopened and resolved-again ticket asks
again and each resolution gets its own rating (unique per conversation and round). A round can be rated
while the ticket stays resolved (or was closed after it); once reopened that round is gone and the next
resolve opens the next one.

Idempotent, and the first answer stands: a second submit for a round that already has a rating (a double
tap, a retry, the e-mail link after the widget) changes nothing and returns the stored rating with
`duplicate=True`. Ratings feed reports per agent; letting them be rewritten after the fact would let a
score be changed once the customer has seen how the ticket ended, so there is no update.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from zaima.conversations.events import Event
from zaima.conversations.messages import post_message
from zaima.conversations.senders import Sender
from zaima.conversations.text import clean_text
from zaima.core.errors import Conflict, ValidationFailed
from zaima.core.signing import sign_token, verify_token
from zaima.models import Conversation, CsatRating, Customer, Order
from zaima.service import mail

AUD_CSAT = "csat"
RATEABLE_STATUSES = ("resolved", "closed")
CHANNELS = ("web", "email")
COMMENT_MAX = 500
LINK_DAYS = 30
INVITATION = "客服已处理完毕，请为本次服务打分（1–5 星）。Please rate our service (1–5 stars)."


class RatingNotOpen(Conflict):
    code = "csat_not_open"
    message_zh = "该工单当前没有待评价的服务（处理完毕后才能评价）"
    message_en = "There is nothing to rate on this ticket right now (it can be rated once resolved)"


class RatingRoundExpired(Conflict):
    code = "csat_round_expired"
    message_zh = "该评价邀请已失效：工单已重新处理，请为最新一次服务评价"
    message_en = "This rating request has expired: the ticket was handled again; rate the latest resolution"


@dataclass
class Rated:
    rating: CsatRating
    duplicate: bool  # True: this round was rated before; `rating` is the stored (first) one


# --- asking ---------------------------------------------------------------------------------------------------


async def request_rating(session: AsyncSession, ctx, conversation: Conversation) -> list[Event]:
    """Open the next rating round (call when the conversation becomes `resolved`): a system message in the
    chat inviting 1–5 stars, and the e-mail survey when the ticket has an e-mail contact. Returns the events
    to publish after commit."""
    conversation.csat_round = (conversation.csat_round or 0) + 1
    events: list[Event] = []
    if conversation.status != "closed":
        posted = await post_message(session, ctx.clock, ctx.settings, conversation, Sender.system(), INVITATION)
        events += posted.events
    else:
        await session.flush()
    address = await survey_address(session, conversation)
    if address:
        await queue_survey(session, ctx, conversation, address)
    return events


async def survey_address(session: AsyncSession, conversation: Conversation) -> str | None:
    """Where the e-mail survey goes: the address the ticket promised to notify, else the order's contact, else
    the customer's contact, when it is an e-mail address."""
    candidates = [conversation.notify_email]
    if conversation.order_id is not None:
        candidates.append(await session.scalar(select(Order.contact).where(Order.id == conversation.order_id)))
    candidates.append(await session.scalar(select(Customer.contact).where(Customer.id == conversation.customer_id)))
    return next((c.strip() for c in candidates if mail.is_email(c)), None)


def issue_link_token(ctx, conversation: Conversation, round_: int) -> str:
    expires = int(ctx.clock.now().timestamp() + timedelta(days=LINK_DAYS).total_seconds())
    return sign_token(ctx.settings.secret_key, AUD_CSAT, {"c": conversation.id, "r": round_}, expires)


def read_link_token(ctx, token: str | None) -> tuple[int, int] | None:
    """(conversation id, round) of an intact, unexpired survey link; None otherwise."""
    payload = verify_token(ctx.settings.secret_key, AUD_CSAT, token, int(ctx.clock.now().timestamp()))
    if payload is None:
        return None
    cid, round_ = payload.get("c"), payload.get("r")
    if not isinstance(cid, int) or not isinstance(round_, int) or isinstance(cid, bool) or isinstance(round_, bool):
        return None
    return cid, round_


def rate_url(ctx, conversation: Conversation, round_: int) -> str:
    return f"{ctx.settings.base_url}/rate/{issue_link_token(ctx, conversation, round_)}"


async def queue_survey(session: AsyncSession, ctx, conversation: Conversation, to: str) -> bool:
    """The e-mail survey for the current round (once per round, whatever retries happen)."""
    round_ = conversation.csat_round
    url = rate_url(ctx, conversation, round_)
    ticket = conversation.ticket_no
    stop_url = mail.unsubscribe_url(ctx, to, "survey")
    subject = f"请为本次服务打分 · 工单 {ticket} / Rate our service"
    text = (f"您好，\n\n您的工单 {ticket} 已处理完毕。请花 10 秒为本次服务打分（1–5 星）：\n{url}\n\n"
            f"链接 {LINK_DAYS} 天内有效。如果问题还没有解决，直接回到客服会话留言即可，工单会重新打开。\n\n"
            f"Hello, your ticket {ticket} has been resolved. Please rate our service (1–5 stars):\n{url}\n\n"
            "If the problem is not solved, write to us in the chat again and the ticket reopens.\n\n"
            f"不想再收到评价邀请？退订 / Unsubscribe from rating requests: {stop_url}\n")
    stars = "".join(
        f'<a href="{html.escape(url)}?rating={n}" style="font-size:28px;color:#f59f00;text-decoration:none;'
        f'padding:0 4px" title="{n} 星">{"★" * n}</a><br>' for n in range(5, 0, -1))
    body = (f"<p>您好，</p><p>您的工单 <b>{html.escape(ticket)}</b> 已处理完毕。请为本次服务打分（1–5 星）：</p>"
            f"<p>{stars}</p><p><a href=\"{html.escape(url)}\">打开评价页面</a>（{LINK_DAYS} 天内有效）</p>"
            "<p>如果问题还没有解决，直接回到客服会话留言即可，工单会重新打开。</p><hr>"
            f"<p>Your ticket {html.escape(ticket)} has been resolved. "
            f"<a href=\"{html.escape(url)}\">Rate our service</a> (1–5 stars).</p>"
            f"<p style=\"color:#868e96;font-size:12px\">不想再收到评价邀请？<a href=\"{html.escape(stop_url)}\">退订</a>"
            f" · <a href=\"{html.escape(stop_url)}\">Unsubscribe</a> from rating requests.</p>")
    return await mail.queue_mail(session, ctx, to=to, subject=subject, text=text, html=body,
                                 dedupe_key=f"csat:{conversation.id}:{round_}", opt_out_kind="survey")


# --- answering ------------------------------------------------------------------------------------------------


def _check_rating(rating) -> int:
    if isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 5:
        raise ValidationFailed("请选择 1–5 星的评分", "choose a rating from 1 to 5 stars", field="rating")
    return rating


def _check_comment(comment) -> str:
    if comment is None:
        return ""
    if not isinstance(comment, str):
        raise ValidationFailed("评价内容必须是文本", "the comment must be text", field="comment")
    text = clean_text(comment, 100_000, allow_empty=True, field="comment")
    if len(text) > COMMENT_MAX:
        raise ValidationFailed(f"评价内容不能超过 {COMMENT_MAX} 字（当前 {len(text)} 字）",
                               f"the comment can be at most {COMMENT_MAX} characters (this one has {len(text)})",
                               field="comment", max_chars=COMMENT_MAX)
    return text


async def _stored(session: AsyncSession, conversation_id: int, round_: int) -> CsatRating | None:
    return await session.scalar(select(CsatRating).where(CsatRating.conversation_id == conversation_id,
                                                         CsatRating.round == round_))


async def submit_rating(session: AsyncSession, clock, conversation: Conversation, round, rating, comment=None,
                        channel: str = "web") -> Rated:
    """Store the customer's stars for `round` (must be the current round of a resolved or closed ticket).
    A round rated before returns the stored rating unchanged (duplicate=True), even after a reopen."""
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}")
    if isinstance(round, bool) or not isinstance(round, int) or round < 1:
        raise ValidationFailed("评价轮次无效", "round must be a positive integer", field="round")
    rating = _check_rating(rating)
    comment = _check_comment(comment)
    stored = await _stored(session, conversation.id, round)
    if stored is not None:
        return Rated(stored, True)
    if round < conversation.csat_round:
        raise RatingRoundExpired()
    if round != conversation.csat_round or conversation.status not in RATEABLE_STATUSES:
        raise RatingNotOpen()
    record = CsatRating(conversation_id=conversation.id, round=round, rating=rating, comment=comment,
                        agent_id=conversation.assignee_id, channel=channel, created_at=clock.now())
    try:
        async with session.begin_nested():
            session.add(record)
    except IntegrityError:
        # A concurrent submit (the other tab, the e-mail link) stored this round first: its answer stands.
        stored = await _stored(session, conversation.id, round)
        if stored is None:
            raise
        return Rated(stored, True)
    return Rated(record, False)


async def csat_state(session: AsyncSession, conversation: Conversation) -> dict:
    """What the widget needs: the current round, whether it is rated (and how), and whether it can be now."""
    round_ = conversation.csat_round or 0
    stored = await _stored(session, conversation.id, round_) if round_ else None
    return {
        "conversation_id": conversation.id,
        "ticket_no": conversation.ticket_no,
        "round": round_,
        "rated": stored is not None,
        "rating": stored.rating if stored is not None else None,
        "comment": stored.comment if stored is not None else None,
        "can_rate": round_ > 0 and stored is None and conversation.status in RATEABLE_STATUSES,
    }


async def rate_link_state(session: AsyncSession, conversation: Conversation, round_: int) -> dict:
    """What the e-mailed link for `round_` shows: `rated` (thanks, with the stars given), `form` (pick
    stars), `expired` (a later resolution has its own request) or `reopened` (being handled again)."""
    stored = await _stored(session, conversation.id, round_)
    if stored is not None:
        view = "rated"
    elif round_ < conversation.csat_round:
        view = "expired"
    elif round_ == conversation.csat_round and conversation.status in RATEABLE_STATUSES:
        view = "form"
    else:
        view = "reopened"
    return {"view": view, "ticket_no": conversation.ticket_no, "round": round_,
            "rating": stored.rating if stored is not None else None,
            "comment": stored.comment if stored is not None else ""}
