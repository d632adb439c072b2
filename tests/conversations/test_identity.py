"""Customer identity: signed tokens that cannot be confused across audiences or outlive their expiry,
host-site HMAC identities, and the Customer each identity resolves to."""

from __future__ import annotations

import base64
import json
import time
from types import SimpleNamespace

import pytest

from tests.conftest import make_settings
from tests.store.helpers import make_order, make_product
from zaima.conversations import identity
from zaima.conversations.identity import (
    CustomerTokenInvalid,
    ExternalIdentity,
    OrderContextInvalid,
    WidgetIdentityExpired,
    WidgetIdentityFromFuture,
    WidgetIdentityNotConfigured,
    WidgetSignatureInvalid,
)
from zaima.core.errors import ValidationFailed
from zaima.core.signing import sign_token, verify_token
from zaima.db import unit_of_work
from zaima.models import Customer, Order, StaffUser
from zaima.web import staff_auth

WIDGET_SECRET = "host-site-shared-secret"


@pytest.fixture
def plain_settings(tmp_path):
    """Settings for tests that need no database."""
    return make_settings("sqlite+aiosqlite:///unused.db", tmp_path, widget_identity_secret=WIDGET_SECRET)


def _customer(id_: int = 7) -> Customer:
    return Customer(id=id_, kind="device", external_id="d" * 20, display_name="访客")


# --- the generic token ----------------------------------------------------------------------------------------


def test_a_token_verifies_for_its_audience_until_it_expires():
    token = sign_token("s" * 20, "customer", {"customer_id": 5}, expires_at=1000)
    assert "=" not in token and "+" not in token and "/" not in token  # URL-safe
    assert verify_token("s" * 20, "customer", token, now=999) == {"customer_id": 5}
    assert verify_token("s" * 20, "customer", token, now=1000) is None
    assert verify_token("s" * 20, "staff", token, now=10) is None
    assert verify_token("t" * 20, "customer", token, now=10) is None


@pytest.mark.parametrize("bad", [None, "", ".", "abc", "abc.", ".abc", "a.b.c", "x" * 5000, "ünï.cödé"])
def test_garbage_tokens_are_rejected(bad):
    assert verify_token("s" * 20, "customer", bad, now=0) is None


def test_an_edited_token_body_is_rejected_even_with_the_audience_rewritten():
    token = sign_token("s" * 20, "customer", {"customer_id": 5}, expires_at=1000)
    body, mac = token.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    for change in ({"aud": "staff"}, {"p": {"customer_id": 6}}, {"exp": 10**10}):
        forged = base64.urlsafe_b64encode(json.dumps({**decoded, **change}).encode()).rstrip(b"=").decode()
        assert verify_token("s" * 20, "customer", f"{forged}.{mac}", now=0) is None
        assert verify_token("s" * 20, "staff", f"{forged}.{mac}", now=0) is None


# --- audiences and expiry -------------------------------------------------------------------------------------


def test_token_audiences_cannot_be_confused(plain_settings, clock):
    customer_token = identity.issue_customer_token(plain_settings, clock, _customer(7))
    staff = StaffUser(id=7, username="a", display_name="a", password_hash="x")
    web = SimpleNamespace(settings=plain_settings, clock=clock)  # what zaima.web.staff_auth reads of the app
    staff_session = staff_auth.issue_session(web, staff)
    staff_ticket = staff_auth.issue_ticket(web, staff)
    order_token = identity.issue_order_context(plain_settings, clock, Order(order_no="K7Q39XDM2PHT"))

    assert identity.verify_customer_token(plain_settings, clock, customer_token) == 7
    assert staff_auth.verify_session(web, staff_session)["uid"] == 7
    assert staff_auth.read_ticket(web, staff_ticket) == 7
    for other in (customer_token, order_token, staff_ticket):
        assert staff_auth.verify_session(web, other) is None
    for other in (customer_token, order_token, staff_session):
        assert staff_auth.read_ticket(web, other) is None
    for other in (staff_session, staff_ticket, order_token):
        with pytest.raises(CustomerTokenInvalid):
            identity.verify_customer_token(plain_settings, clock, other)
    with pytest.raises(OrderContextInvalid):
        identity.verify_order_context(plain_settings, clock, customer_token)


def test_customer_tokens_expire_after_the_configured_days(plain_settings, clock):
    token = identity.issue_customer_token(plain_settings, clock, _customer())
    clock.advance(days=plain_settings.customer_token_days, seconds=-1)
    assert identity.verify_customer_token(plain_settings, clock, token) == 7
    clock.advance(seconds=1)
    with pytest.raises(CustomerTokenInvalid) as err:
        identity.verify_customer_token(plain_settings, clock, token)
    assert err.value.status == 401 and err.value.message_zh == "会话凭证已失效，请刷新页面"


def test_order_context_expires_after_the_configured_minutes(plain_settings, clock):
    token = identity.issue_order_context(plain_settings, clock, Order(order_no="K7Q39XDM2PHT"))
    clock.advance(minutes=plain_settings.order_context_minutes - 1)
    assert identity.verify_order_context(plain_settings, clock, token) == "K7Q39XDM2PHT"
    clock.advance(minutes=1)
    with pytest.raises(OrderContextInvalid) as err:
        identity.verify_order_context(plain_settings, clock, token)
    assert "过期" in err.value.message_zh


def test_a_token_signed_with_another_secret_key_is_rejected(plain_settings, clock, tmp_path):
    other = make_settings("sqlite+aiosqlite:///unused.db", tmp_path, secret_key="another-secret-key-0123")
    token = identity.issue_customer_token(other, clock, _customer())
    with pytest.raises(CustomerTokenInvalid):
        identity.verify_customer_token(plain_settings, clock, token)


# --- host-site identity ---------------------------------------------------------------------------------------


def _signed(clock, user_id="u-1001", offset=0, secret=WIDGET_SECRET):
    ts = int(clock.now().timestamp()) + offset
    return user_id, ts, identity.widget_identity_signature(secret, user_id, ts)


def test_a_good_widget_signature_is_accepted(plain_settings, clock):
    user_id, ts, sig = _signed(clock)
    assert identity.verify_widget_identity(plain_settings, clock, user_id, ts, sig) == "u-1001"
    assert identity.verify_widget_identity(plain_settings, clock, user_id, str(ts), sig.upper()) == "u-1001"


def test_the_widget_signature_matches_what_a_host_computes_independently(plain_settings, clock):
    import hashlib
    import hmac

    ts = int(clock.now().timestamp())
    sig = hmac.new(WIDGET_SECRET.encode(), f"42:{ts}".encode(), hashlib.sha256).hexdigest()
    assert identity.verify_widget_identity(plain_settings, clock, "42", ts, sig) == "42"


@pytest.mark.parametrize("tamper", ["user", "ts", "sig", "secret", "empty_sig", "ts_text"])
def test_a_bad_widget_signature_is_rejected(plain_settings, clock, tamper):
    user_id, ts, sig = _signed(clock, secret="wrong-secret" if tamper == "secret" else WIDGET_SECRET)
    args = {"user": ("u-1002", ts, sig), "ts": (user_id, ts - 1, sig), "sig": (user_id, ts, sig[:-1] + "0"),
            "secret": (user_id, ts, sig), "empty_sig": (user_id, ts, ""), "ts_text": (user_id, "soon", sig)}[tamper]
    if tamper == "sig" and sig.endswith("0"):
        args = (user_id, ts, sig[:-1] + "1")
    with pytest.raises(WidgetSignatureInvalid) as err:
        identity.verify_widget_identity(plain_settings, clock, *args)
    assert err.value.code == "widget_signature_invalid"


def test_an_old_widget_timestamp_is_rejected(plain_settings, clock):
    window = plain_settings.widget_identity_window_seconds
    assert identity.verify_widget_identity(plain_settings, clock, *_signed(clock, offset=-window)) == "u-1001"
    with pytest.raises(WidgetIdentityExpired) as err:
        identity.verify_widget_identity(plain_settings, clock, *_signed(clock, offset=-window - 1))
    assert err.value.code == "widget_identity_expired" and "过期" in err.value.message_zh


def test_a_widget_timestamp_from_the_future_is_rejected(plain_settings, clock):
    assert identity.verify_widget_identity(plain_settings, clock, *_signed(clock, offset=60)) == "u-1001"
    with pytest.raises(WidgetIdentityFromFuture) as err:
        identity.verify_widget_identity(plain_settings, clock, *_signed(clock, offset=61))
    assert err.value.code == "widget_identity_clock_skew"


def test_widget_identity_without_a_configured_secret_is_rejected(tmp_path, clock):
    settings = make_settings("sqlite+aiosqlite:///unused.db", tmp_path)  # no widget secret
    user_id, ts, sig = _signed(clock)
    with pytest.raises(WidgetIdentityNotConfigured) as err:
        identity.verify_widget_identity(settings, clock, user_id, ts, sig)
    assert err.value.code == "widget_identity_not_configured"
    assert "ZAIMA_WIDGET_IDENTITY_SECRET" in err.value.message_zh


def test_the_widget_errors_are_distinct():
    codes = {cls.code for cls in (WidgetIdentityNotConfigured, WidgetSignatureInvalid, WidgetIdentityExpired,
                                  WidgetIdentityFromFuture)}
    assert len(codes) == 4


def test_real_time_is_not_needed(plain_settings, clock):
    clock.set(clock.now().replace(year=2030))
    user_id, ts, sig = _signed(clock)
    assert ts > time.time()
    assert identity.verify_widget_identity(plain_settings, clock, user_id, ts, sig) == user_id


# --- customers ------------------------------------------------------------------------------------------------


async def test_a_new_device_gets_a_server_made_id_and_comes_back_as_the_same_customer(ctx):
    async with unit_of_work(ctx.sessions) as session:
        first = await identity.customer_for_device(session, ctx.clock)
    assert first.kind == "device" and len(first.external_id) >= 16
    assert first.display_name.startswith("访客 ")
    async with unit_of_work(ctx.sessions) as session:
        again = await identity.customer_for_device(session, ctx.clock, first.external_id)
    assert again.id == first.id
    async with unit_of_work(ctx.sessions) as session:
        for bad in ("short", "x" * 65, "has spaces in it ok?"):
            with pytest.raises(ValidationFailed):
                await identity.customer_for_device(session, ctx.clock, bad)


async def test_one_buyer_across_orders_is_one_customer(ctx):
    product = await make_product(ctx)
    first = await make_order(ctx, product, contact="Buyer@Example.com")
    second = await make_order(ctx, product, contact="buyer@example.com")
    other = await make_order(ctx, product, contact="13800138000")
    async with unit_of_work(ctx.sessions) as session:
        a = await identity.customer_for_order(session, ctx.clock, first)
        b = await identity.customer_for_order(session, ctx.clock, second)
        c = await identity.customer_for_order(session, ctx.clock, other)
    assert a.id == b.id != c.id
    assert (a.kind, a.external_id, a.contact) == ("order", "buyer@example.com", "buyer@example.com")
    assert a.display_name == "bu***@example.com" and c.display_name == "138****8000"


async def test_an_order_context_resolves_to_the_order_and_its_buyer(ctx):
    product = await make_product(ctx)
    order = await make_order(ctx, product, contact="fan@example.com")
    token = identity.issue_order_context(ctx.settings, ctx.clock, order)
    async with unit_of_work(ctx.sessions) as session:
        resolved = await identity.resolve_customer(session, ctx.settings, ctx.clock, order_context=token)
    assert resolved.order.id == order.id and resolved.customer.external_id == "fan@example.com"
    assert identity.verify_customer_token(ctx.settings, ctx.clock, resolved.token) == resolved.customer.id
    ctx.clock.advance(minutes=ctx.settings.order_context_minutes)
    async with unit_of_work(ctx.sessions) as session:
        with pytest.raises(OrderContextInvalid):
            await identity.resolve_customer(session, ctx.settings, ctx.clock, order_context=token)


async def test_a_returning_visitor_keeps_their_customer_until_the_token_expires(ctx):
    async with unit_of_work(ctx.sessions) as session:
        first = await identity.resolve_customer(session, ctx.settings, ctx.clock)
    assert first.customer.kind == "device" and first.order is None
    ctx.clock.advance(days=1)
    async with unit_of_work(ctx.sessions) as session:
        back = await identity.resolve_customer(session, ctx.settings, ctx.clock, customer_token=first.token)
    assert back.customer.id == first.customer.id
    assert back.customer.last_seen_at == ctx.clock.now()
    ctx.clock.advance(days=ctx.settings.customer_token_days)
    async with unit_of_work(ctx.sessions) as session:
        late = await identity.resolve_customer(session, ctx.settings, ctx.clock, customer_token=back.token)
    assert late.customer.id != first.customer.id  # expired: a fresh anonymous visitor


async def test_a_signed_host_user_is_one_external_customer(ctx, tmp_path):
    settings = ctx.settings.model_copy(update={"widget_identity_secret": WIDGET_SECRET})
    user_id, ts, sig = _signed(ctx.clock, user_id="shop-user-9")
    async with unit_of_work(ctx.sessions) as session:
        a = await identity.resolve_customer(session, settings, ctx.clock,
                                            external=ExternalIdentity(user_id, ts, sig, "小明"))
    async with unit_of_work(ctx.sessions) as session:
        b = await identity.resolve_customer(session, settings, ctx.clock, external=ExternalIdentity(user_id, ts, sig))
    assert a.customer.id == b.customer.id
    assert (a.customer.kind, a.customer.external_id, a.customer.display_name) == ("external", "shop-user-9", "小明")
    async with unit_of_work(ctx.sessions) as session:
        with pytest.raises(WidgetSignatureInvalid):
            await identity.resolve_customer(session, settings, ctx.clock,
                                            external=ExternalIdentity("shop-user-10", ts, sig))


async def test_a_token_for_a_deleted_or_unknown_customer_is_invalid(ctx):
    token = identity.issue_customer_token(ctx.settings, ctx.clock, _customer(999_999))
    async with unit_of_work(ctx.sessions) as session:
        with pytest.raises(CustomerTokenInvalid):
            await identity.customer_from_token(session, ctx.settings, ctx.clock, token)
