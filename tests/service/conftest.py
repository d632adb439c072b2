"""Fixtures for service tests: a real local SMTP server (aiosmtpd) that keeps every mail it receives, and a
context whose settings send mail to it."""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass, field
from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller

from tests.conftest import free_port, make_settings
from zaima.context import build_context


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes  # as it came over the wire
    message: EmailMessage  # parsed with email.policy.default: headers come back decoded


class _Keep:
    """aiosmtpd handler: accept every mail and keep it."""

    def __init__(self, sink: SmtpSink):
        self.sink = sink

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        raw = envelope.original_content or envelope.content
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        self.sink.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), raw, parsed))
        return "250 Message accepted for delivery"


@dataclass
class SmtpSink:
    """A real SMTP server on 127.0.0.1 (in aiosmtpd's own thread). `start()` again after `stop()` serves the
    same port, so a test can let mail fail first and then come up."""

    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    messages: list[Received] = field(default_factory=list)
    controller: Controller | None = None

    def start(self) -> SmtpSink:
        self.controller = Controller(_Keep(self), hostname=self.host, port=self.port)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def setting_values(self) -> dict:
        return dict(smtp_host=self.host, smtp_port=self.port, smtp_security="none", smtp_timeout_seconds=5.0,
                    smtp_from="在吗客服 <support@zaima.test>")

    def settings(self, db_url: str, tmp_path, **overrides):
        return make_settings(db_url, tmp_path, **{**self.setting_values(), **overrides})


@pytest.fixture
def smtp_server():
    sink = SmtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture
async def mail_ctx(smtp_server, db_url, tmp_path, clock):
    """Like `ctx`, with outbound mail going to `smtp_server`."""
    context = build_context(smtp_server.settings(db_url, tmp_path), clock=clock)
    yield context
    await context.close()
