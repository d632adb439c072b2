"""Request-level helpers shared by the API and page routes."""

from __future__ import annotations

from fastapi import Request

from zaima.context import AppContext


async def get_ctx(request: Request) -> AppContext:
    # async: a plain def dependency would cost a threadpool hop on every request
    return request.app.state.ctx


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


async def request_params(request: Request) -> dict[str, str]:
    """Query string and, for a POST, form fields: how 易支付 peers send their parameters."""
    params = dict(request.query_params)
    if request.method == "POST":
        form = await request.form()
        params.update({k: v for k, v in form.items() if isinstance(v, str)})
    return params
