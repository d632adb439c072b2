"""Outbound e-mail over real SMTP (a local aiosmtpd server): Chinese mail arrives intact, mail goes out only
when the unit of work commits, once per dedupe key, and is retried while the server is down."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sqlalchemy import select

from tests.conftest import free_port, make_settings
from tests.service.conftest import SmtpSink
from zaima import jobs
from zaima.context import build_context
from zaima.db import unit_of_work
from zaima.models import Job
from zaima.service.mail import MAIL_JOB, MailError, is_email, queue_mail, send_mail

SUBJECT = "您的工单 T-10001 有新回复：客服已处理您的卡密问题，请查收（这是一个足够长、需要折行的中文主题）"
TEXT = "您好！\n\n客服「小王」回复了您的工单 T-10001：\n卡密已补发，请到订单页面查看。\n\n—— 在吗客服"
HTML = "<p>您好！</p><p>客服「小王」回复了您的工单 <b>T-10001</b>。</p>"


async def queue(ctx, dedupe_key: str = "reply:1:5", to: str = "buyer@example.com") -> bool:
    async with unit_of_work(ctx.sessions) as session:
        return await queue_mail(session, ctx, to=to, subject=SUBJECT, text=TEXT, html=HTML, dedupe_key=dedupe_key)


async def mail_jobs(ctx) -> list[Job]:
    async with ctx.sessions() as session:
        return list(await session.scalars(select(Job).where(Job.kind == MAIL_JOB).order_by(Job.id)))


def test_is_email():
    assert is_email("buyer@example.com") and is_email(" Li.Lei+shop@mail.qq.com ")
    for contact in (None, "", "13800138000", "qq:800000000", "wxid_abc", "buyer@example", "a b@example.com",
                    "buyer@example.com\r\nBcc: victim@example.com", "<buyer@example.com>", "买家@example.com",
                    "a,b@example.com", "x" * 65 + "@example.com"):
        assert not is_email(contact), contact


async def test_chinese_mail_arrives_intact(smtp_server, db_url, tmp_path):
    settings = smtp_server.settings(db_url, tmp_path)
    await send_mail(settings, "buyer@example.com", SUBJECT, TEXT, HTML)
    [received] = smtp_server.messages
    assert received.rcpt_tos == ["buyer@example.com"] and received.mail_from == "support@zaima.test"
    message = received.message
    assert message["Subject"] == SUBJECT
    assert message["From"].addresses[0].display_name == "在吗客服"
    assert message["To"] == "buyer@example.com"
    assert message["Message-ID"].endswith("@zaima.test>") and message["Date"].datetime is not None
    assert message.get_body(("plain",)).get_content().replace("\r\n", "\n").rstrip("\n") == TEXT
    assert message.get_body(("html",)).get_content().strip() == HTML
    # On the wire every header is RFC 2047 encoded and the bodies are base64 / quoted-printable: plain ASCII
    # that no relay can mangle, even one without 8BITMIME.
    assert received.raw.isascii() and b"=?utf-8?" in received.raw


async def test_send_mail_raises_mail_error_when_nothing_listens(db_url, tmp_path):
    settings = make_settings(db_url, tmp_path, smtp_host="127.0.0.1", smtp_port=free_port(), smtp_security="none",
                             smtp_timeout_seconds=2)
    with pytest.raises(MailError):
        await send_mail(settings, "buyer@example.com", SUBJECT, TEXT)


async def test_queued_mail_goes_out_after_the_unit_of_work_commits(mail_ctx, smtp_server):
    assert await queue(mail_ctx) is True
    assert smtp_server.messages == []  # queued, not sent from inside the transaction
    assert await jobs.run_until_idle(mail_ctx) == 1
    [received] = smtp_server.messages
    assert received.message["Subject"] == SUBJECT and received.rcpt_tos == ["buyer@example.com"]
    assert received.message["Date"].datetime == mail_ctx.clock.now().replace(microsecond=0)
    [job] = await mail_jobs(mail_ctx)
    assert job.status == "done" and job.attempts == 1


async def test_rolled_back_unit_of_work_sends_nothing(mail_ctx, smtp_server):
    class Abort(Exception):
        pass

    with pytest.raises(Abort):
        async with unit_of_work(mail_ctx.sessions) as session:
            assert await queue_mail(session, mail_ctx, to="buyer@example.com", subject=SUBJECT, text=TEXT,
                                    dedupe_key="rolled-back")
            raise Abort()
    assert await jobs.run_until_idle(mail_ctx) == 0
    assert smtp_server.messages == [] and await mail_jobs(mail_ctx) == []
    # The rollback took the dedupe key back too: the same mail can be queued again.
    assert await queue(mail_ctx, "rolled-back")
    await jobs.run_until_idle(mail_ctx)
    assert len(smtp_server.messages) == 1


async def test_same_dedupe_key_is_sent_once(mail_ctx, smtp_server):
    assert await queue(mail_ctx, "survey:T-10001")
    assert await queue(mail_ctx, "survey:T-10001")  # still pending: not queued twice
    await jobs.run_until_idle(mail_ctx)
    assert await queue(mail_ctx, "survey:T-10001")  # already sent: not sent again either
    await jobs.run_until_idle(mail_ctx)
    assert len(smtp_server.messages) == 1 and len(await mail_jobs(mail_ctx)) == 1
    assert await queue(mail_ctx, "survey:T-10002")  # another key is another mail
    await jobs.run_until_idle(mail_ctx)
    assert len(smtp_server.messages) == 2


async def test_a_very_long_dedupe_key_still_dedupes(mail_ctx, smtp_server):
    key = "reply:" + "长" * 200
    assert await queue(mail_ctx, key) and await queue(mail_ctx, key)
    assert await queue(mail_ctx, key + "x")
    await jobs.run_until_idle(mail_ctx)
    assert len(smtp_server.messages) == 2


async def test_smtp_down_is_retried_with_backoff_until_the_server_is_up(db_url, tmp_path, clock):
    sink = SmtpSink()  # not started: nothing listens on its port yet
    ctx = build_context(sink.settings(db_url, tmp_path, smtp_timeout_seconds=2), clock=clock)
    try:
        assert await queue(ctx)
        assert await jobs.run_due(ctx) == 1
        [job] = await mail_jobs(ctx)
        assert job.status == "pending" and job.attempts == 1 and "MailError" in job.last_error
        assert job.run_at > clock.now()  # backed off
        assert await jobs.run_due(ctx) == 0

        clock.set(job.run_at)
        assert await jobs.run_due(ctx) == 1  # still down: a second attempt, a longer wait
        [job] = await mail_jobs(ctx)
        assert job.status == "pending" and job.attempts == 2
        first_message_id = None

        sink.start()
        try:
            clock.set(job.run_at)
            assert await jobs.run_due(ctx) == 1
            [received] = sink.messages
            assert received.message["Subject"] == SUBJECT
            first_message_id = received.message["Message-ID"]
            [job] = await mail_jobs(ctx)
            assert job.status == "done" and job.attempts == 3
            clock.advance(days=1)
            assert await jobs.run_due(ctx) == 0 and len(sink.messages) == 1
        finally:
            sink.stop()
        assert first_message_id and first_message_id == job.payload["headers"]["Message-ID"]
    finally:
        await ctx.close()


async def test_mail_off_queues_nothing(ctx):
    assert ctx.settings.smtp_host == ""
    assert await queue(ctx) is False
    assert await mail_jobs(ctx) == []
    async with ctx.sessions() as session:
        assert (await session.scalars(select(Job))).all() == []


async def test_contact_that_is_not_an_email_queues_nothing(mail_ctx, smtp_server):
    for contact in ("13800138000", "qq 800000000", ""):
        assert await queue(mail_ctx, f"k:{contact}", to=contact) is False
    assert await mail_jobs(mail_ctx) == []
    assert await jobs.run_until_idle(mail_ctx) == 0 and smtp_server.messages == []


def test_the_server_registers_the_mail_job_handler():
    """In a fresh interpreter, importing the app (what `zaima serve` does) must register "mail.send"."""
    code = "import zaima.app, zaima.jobs; print(sorted(zaima.jobs.HANDLERS))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert MAIL_JOB in out

