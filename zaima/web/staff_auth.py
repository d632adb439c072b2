"""Console sessions for staff: a signed, expiring session cookie, CSRF protection, socket tickets.

The session cookie is HttpOnly and SameSite=Strict (Secure when the store is served over HTTPS); it
carries the staff id and a random CSRF nonce. Every state-changing console request must echo that
nonce in the `X-CSRF-Token` header (or a `csrf` form field); the console page gets it from a meta tag.
A page on another site can make the browser send the cookie, but it cannot read the nonce.

A staff session token and a customer token have different audiences (and MAC keys): neither verifies
as the other, so an agent session cannot be used on the customer socket or the other way round.
"""

from __future__ import annotations

import hmac
import secrets

from fastapi import Depends, Request

from zaima.context import AppContext
from zaima.core.errors import DomainError
from zaima.core.signing import sign_token, verify_token
from zaima.db import unit_of_work
from zaima.models import StaffUser
from zaima.web.deps import get_ctx

COOKIE = "zaima_staff"
SESSION_AUDIENCE = "staff"
TICKET_AUDIENCE = "staff-ws"
SESSION_SECONDS = 12 * 3600
TICKET_SECONDS = 60
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class NotLoggedIn(DomainError):
    code = "unauthorized"
    status = 401
    message_zh = "请先登录客服后台"
    message_en = "Please log in to the console"


class CsrfFailed(DomainError):
    code = "csrf_failed"
    status = 403
    message_zh = "页面已过期或请求来源不明，请刷新页面后重试"
    message_en = "The page is stale or the request came from elsewhere; reload and try again"


def _now(ctx: AppContext) -> int:
    return int(ctx.clock.now().timestamp())


def issue_session(ctx: AppContext, user: StaffUser) -> str:
    payload = {"uid": user.id, "csrf": secrets.token_urlsafe(18)}
    return sign_token(ctx.settings.secret_key, SESSION_AUDIENCE, payload, _now(ctx) + SESSION_SECONDS)


def set_session_cookie(response, ctx: AppContext, token: str) -> None:
    response.set_cookie(COOKIE, token, max_age=SESSION_SECONDS, httponly=True, samesite="strict",
                        secure=ctx.settings.base_url.startswith("https://"), path="/")


def verify_session(ctx: AppContext, token: str | None) -> dict | None:
    return verify_token(ctx.settings.secret_key, SESSION_AUDIENCE, token, _now(ctx))


def read_session(ctx: AppContext, request: Request) -> dict | None:
    return verify_session(ctx, request.cookies.get(COOKIE))


async def load_user(ctx: AppContext, user_id: int) -> StaffUser | None:
    async with unit_of_work(ctx.sessions) as session:
        user = await session.get(StaffUser, user_id)
    return user if user is not None and user.active else None


def check_csrf(request: Request, session_payload: dict, form_value: str | None = None) -> None:
    sent = request.headers.get("x-csrf-token") or form_value or ""
    if not hmac.compare_digest(sent.encode(), str(session_payload.get("csrf", "")).encode()):
        raise CsrfFailed()


async def current_agent(request: Request, ctx: AppContext = Depends(get_ctx)) -> StaffUser:
    """The logged-in staff user; for state-changing methods the CSRF token must match too."""
    payload = read_session(ctx, request)
    user = await load_user(ctx, payload["uid"]) if payload else None
    if user is None:
        raise NotLoggedIn()
    if request.method not in SAFE_METHODS:
        check_csrf(request, payload)
    request.state.csrf = payload["csrf"]
    return user


def issue_ticket(ctx: AppContext, user: StaffUser) -> str:
    return sign_token(ctx.settings.secret_key, TICKET_AUDIENCE, {"uid": user.id}, _now(ctx) + TICKET_SECONDS)


def read_ticket(ctx: AppContext, ticket: str | None) -> int | None:
    payload = verify_token(ctx.settings.secret_key, TICKET_AUDIENCE, ticket, _now(ctx))
    return payload.get("uid") if payload else None
