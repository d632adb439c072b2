"""Who the customer is: signed tokens (order context, customer session; staff sessions are
zaima.web.staff_auth's, under their own audiences), host-site
identities signed with HMAC, and the Customer row each kind of identity resolves to.

Three kinds of customer:
- ``device``: an anonymous visitor; the device id is a random server-made secret kept by the widget.
- ``order``: proved ownership of an order (the order page hands out a signed order context); keyed by the
  order's contact, so the same buyer across several orders is one customer.
- ``external``: a user of a host site that embeds the widget and signs its user id with the shared
  ``widget_identity_secret``: sig = hex(HMAC-SHA256(secret, f"{user_id}:{ts}")).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from zaima.core.errors import DomainError, NotFound, ValidationFailed
from zaima.core.signing import sign_token, verify_token
from zaima.models import Customer, Order
from zaima.store.orders import get_order

AUD_ORDER_CONTEXT = "order-context"
AUD_CUSTOMER = "customer"

DEVICE_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
EXTERNAL_ID_MAX = 128
FUTURE_SKEW_SECONDS = 60  # a host server's clock may run a little ahead of ours, not more


# --- errors ---------------------------------------------------------------------------------------------------


class InvalidToken(DomainError):
    code = "invalid_token"
    status = 401
    message_zh = "凭证无效或已过期"
    message_en = "The token is invalid or has expired"


class OrderContextInvalid(InvalidToken):
    code = "order_context_invalid"
    message_zh = "订单链接已失效或已过期，请重新查询订单后再联系客服"
    message_en = "The order link is invalid or has expired; look the order up again, then contact us"


class CustomerTokenInvalid(InvalidToken):
    code = "customer_token_invalid"
    message_zh = "会话凭证已失效，请刷新页面"
    message_en = "The chat session has expired; reload the page"


class WidgetIdentityNotConfigured(DomainError):
    code = "widget_identity_not_configured"
    status = 400
    message_zh = "本店未开启网站用户身份验证（未设置 ZAIMA_WIDGET_IDENTITY_SECRET），无法识别登录用户"
    message_en = "Host-site identity is not enabled (ZAIMA_WIDGET_IDENTITY_SECRET is not set)"


class WidgetSignatureInvalid(DomainError):
    code = "widget_signature_invalid"
    status = 401
    message_zh = "用户身份签名无效，请检查 user_id、ts 和签名密钥"
    message_en = "The user identity signature is invalid; check user_id, ts and the signing secret"


class WidgetIdentityExpired(DomainError):
    code = "widget_identity_expired"
    status = 401
    message_zh = "用户身份签名已过期，请刷新页面"
    message_en = "The user identity signature has expired; reload the page"


class WidgetIdentityFromFuture(DomainError):
    code = "widget_identity_clock_skew"
    status = 401
    message_zh = "用户身份签名的时间晚于当前时间，请检查网站服务器的时钟"
    message_en = "The user identity signature is dated in the future; check the host server's clock"


# --- tokens ---------------------------------------------------------------------------------------------------


def _unix(clock) -> int:
    return int(clock.now().timestamp())


def issue_token(settings, clock, audience: str, payload: dict, lifetime: timedelta) -> str:
    return sign_token(settings.secret_key, audience, payload, _unix(clock) + int(lifetime.total_seconds()))


def issue_order_context(settings, clock, order: Order) -> str:
    """Handed by the order page to the verified owner, so the chat opens with that order attached."""
    return issue_token(settings, clock, AUD_ORDER_CONTEXT, {"order_no": order.order_no},
                       timedelta(minutes=settings.order_context_minutes))


def verify_order_context(settings, clock, token: str | None) -> str:
    """The order number the token vouches for."""
    payload = verify_token(settings.secret_key, AUD_ORDER_CONTEXT, token, _unix(clock))
    if payload is None or not isinstance(payload.get("order_no"), str):
        raise OrderContextInvalid()
    return payload["order_no"]


def issue_customer_token(settings, clock, customer: Customer) -> str:
    """The customer's session, kept by the widget (localStorage) so a returning visitor keeps history."""
    return issue_token(settings, clock, AUD_CUSTOMER, {"customer_id": customer.id},
                       timedelta(days=settings.customer_token_days))


def verify_customer_token(settings, clock, token: str | None) -> int:
    payload = verify_token(settings.secret_key, AUD_CUSTOMER, token, _unix(clock))
    customer_id = payload.get("customer_id") if payload else None
    if not isinstance(customer_id, int) or isinstance(customer_id, bool):
        raise CustomerTokenInvalid()
    return customer_id


# --- host-site identity ---------------------------------------------------------------------------------------


def widget_identity_signature(secret: str, user_id: str, ts: int | str) -> str:
    """What the host site computes on its server: lowercase hex HMAC-SHA256 of "user_id:ts"."""
    return hmac.new(secret.encode(), f"{user_id}:{ts}".encode(), hashlib.sha256).hexdigest()


def verify_widget_identity(settings, clock, user_id: str | None, ts: int | str | None, sig: str | None) -> str:
    """The host site's user id, once its signature and age check out. Raises a distinct error for a
    missing secret, a bad signature, a stale timestamp and a timestamp from the future."""
    secret = settings.widget_identity_secret
    if not secret:
        raise WidgetIdentityNotConfigured()
    if not isinstance(user_id, str) or not user_id or len(user_id) > EXTERNAL_ID_MAX or not user_id.isprintable():
        raise WidgetSignatureInvalid()
    ts_text = str(ts) if isinstance(ts, int | str) and not isinstance(ts, bool) else ""
    if not re.fullmatch(r"[0-9]{1,12}", ts_text) or not isinstance(sig, str):
        raise WidgetSignatureInvalid()
    # The signature covers the timestamp exactly as sent, so check it on the text the host signed.
    expected = widget_identity_signature(secret, user_id, ts_text)
    if not hmac.compare_digest(expected.encode(), sig.strip().lower().encode()):
        raise WidgetSignatureInvalid()
    age = _unix(clock) - int(ts_text)
    if age > settings.widget_identity_window_seconds:
        raise WidgetIdentityExpired()
    if age < -FUTURE_SKEW_SECONDS:
        raise WidgetIdentityFromFuture()
    return user_id


# --- customers ------------------------------------------------------------------------------------------------


def new_device_id() -> str:
    return secrets.token_urlsafe(24)


def mask_contact(contact: str) -> str:
    """b***@example.com, 138****5678: enough for an agent to recognise, not enough to harvest."""
    if "@" in contact:
        local, _, domain = contact.partition("@")
        return f"{local[:2]}***@{domain}"
    if len(contact) >= 7:
        return f"{contact[:3]}****{contact[-4:]}"
    return "***"


async def _get_or_create(session: AsyncSession, clock, kind: str, external_id: str, display_name: str,
                         contact: str | None = None) -> Customer:
    now = clock.now()
    query = select(Customer).where(Customer.kind == kind, Customer.external_id == external_id)
    customer = await session.scalar(query)
    if customer is None:
        try:
            async with session.begin_nested():
                customer = Customer(kind=kind, external_id=external_id, display_name=display_name[:100],
                                    contact=contact, created_at=now, last_seen_at=now)
                session.add(customer)
        except IntegrityError:
            # Two first visits raced (two tabs); the other one created the row, which we now see.
            customer = await session.scalar(query)
            if customer is None:
                raise
    customer.last_seen_at = now
    return customer


async def customer_for_device(session: AsyncSession, clock, device_id: str | None = None) -> Customer:
    """The anonymous customer of this device; a new device id is made here when the widget has none
    (read it back from `customer.external_id` and give it to the widget)."""
    if device_id is None:
        device_id = new_device_id()
    elif not isinstance(device_id, str) or not DEVICE_ID.match(device_id):
        raise ValidationFailed("设备标识无效", "invalid device id", field="device_id")
    tag = hashlib.sha256(device_id.encode()).hexdigest()[:4].upper()
    return await _get_or_create(session, clock, "device", device_id, f"访客 {tag}")


async def customer_for_order(session: AsyncSession, clock, order: Order) -> Customer:
    """The customer behind an order, keyed by its contact: one buyer, one customer, across orders."""
    return await _get_or_create(session, clock, "order", order.contact, mask_contact(order.contact),
                                contact=order.contact)


async def customer_for_external(session: AsyncSession, clock, user_id: str,
                                display_name: str | None = None) -> Customer:
    """The customer for a verified host-site user id (call verify_widget_identity first). The display
    name is not covered by the signature: it only labels the customer for agents."""
    name = (display_name or "").strip()
    name = name if name and name.isprintable() else f"用户 {user_id}"
    return await _get_or_create(session, clock, "external", user_id, name)


async def customer_from_token(session: AsyncSession, settings, clock, token: str | None) -> Customer:
    customer = await session.get(Customer, verify_customer_token(settings, clock, token))
    if customer is None:
        raise CustomerTokenInvalid()
    customer.last_seen_at = clock.now()
    return customer


async def order_from_context(session: AsyncSession, settings, clock, token: str | None) -> Order:
    order_no = verify_order_context(settings, clock, token)
    try:
        return await get_order(session, order_no)
    except NotFound:
        raise OrderContextInvalid() from None


@dataclass(frozen=True)
class ExternalIdentity:
    user_id: str
    ts: int | str
    sig: str
    display_name: str | None = None


@dataclass
class ResolvedCustomer:
    customer: Customer
    order: Order | None
    token: str  # a fresh customer token: the widget stores it and sends it next time


async def resolve_customer(session: AsyncSession, settings, clock, *, customer_token: str | None = None,
                           order_context: str | None = None, external: ExternalIdentity | None = None,
                           device_id: str | None = None) -> ResolvedCustomer:
    """The customer behind a widget connection, strongest proof first: a signed host-site identity, then
    an order context, then the stored customer token, then the device id, else a new device.

    A bad host identity or order context is an error (the page meant to identify the customer; silently
    falling back would hide a misconfiguration). An expired or unknown customer token just falls through.
    The order context attaches its order whoever the customer turns out to be.
    """
    order = await order_from_context(session, settings, clock, order_context) if order_context else None
    customer = None
    if external is not None:
        user_id = verify_widget_identity(settings, clock, external.user_id, external.ts, external.sig)
        customer = await customer_for_external(session, clock, user_id, external.display_name)
    elif order is not None:
        customer = await customer_for_order(session, clock, order)
    elif customer_token:
        try:
            customer = await customer_from_token(session, settings, clock, customer_token)
        except CustomerTokenInvalid:
            customer = None
    if customer is None:
        customer = await customer_for_device(session, clock, device_id)
    await session.flush()
    return ResolvedCustomer(customer, order, issue_customer_token(settings, clock, customer))
