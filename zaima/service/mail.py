"""Outbound e-mail (off-hours notices, replies, satisfaction surveys) over real SMTP with aiosmtplib.

Mail is never sent from inside a request: `queue_mail` writes a durable "mail.send" job in the caller's
transaction, so the mail leaves only if that transaction commits, survives restarts, and is retried with
the jobs' backoff while the SMTP server is unreachable. Mail is off while `settings.smtp_host` is empty.
"""

from __future__ import annotations

import email.policy
import hashlib
import hmac
import re
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr

import aiosmtplib
import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from zaima.core.signing import sign_token, verify_token
from zaima.db import insert_ignoring_conflicts
from zaima.jobs import enqueue, handler
from zaima.models import Job, MailOptOut

log = structlog.get_logger("zaima.mail")

MAIL_JOB = "mail.send"
# A marker row in `jobs` that remembers, for good, that a dedupe key was used (see queue_mail).
MAIL_SENT_MARKER = "mail.dedupe"
SECURITY_MODES = ("starttls", "tls", "none")
# Headers a caller may set; everything else (From, To, Subject, MIME) is ours to build.
ALLOWED_HEADERS = {"message-id", "date", "in-reply-to", "references", "reply-to", "auto-submitted",
                   "list-unsubscribe", "list-unsubscribe-post", "x-zaima-ticket"}
# 7bit: bodies go out base64 / quoted-printable, so no relay has to support 8BITMIME.
_POLICY = email.policy.SMTP.clone(cte_type="7bit")

# ASCII addresses only (a UTF-8 mailbox needs SMTPUTF8, which many relays refuse). No quotes, commas, angle
# brackets or whitespace: the value goes into a header and onto the SMTP command line as it is.
_LOCAL = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL = re.compile(rf"^(?=.{{1,64}}@){_LOCAL}@{_LABEL}(?:\.{_LABEL})*\.[A-Za-z]{{2,63}}$")


class MailError(Exception):
    """The mail could not be handed to the SMTP server (down, refused, timed out, misconfigured)."""


def is_email(contact: str | None) -> bool:
    """Whether a customer contact is an address we can mail (a phone number, QQ or WeChat id is not)."""
    if not isinstance(contact, str):
        return False
    value = contact.strip()
    return len(value) <= 254 and _EMAIL.match(value) is not None


def mail_enabled(settings) -> bool:
    return bool(settings.smtp_host)


def _sender_domain(settings) -> str:
    address = parseaddr(settings.smtp_from)[1]
    return address.rpartition("@")[2] or "localhost"


def _one_line(text: str) -> str:
    """Header text on one line: a newline in a subject would otherwise be refused by the email package."""
    return " ".join(str(text).split())


def build_message(settings, to: str, subject: str, text: str, html: str | None = None, *,
                  headers: dict | None = None) -> EmailMessage:
    """The message as it goes out: UTF-8 bodies (plain text, plus HTML as an alternative), encoded headers
    so a Chinese subject survives every relay, a Message-ID and a Date."""
    extra = {str(k): _one_line(v) for k, v in (headers or {}).items()}
    unknown = {k for k in extra if k.lower() not in ALLOWED_HEADERS}
    if unknown:
        raise MailError(f"header(s) not allowed: {', '.join(sorted(unknown))}")
    message = EmailMessage(policy=_POLICY)
    message["From"] = settings.smtp_from
    message["To"] = to.strip()
    message["Subject"] = _one_line(subject)
    for name, value in extra.items():
        message[name] = value
    if "Date" not in message:
        message["Date"] = format_datetime(datetime.now(UTC))
    if "Message-ID" not in message:
        message["Message-ID"] = make_msgid(domain=_sender_domain(settings))
    message.set_content(text, charset="utf-8")
    if html is not None:
        message.add_alternative(html, subtype="html", charset="utf-8")
    return message


async def send_mail(settings, to: str, subject: str, text: str, html: str | None = None, *,
                    headers: dict | None = None) -> None:
    """Hand one mail to the configured SMTP server now. Raises MailError when it did not go out."""
    if not mail_enabled(settings):
        raise MailError("mail is off (ZAIMA_SMTP_HOST is empty)")
    if not is_email(to):
        raise MailError("not an e-mail address")
    security = settings.smtp_security
    if security not in SECURITY_MODES:
        raise MailError(f"smtp_security must be one of {', '.join(SECURITY_MODES)}, not {security!r}")
    try:
        message = build_message(settings, to, subject, text, html, headers=headers)
    except (ValueError, TypeError) as exc:  # a malformed header value: retrying will not fix it
        raise MailError(f"malformed message: {exc}") from exc
    # Flattened here, with the 998-character line limit of RFC 5322 rather than the 78 of the email package:
    # at 78 a header with no space to fold at (List-Unsubscribe's long <URL>) is turned into RFC 2047 encoded
    # words, which that header may not contain, and mail clients would not find the URL.
    raw = message.as_bytes(policy=message.policy.clone(max_line_length=998))
    try:
        await aiosmtplib.send(
            raw,
            sender=parseaddr(settings.smtp_from)[1],
            recipients=[to.strip()],
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username or None,
            password=settings.smtp_password or None,
            use_tls=security == "tls",
            start_tls=security == "starttls",  # "none" must not even try STARTTLS opportunistically
            timeout=settings.smtp_timeout_seconds,
        )
    except (aiosmtplib.SMTPException, OSError, TimeoutError, ValueError) as exc:
        # The address is never logged or put in the error (it is the customer's); the server's answer is.
        raise MailError(f"SMTP {settings.smtp_host}:{settings.smtp_port}: {exc!r}"[:500]) from exc
    log.info("mail_sent", message_id=message["Message-ID"])


def _marker_key(dedupe_key: str) -> str:
    """Fits the 100-character dedupe column whatever the caller's key looks like."""
    key = f"mail:{dedupe_key}"
    if len(key) <= 100:
        return key
    return "mail:sha256:" + hashlib.sha256(dedupe_key.encode()).hexdigest()


def _insert_marker(dialect: str, **values):
    return insert_ignoring_conflicts(dialect, Job, [Job.dedupe_key]).values(**values).returning(Job.id)


# --- opting out ------------------------------------------------------------------------------------------------
#
# Mail a customer asked for (the notice that an agent answered their ticket) always goes out. Mail we send
# unasked (the satisfaction survey) carries an unsubscribe link and the one-click List-Unsubscribe header
# (RFC 8058); an address that used either gets no more mail of that kind. The link never expires (an
# unsubscribe must keep working as long as the mail can be read) and names a keyed digest of the address,
# not the address.

AUD_UNSUBSCRIBE = "unsubscribe"
OPT_OUT_KINDS = {"survey": ("服务评价邀请邮件", "rating requests")}
_NEVER = 2**53  # a token's expiry, in unix seconds: never


def address_digest(settings, address: str) -> str:
    key = hmac.new(settings.secret_key.encode(), b"zaima-mail-address", hashlib.sha256).digest()
    return hmac.new(key, address.strip().casefold().encode(), hashlib.sha256).hexdigest()


def unsubscribe_url(ctx, address: str, kind: str) -> str:
    if kind not in OPT_OUT_KINDS:
        raise ValueError(f"unknown opt-out kind {kind!r}")
    token = sign_token(ctx.settings.secret_key, AUD_UNSUBSCRIBE,
                       {"a": address_digest(ctx.settings, address), "k": kind}, _NEVER)
    return f"{ctx.settings.base_url}/mail/unsubscribe/{token}"


def read_unsubscribe_token(ctx, token: str | None) -> tuple[str, str] | None:
    """(address digest, kind) of an intact unsubscribe link; None otherwise."""
    payload = verify_token(ctx.settings.secret_key, AUD_UNSUBSCRIBE, token, int(ctx.clock.now().timestamp()))
    if payload is None:
        return None
    digest, kind = payload.get("a"), payload.get("k")
    if not isinstance(digest, str) or len(digest) != 64 or kind not in OPT_OUT_KINDS:
        return None
    return digest, kind


async def opted_out(session: AsyncSession, digest: str, kind: str) -> bool:
    return await session.scalar(select(MailOptOut.id).where(MailOptOut.address_digest == digest,
                                                            MailOptOut.kind == kind)) is not None


async def opt_out(session: AsyncSession, ctx, digest: str, kind: str, via: str) -> bool:
    """Record the opt-out; True if it is new, False if the address had already opted out (a repeat is a
    no-op, also when two arrive at once)."""
    created = await session.scalar(
        insert_ignoring_conflicts(session.bind.dialect.name, MailOptOut, [MailOptOut.address_digest, MailOptOut.kind])
        .values(address_digest=digest, kind=kind, via=via, created_at=ctx.clock.now()).returning(MailOptOut.id))
    if created is not None:
        log.info("mail_opt_out", kind=kind, via=via)
    return created is not None


async def queue_mail(session: AsyncSession, ctx, *, to: str, subject: str, text: str, html: str | None = None,
                     dedupe_key: str, opt_out_kind: str | None = None) -> bool:
    """Queue a mail in the caller's transaction: it goes out once that transaction commits, is retried with
    backoff while SMTP fails, and is sent once per `dedupe_key`, ever.

    Returns False (and queues nothing) when mail is off, `to` is not an e-mail address, or (with
    `opt_out_kind`: mail the customer did not ask for) the address opted out of that kind; True when the
    mail is queued, or already was under this dedupe key. Such mail carries the one-click unsubscribe
    headers; its body should carry `unsubscribe_url` too.

    A job's own dedupe key only holds while the job is pending (finishing frees it), so a second call after
    the first mail went out would send it again. Instead the key goes on a marker row in `jobs` that is
    already finished (no worker ever picks it up, nothing frees its key): inserted with `ON CONFLICT DO
    NOTHING` in the same transaction as the mail job, so a concurrent second caller waits for the first and
    then finds the key taken, and a rollback takes both rows back.
    """
    if not dedupe_key:
        raise ValueError("queue_mail needs a dedupe_key")
    if not mail_enabled(ctx.settings) or not is_email(to):
        return False
    if opt_out_kind is not None and await opted_out(session, address_digest(ctx.settings, to), opt_out_kind):
        return False
    now = ctx.clock.now()
    claimed = await session.scalar(_insert_marker(
        session.bind.dialect.name, kind=MAIL_SENT_MARKER, payload={}, dedupe_key=_marker_key(dedupe_key),
        status="done", run_at=now, attempts=0, created_at=now, finished_at=now, last_error=""))
    if claimed is None:
        return True  # queued (and maybe sent) before under this key
    headers = {
        # Fixed now, so a retried send carries the same Message-ID (a receiving server may drop the repeat).
        "Message-ID": make_msgid(domain=_sender_domain(ctx.settings)),
        "Date": format_datetime(now),
        "Auto-Submitted": "auto-generated",
    }
    if opt_out_kind is not None:
        headers["List-Unsubscribe"] = f"<{unsubscribe_url(ctx, to, opt_out_kind)}>"
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    payload = {"to": to.strip(), "subject": subject, "text": text, "html": html, "headers": headers,
               "dedupe_key": dedupe_key}
    await enqueue(session, ctx, MAIL_JOB, payload)
    return True


@handler(MAIL_JOB)
async def send_mail_job(ctx, payload: dict) -> None:
    """A MailError fails the run; the worker retries it with backoff, then marks the job failed."""
    await send_mail(ctx.settings, payload["to"], payload["subject"], payload["text"], payload.get("html"),
                    headers=payload.get("headers"))
