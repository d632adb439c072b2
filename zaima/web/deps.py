"""Request-level helpers shared by the API and page routes."""

from __future__ import annotations

from fastapi import Request

from zaima.context import AppContext


def get_ctx(request: Request) -> AppContext:
    return request.app.state.ctx


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""
