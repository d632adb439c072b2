"""Structured problem reports (「提交问题」): a short form that opens a new ticket whose first message already
holds what an agent needs (when, which order, what went wrong, what the customer wants), followed by the
screenshots, and puts the ticket in the human queue at once.

All or nothing, in the caller's transaction: every field and every screenshot is checked (images decoded
from their bytes) before anything is created or written to disk, so a bad screenshot rejects the whole
report and leaves no ticket, report, attachment or file behind.

Priority: `high` for the problems where the customer paid and holds nothing usable (an invalid key, goods
not delivered, a recharge that did not arrive, a payment problem), whatever they ask for; `normal` for
account problems and everything else. What the customer wants (resend / refund / …) does not change the
lane: asking for a refund is not more urgent than asking for the key that was paid for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from zaima.conversations import attachments
from zaima.conversations import events as ev
from zaima.conversations.events import Event
from zaima.conversations.messages import post_message
from zaima.conversations.senders import Sender
from zaima.conversations.text import clean_text
from zaima.core.audit import Actor
from zaima.core.errors import DomainError, ValidationFailed
from zaima.core.ids import display_order_no, normalize_order_no
from zaima.models import Conversation, Customer, Order, ProblemReport
from zaima.service import mail, queue
from zaima.store import timeline
from zaima.store.orders import normalize_contact

SHANGHAI = ZoneInfo("Asia/Shanghai")
PROBLEM_TYPES: dict[str, tuple[str, str]] = {
    "invalid_key": ("卡密无效", "Invalid card key"),
    "not_delivered": ("未收到货", "Not delivered"),
    "recharge_missing": ("充值未到账", "Recharge not received"),
    "account_problem": ("账号问题", "Account problem"),
    "payment_problem": ("付款问题", "Payment problem"),
    "other": ("其他", "Other"),
}
WANTS: dict[str, tuple[str, str]] = {
    "resend": ("补发", "Send again"),
    "refund": ("退款", "Refund"),
    "repair_account": ("修复账号", "Repair the account"),
    "other": ("其他", "Other"),
}
# Paid, and nothing usable in hand: these go to the high lane (see the module docstring).
URGENT_TYPES = ("invalid_key", "not_delivered", "recharge_missing", "payment_problem")
DESCRIPTION_MIN = 10
DESCRIPTION_MAX = 2000
MAX_SCREENSHOTS = 5
MAX_AGE = timedelta(days=180)
FUTURE_SKEW = timedelta(minutes=5)  # a phone's clock may run a little ahead
LABEL = "问题反馈"


@dataclass
class ReportForm:
    """What the customer filled in. `order_no` is what they typed (optional); the verified order comes from
    their order context and is passed to submit_report separately."""

    problem_type: str
    wants: str
    description: str
    occurred_at: datetime | str | None = None
    order_no: str | None = None
    contact: str | None = None


@dataclass
class Screenshot:
    data: bytes
    filename: str = ""


@dataclass
class _Errors:
    items: list[dict] = field(default_factory=list)

    def add(self, name: str, zh: str, en: str) -> None:
        self.items.append({"field": name, "message": zh, "message_en": en})

    def raise_if_any(self) -> None:
        if self.items:
            first = self.items[0]
            raise ValidationFailed(first["message"], first["message_en"], field=first["field"], errors=self.items)


def _parse_time(value, now: datetime, errors: _Errors) -> datetime | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        errors.add("occurred_at", "请填写问题发生的时间", "enter when the problem happened")
        return None
    when = value
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.strip())
        except ValueError:
            errors.add("occurred_at", "发生时间格式不对，请重新选择日期和时间", "the time is not valid; pick the date and time again")
            return None
    if not isinstance(when, datetime):
        errors.add("occurred_at", "发生时间格式不对，请重新选择日期和时间", "the time is not valid; pick the date and time again")
        return None
    if when.tzinfo is None:  # a datetime-local field: the customer's wall clock, taken as Beijing time
        when = when.replace(tzinfo=SHANGHAI)
    if when > now + FUTURE_SKEW:
        errors.add("occurred_at", "发生时间不能晚于现在", "the time cannot be in the future")
        return None
    if when < now - MAX_AGE:
        errors.add("occurred_at", "只能反馈 180 天内发生的问题，更早的问题请直接联系客服",
                   "only problems from the last 180 days can be reported here; contact us directly for older ones")
        return None
    return when


def _check_form(form: ReportForm, now: datetime, order: Order | None) -> tuple[dict, _Errors]:
    errors = _Errors()
    values: dict = {"occurred_at": _parse_time(form.occurred_at, now, errors)}
    if form.problem_type not in PROBLEM_TYPES:
        errors.add("problem_type", "请选择问题类型", "choose what kind of problem it is")
    if form.wants not in WANTS:
        errors.add("wants", "请选择希望的处理方式", "choose what you would like us to do")
    try:
        description = clean_text(form.description, 100_000, allow_empty=True, field="description")
    except ValidationFailed as exc:
        errors.add("description", exc.message_zh.replace("消息", "问题描述"), exc.message_en)
        description = ""
    else:
        if len(description) < DESCRIPTION_MIN:
            errors.add("description", f"请用至少 {DESCRIPTION_MIN} 个字描述问题（当前 {len(description)} 个）",
                       f"describe the problem in at least {DESCRIPTION_MIN} characters (now {len(description)})")
        elif len(description) > DESCRIPTION_MAX:
            errors.add("description", f"问题描述不能超过 {DESCRIPTION_MAX} 字（当前 {len(description)} 字）",
                       f"the description can be at most {DESCRIPTION_MAX} characters (now {len(description)})")
    values["description"] = description
    typed = (form.order_no or "").strip()
    values["typed_order_no"] = None
    if typed:
        canonical = normalize_order_no(typed[:40])
        if canonical is None:
            errors.add("order_no", "订单号格式不对：应为 12 位字母和数字，如 K7Q3-9XDM-2PHT",
                       "the order number should be 12 letters and digits, like K7Q3-9XDM-2PHT")
        elif order is None or canonical != order.order_no:
            values["typed_order_no"] = canonical
    contact = (form.contact or "").strip()
    values["contact"] = None
    if contact:
        try:
            values["contact"] = normalize_contact(contact[:200])[1]
        except ValidationFailed:
            errors.add("contact", "联系方式请填写邮箱或 11 位手机号（也可以不填）",
                       "enter an e-mail address or a mainland mobile number (or leave it empty)")
    elif order is not None:
        values["contact"] = order.contact
    return values, errors


def _renamed(exc: DomainError, number: int, name: str) -> DomainError:
    label = f"第 {number} 张截图" + (f"「{name}」" if name else "")
    label_en = f"screenshot {number}" + (f" ({name})" if name else "")
    return type(exc)(f"{label}：{exc.message_zh}", f"{label_en}: {exc.message_en}", field="files", index=number - 1)


async def _check_screenshots(settings, shots: Sequence[Screenshot]) -> None:
    """Every screenshot is a real image within the limits, before anything is stored (the same checks as
    attachments.store_image, which runs them again when storing: cheap next to losing half a report)."""
    if len(shots) > MAX_SCREENSHOTS:
        raise ValidationFailed(f"最多上传 {MAX_SCREENSHOTS} 张截图（当前 {len(shots)} 张）",
                               f"at most {MAX_SCREENSHOTS} screenshots ({len(shots)} given)", field="files",
                               max_files=MAX_SCREENSHOTS)
    limit = settings.attachment_max_bytes
    for number, shot in enumerate(shots, start=1):
        name = attachments._clean_name(shot.filename)
        try:
            if len(shot.data) > limit:
                raise attachments.AttachmentTooLarge(f"图片不能超过 {attachments._size_text(limit)}",
                                                     f"images must be at most {attachments._size_text(limit)}")
            if not shot.data:
                raise attachments.NotAnImage("文件是空的，请重新选择图片", "the file is empty; choose the image again")
            await asyncio.to_thread(attachments._decode, shot.data)
        except DomainError as exc:
            raise _renamed(exc, number, name) from exc


def report_text(values: dict, form: ReportForm, order: Order | None, shots: int) -> str:
    """The first message of the ticket: everything the agent needs, in readable zh-CN."""
    when = values["occurred_at"].astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M")
    if order is not None:
        order_line = display_order_no(order.order_no)
        if values["typed_order_no"]:
            order_line += f"（另填写：{display_order_no(values['typed_order_no'])}，未核验）"
    elif values["typed_order_no"]:
        order_line = f"{display_order_no(values['typed_order_no'])}（顾客填写，未核验）"
    else:
        order_line = "未填写"
    lines = [
        "【问题反馈】",
        f"发生时间：{when}（北京时间）",
        f"订单号：{order_line}",
        f"问题类型：{PROBLEM_TYPES[form.problem_type][0]}",
        f"希望处理：{WANTS[form.wants][0]}",
    ]
    if values["contact"]:
        lines.append(f"联系方式：{values['contact']}")
    lines += ["问题描述：", values["description"]]
    if shots:
        lines.append(f"截图：{shots} 张（见下方）")
    return "\n".join(lines)


def priority_for(problem_type: str) -> str:
    return "high" if problem_type in URGENT_TYPES else "normal"


@dataclass
class Submitted:
    conversation: Conversation
    report: ProblemReport
    events: list[Event]

    def __iter__(self):  # `conversation, events = await submit_report(...)`
        return iter((self.conversation, self.events))


async def submit_report(session: AsyncSession, ctx, customer: Customer, order: Order | None, form: ReportForm,
                        screenshots: Sequence[Screenshot | tuple[str, bytes]] = ()) -> Submitted:
    """Open a new ticket for `customer` from a problem report. `order` is the verified order (from the
    customer's order context) or None; an order number the customer typed that is not that order is kept
    in the text as unverified, never attached. Raises ValidationFailed (with every field error in
    details["errors"]) or the attachment errors, before anything is created."""
    shots = [s if isinstance(s, Screenshot) else Screenshot(s[1], s[0]) for s in screenshots]
    now = ctx.clock.now()
    values, errors = _check_form(form, now, order)
    errors.raise_if_any()
    await _check_screenshots(ctx.settings, shots)

    conversation = Conversation(customer_id=customer.id, order_id=order.id if order is not None else None,
                                channel="web", status="bot", priority="normal", labels=[LABEL], created_at=now,
                                updated_at=now, last_seq=0, customer_read_seq=0, agent_read_seq=0)
    session.add(conversation)
    await session.flush()
    order_no = order.order_no if order is not None else None
    events: list[Event] = [ev.inbox_event(ev.inbox_item_view(conversation, customer, order_no, None, 0))]
    sender = Sender.customer(customer)
    posted = await post_message(session, ctx.clock, ctx.settings, conversation, sender,
                                report_text(values, form, order, len(shots)))
    events += posted.events
    stored = []
    for shot in shots:
        attachment = await attachments.store_image(session, ctx.settings, ctx.clock, conversation, sender, shot.data,
                                                   shot.filename)
        stored.append(attachment.id)
        events += (await post_message(session, ctx.clock, ctx.settings, conversation, sender, "",
                                      attachment=attachment)).events
    report = ProblemReport(conversation_id=conversation.id, order_id=conversation.order_id,
                           occurred_at=values["occurred_at"], problem_type=form.problem_type, wants=form.wants,
                           description=values["description"], contact=values["contact"], attachment_ids=stored,
                           created_at=now)
    session.add(report)
    type_zh = PROBLEM_TYPES[form.problem_type][0]
    # Said in the conversation itself, so it survives the widget switching to this new ticket and a reload.
    events += (await post_message(session, ctx.clock, ctx.settings, conversation, Sender.system(),
                                  f"已收到您的问题反馈，工单号 {conversation.ticket_no}。客服会按顺序处理，回复会显示在这里"
                                  f"（之前的聊天记录仍保留在原来的会话里）。")).events
    events += await queue.hand_off(session, ctx, conversation, priority=priority_for(form.problem_type))
    if mail.is_email(values["contact"]):
        # A filed ticket is followed up by mail when a person answers (the queue may have chosen the order's
        # address for off hours; the one typed into the form is the one the customer wants now).
        conversation.notify_email = values["contact"]
    if order is not None:
        actor = Actor("customer", str(customer.id), conversation.id)
        await timeline.record(session, order, "problem_report", actor, now,
                              reason=f"工单 {conversation.ticket_no}：{type_zh}", ticket_no=conversation.ticket_no,
                              problem_type=form.problem_type, wants=form.wants)
    await session.flush()
    return Submitted(conversation, report, events)
