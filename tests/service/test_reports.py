"""Problem reports (「提交问题」): the form opens a queued ticket whose first message holds every field, the
screenshots follow it, and a bad report (a field, one screenshot, one screenshot too many) is refused whole:
no ticket, no report, no attachment, no file."""

from __future__ import annotations

import io
from datetime import timedelta

from PIL import Image
from sqlalchemy import func, select

from tests.store.helpers import add_stock, make_order, make_product, notify_params
from zaima.conversations import identity
from zaima.core.ids import display_order_no
from zaima.db import unit_of_work
from zaima.models import Attachment, Conversation, Message, OrderEvent, ProblemReport
from zaima.service import reports
from zaima.store import payments

URL = "/api/v1/chat/reports"
DESCRIPTION = "卡密输入后提示无效，试了三次都不行，麻烦看一下。"


def png(color=(200, 40, 40), size=(60, 40)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


async def paid_order(ctx, sku="rep-1", contact="buyer@example.com"):
    product = await make_product(ctx, sku=sku, price_fen=1000)
    await add_stock(ctx, product, [f"{sku.upper()}-KEY-0001"])
    order = await make_order(ctx, product, contact=contact)
    assert await payments.handle_notify(ctx, notify_params(order)) == "accepted"
    return order


async def session_for(client, **body) -> dict:
    r = await client.post("/api/v1/chat/session", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def fields(ctx, **overrides) -> dict:
    values = {"problem_type": "invalid_key", "wants": "resend", "description": DESCRIPTION,
              "occurred_at": (ctx.clock.now() - timedelta(hours=2)).isoformat()}
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


async def post_report(client, token: str, data: dict, files: list[tuple[str, bytes, str]] = ()):
    multipart = [("files", (name, content, kind)) for name, content, kind in files]
    return await client.post(URL, data=data, files=multipart or None, headers={"Authorization": f"Bearer {token}"})


async def counts(ctx) -> dict:
    async with ctx.sessions() as session:
        return {model.__name__: await session.scalar(select(func.count()).select_from(model))
                for model in (Conversation, ProblemReport, Attachment, Message)}


def files_on_disk(ctx) -> list:
    root = ctx.settings.var_dir / "attachments"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


async def test_report_becomes_a_queued_ticket_whose_first_message_holds_the_fields(client, ctx):
    order = await paid_order(ctx)
    context = identity.issue_order_context(ctx.settings, ctx.clock, order)
    chat = await session_for(client, order_context=context)  # the order's everyday conversation
    shots = [("a.png", png(), "image/png"), ("b.png", png((30, 90, 200)), "image/png")]
    r = await post_report(client, chat["customer_token"], {**fields(ctx), "order_context": context}, shots)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["ticket_no"] == f"T-{10000 + body['conversation_id']}"
    assert body["conversation"]["status"] == "queued" and body["conversation"]["order_no"] == order.order_no
    assert body["conversation_id"] != chat["conversation"]["id"]  # a new ticket, not the running chat
    assert body["queue"]["position"] == 1 and body["queue"]["ticket_no"] == body["ticket_no"]

    async with ctx.sessions() as session:
        conversation = await session.get(Conversation, body["conversation_id"])
        assert conversation.status == "queued" and conversation.order_id == order.id
        assert conversation.priority == "high"  # paid, and the key does not work
        assert conversation.customer_id == chat["customer"]["id"] and "问题反馈" in conversation.labels
        assert conversation.notify_email == "buyer@example.com"
        rows = list(await session.scalars(select(Message).where(Message.conversation_id == conversation.id)
                                          .order_by(Message.seq)))
        report = await session.scalar(select(ProblemReport).where(ProblemReport.conversation_id == conversation.id))
        timeline = list(await session.scalars(select(OrderEvent).where(OrderEvent.order_id == order.id,
                                                                       OrderEvent.kind == "problem_report")))
    first = rows[0]
    assert first.seq == 1 and first.sender_kind == "customer"
    for text in ("【问题反馈】", "发生时间：", "北京时间", f"订单号：{display_order_no(order.order_no)}",
                 "问题类型：卡密无效", "希望处理：补发", "联系方式：buyer@example.com", DESCRIPTION, "截图：2 张"):
        assert text in first.body, text
    # The screenshots come right after, one image message each, in the order they were chosen.
    assert [(m.seq, m.sender_kind, m.body) for m in rows[1:3]] == [(2, "customer", ""), (3, "customer", "")]
    assert [m.attachment.original_name for m in rows[1:3]] == ["a.png", "b.png"]
    assert report.problem_type == "invalid_key" and report.wants == "resend" and report.order_id == order.id
    assert report.description == DESCRIPTION and report.contact == "buyer@example.com"
    assert report.attachment_ids == [rows[1].attachment_id, rows[2].attachment_id]
    assert [e.conversation_id for e in timeline] == [conversation.id]
    assert timeline[0].actor_kind == "customer" and conversation.ticket_no in timeline[0].reason

    # The customer can read their ticket like any other conversation of theirs.
    history = await client.get(f"/api/v1/chat/conversations/{conversation.id}/messages",
                               headers={"Authorization": f"Bearer {chat['customer_token']}"})
    assert [m["seq"] for m in history.json()["messages"]][:3] == [1, 2, 3]
    # Reloading the widget on the order page shows the new ticket (the latest one about this order).
    again = await session_for(client, order_context=context, customer_token=chat["customer_token"])
    assert again["conversation"]["id"] == conversation.id


async def test_validation_errors_name_every_field_in_chinese(client, ctx):
    chat = await session_for(client)
    bad = fields(ctx, problem_type="broken", wants="", description="太短了",
                 occurred_at=(ctx.clock.now() + timedelta(hours=1)).isoformat(), contact="not a contact")
    r = await post_report(client, chat["customer_token"], bad, [("a.png", png(), "image/png")])
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "invalid_input"
    by_field = {e["field"]: e["message"] for e in error["details"]["errors"]}
    assert by_field == {
        "occurred_at": "发生时间不能晚于现在",
        "problem_type": "请选择问题类型",
        "wants": "请选择希望的处理方式",
        "description": "请用至少 10 个字描述问题（当前 3 个）",
        "contact": "联系方式请填写邮箱或 11 位手机号（也可以不填）",
    }
    assert error["message"] == "发生时间不能晚于现在" and error["details"]["field"] == "occurred_at"
    assert (await counts(ctx))["Conversation"] == 1  # only the chat session's own conversation


async def test_time_order_number_and_description_limits(client, ctx):
    chat = await session_for(client)
    token = chat["customer_token"]
    cases = [
        (fields(ctx, occurred_at=(ctx.clock.now() - timedelta(days=181)).isoformat()), "occurred_at",
         "只能反馈 180 天内发生的问题"),
        (fields(ctx, occurred_at="昨天晚上"), "occurred_at", "发生时间格式不对"),
        (fields(ctx, occurred_at=""), "occurred_at", "请填写问题发生的时间"),
        (fields(ctx, order_no="12345"), "order_no", "订单号格式不对"),
        (fields(ctx, description="长" * 2001), "description", "问题描述不能超过 2000 字"),
        (fields(ctx, description="卡密\x00无效无效无效无效"), "description", "控制字符"),
    ]
    for data, field, text in cases:
        r = await post_report(client, token, data)
        assert r.status_code == 422, (field, r.text)
        [error] = r.json()["error"]["details"]["errors"]
        assert error["field"] == field and text in error["message"], error
    assert (await counts(ctx))["ProblemReport"] == 0


async def test_a_non_image_screenshot_rejects_the_whole_report(client, ctx):
    order = await paid_order(ctx)
    context = identity.issue_order_context(ctx.settings, ctx.clock, order)
    chat = await session_for(client, order_context=context)
    before = await counts(ctx)
    shots = [("ok.png", png(), "image/png"), ("virus.png", b"MZ\x90\x00 definitely not a picture", "image/png")]
    r = await post_report(client, chat["customer_token"], {**fields(ctx), "order_context": context}, shots)
    assert r.status_code == 415
    error = r.json()["error"]
    assert error["code"] == "attachment_not_an_image"
    assert error["message"].startswith("第 2 张截图「virus.png」：只能上传 PNG、JPEG、WEBP 或 GIF 图片")
    assert error["details"] == {"field": "files", "index": 1}
    assert await counts(ctx) == before  # no ticket, report, message or attachment row
    assert files_on_disk(ctx) == []  # and the valid first screenshot was not written either
    async with ctx.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(OrderEvent)
                                    .where(OrderEvent.kind == "problem_report")) == 0


async def test_six_screenshots_are_refused_and_a_huge_one_too(client, ctx):
    chat = await session_for(client)
    before = await counts(ctx)
    six = [(f"{i}.png", png(), "image/png") for i in range(6)]
    r = await post_report(client, chat["customer_token"], fields(ctx), six)
    assert r.status_code == 422
    assert r.json()["error"]["message"] == "最多上传 5 张截图（当前 6 张）"
    big = b"\x89PNG\r\n\x1a\n" + b"0" * (ctx.settings.attachment_max_bytes + 10)
    r = await post_report(client, chat["customer_token"], fields(ctx), [("big.png", big, "image/png")])
    assert r.status_code == 413 and r.json()["error"]["message"] == "第 1 张截图「big.png」：图片不能超过 5 MB"
    assert await counts(ctx) == before and files_on_disk(ctx) == []


async def test_only_the_verified_order_is_attached(client, ctx):
    order = await paid_order(ctx, contact="13800138000")
    # No order context: the typed number stays text, marked unverified, and the ticket has no order.
    chat = await session_for(client)
    data = fields(ctx, problem_type="account_problem", wants="repair_account",
                  order_no=display_order_no(order.order_no).lower())
    r = await post_report(client, chat["customer_token"], data)
    assert r.status_code == 201, r.text
    async with ctx.sessions() as session:
        conversation = await session.get(Conversation, r.json()["conversation_id"])
        first = await session.scalar(select(Message).where(Message.conversation_id == conversation.id,
                                                           Message.seq == 1))
        report = await session.scalar(select(ProblemReport).where(ProblemReport.conversation_id == conversation.id))
    assert conversation.order_id is None and report.order_id is None
    assert f"订单号：{display_order_no(order.order_no)}（顾客填写，未核验）" in first.body
    assert conversation.priority == "normal"  # an account problem waits in the normal lane
    assert report.contact is None and "联系方式" not in first.body and "截图" not in first.body
    assert conversation.notify_email is None

    # A forged or stale order context is refused, not ignored.
    r = await post_report(client, chat["customer_token"], {**fields(ctx), "order_context": "forged.token"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "order_context_invalid"


async def test_contact_defaults_to_the_orders_and_a_typed_one_wins(client, ctx):
    order = await paid_order(ctx, contact="13800138000")
    context = identity.issue_order_context(ctx.settings, ctx.clock, order)
    chat = await session_for(client, order_context=context)
    token = chat["customer_token"]
    r = await post_report(client, token, {**fields(ctx, problem_type="other", wants="other"), "order_context": context})
    assert r.status_code == 201, r.text
    r2 = await post_report(client, token, {**fields(ctx, problem_type="not_delivered", wants="refund",
                                                    contact="Ｌｉ@Example.com"), "order_context": context})
    assert r2.status_code == 201, r2.text
    async with ctx.sessions() as session:
        one, two = [await session.scalar(select(ProblemReport).where(ProblemReport.conversation_id == cid))
                    for cid in (r.json()["conversation_id"], r2.json()["conversation_id"])]
        second = await session.get(Conversation, two.conversation_id)
    assert one.contact == "13800138000" and two.contact == "li@example.com"
    assert second.notify_email == "li@example.com" and second.priority == "high"


async def test_reports_need_the_customers_token(client, ctx):
    r = await client.post(URL, data=fields(ctx))
    assert r.status_code == 401 and r.json()["error"]["code"] == "customer_token_invalid"
    r = await post_report(client, "nonsense", fields(ctx))
    assert r.status_code == 401


async def test_submit_report_service_returns_conversation_and_events(ctx):
    order = await paid_order(ctx)
    async with unit_of_work(ctx.sessions) as session:
        customer = await identity.customer_for_order(session, ctx.clock, order)
        form = reports.ReportForm(problem_type="recharge_missing", wants="refund", description=DESCRIPTION,
                                  occurred_at=(ctx.clock.now() - timedelta(days=3)).replace(tzinfo=None).isoformat())
        conversation, events = await reports.submit_report(session, ctx, customer, order, form,
                                                           [("shot.png", png())])
        assert conversation.status == "queued" and conversation.priority == "high"
        topics = {e.topic for e in events}
        assert {f"conv:{conversation.id}", f"conv:{conversation.id}:staff", "inbox"} <= topics
        kinds = [e.payload["type"] for e in events if e.topic == f"conv:{conversation.id}"]
        assert kinds.count("message") == 3 and "conversation" in kinds  # the report, its screenshot, the receipt
        bodies = [e.payload["message"]["body"] for e in events
                  if e.topic == f"conv:{conversation.id}" and e.payload["type"] == "message"]
        assert bodies[-1].startswith(f"已收到您的问题反馈，工单号 {conversation.ticket_no}")
    assert reports.priority_for("payment_problem") == "high" and reports.priority_for("other") == "normal"


async def test_too_many_reports_in_an_hour_are_refused(client, ctx):
    chat = await session_for(client)
    for _ in range(10):
        r = await post_report(client, chat["customer_token"], fields(ctx, problem_type="other", wants="other"))
        assert r.status_code == 201, r.text
    r = await post_report(client, chat["customer_token"], fields(ctx))
    assert r.status_code == 429 and r.json()["error"]["message"].startswith("提交问题太频繁了")
    assert (await counts(ctx))["ProblemReport"] == 10
