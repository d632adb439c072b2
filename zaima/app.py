"""create_app(settings): routers, error handling, and the lifespan (migrations, worker)."""

from __future__ import annotations

import asyncio
import gc
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from zaima import jobs
from zaima.config import Settings
from zaima.context import AppContext, build_context
from zaima.core.errors import DomainError, error_body
from zaima.core.ratelimit import RateLimiter
from zaima.db import is_unstorable_value, unstorable_message
from zaima.migrate import upgrade
from zaima.service import mail as _mail  # noqa: F401 - registers the "mail.send" job handler
from zaima.service.loop import service_loop
from zaima.store import jobs as _store_jobs  # noqa: F401 - registers the store's job handlers
from zaima.web import STATIC_DIR

log = structlog.get_logger("zaima.app")


def _validation_message(errors: list[dict]) -> tuple[str, str]:
    fields = []
    for err in errors[:5]:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
        fields.append(".".join(loc) or "请求")
    joined = "、".join(fields)
    return f"请求内容有误，请检查：{joined}", f"Invalid request; check: {', '.join(fields)}"


HTTP_ERRORS = {
    400: ("请求内容无法解析，请检查格式", "The request body could not be read; check its format"),
    401: ("请先登录（用户名或密码错误）", "Login required (wrong username or password)"),
    403: ("没有权限执行此操作", "Not allowed"),
    404: ("找不到这个地址", "Not found"),
    405: ("不支持这种请求方式", "Method not allowed"),
    413: ("请求内容太大", "The request is too large"),
    415: ("不支持的内容类型", "Unsupported content type"),
}
HTTP_ERROR_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                    405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type"}


def tune_gc() -> None:
    """After start-up. Thousands of sockets keep many long-lived objects: move what start-up made out
    of the collector's way and collect young objects less often, so full collections stop pausing the
    event loop for a large part of a second."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 50)


def create_app(settings: Settings, ctx: AppContext | None = None, migrate: bool = True) -> FastAPI:
    ctx = ctx or build_context(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if migrate:
            await upgrade(ctx.engine)
        await ctx.start()
        if settings.bot_enabled:
            from zaima.bot import knowledge
            from zaima.bot.nlu import get_model

            # Load the language model and jieba's dictionary now, not on the first customer's message.
            await asyncio.to_thread(knowledge.warm_up)
            await asyncio.to_thread(get_model)
        tune_gc()
        stop = asyncio.Event()
        loops = [asyncio.create_task(jobs.worker_loop(ctx, stop)),
                 asyncio.create_task(service_loop(ctx, stop))] if settings.worker_enabled else []
        try:
            yield
        finally:
            stop.set()
            ctx.wake_worker()
            ctx.kick_service()
            for loop in loops:
                await loop
            await ctx.close()

    app = FastAPI(
        title="Zaima 在吗",
        description="After-sales customer service for digital-goods stores. JSON API under /api/v1.",
        version="0.1.0",
        lifespan=lifespan,
        telemetry=None if settings.otel else {"tracing": False, "metrics": False, "logs": False},
    )
    app.state.ctx = ctx
    app.state.limits = {
        "lookup_ip": RateLimiter(settings.lookup_rate_per_ip, 600),
        "lookup_order": RateLimiter(settings.lookup_rate_per_order, 600),
        "check_payment": RateLimiter(20, 600),
    }

    @app.exception_handler(DomainError)
    async def domain_error(request: Request, exc: DomainError):
        return JSONResponse({"error": exc.to_dict()}, status_code=exc.status)

    async def unstorable_value(request: Request, exc: Exception):
        if not is_unstorable_value(exc):
            raise exc  # a fault, not bad input: the server-error path logs it and answers 500
        # Logged (type and place only: the database's message may quote the value), in case a value we built
        # ourselves was the one that did not fit.
        log.warning("request_value_unstorable", path=request.url.path, error=type(exc).__name__,
                    sqlstate=getattr(getattr(exc, "orig", None), "sqlstate", None))
        zh, en = unstorable_message(exc)
        return JSONResponse(error_body("invalid_input", f"请求内容有误：{zh}", f"Invalid request: {en}"), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        """The framework's own refusals (no such route, wrong method, unreadable body, missing login), in
        the same shape and languages as ours; a person's browser gets the store's 404 page."""
        if exc.status_code == 404 and "text/html" in request.headers.get("accept", "") \
                and not request.url.path.startswith("/api/"):
            from zaima.web.pages import not_found, service_facts

            await service_facts(request)  # the footer shows the store's real service hours
            return not_found(request)
        zh, en = HTTP_ERRORS.get(exc.status_code, ("请求无法处理", "The request cannot be handled"))
        return JSONResponse(error_body(HTTP_ERROR_CODES.get(exc.status_code, "http_error"), zh, en),
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    app.add_exception_handler(OverflowError, unstorable_value)
    app.add_exception_handler(DBAPIError, unstorable_value)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        zh, en = _validation_message(exc.errors())
        details = [{"field": ".".join(str(p) for p in e.get("loc", ())), "problem": e.get("msg")}
                   for e in exc.errors()[:20]]
        return JSONResponse(error_body("invalid_input", zh, en, details=details), status_code=422)

    @app.get("/healthz", tags=["ops"])
    async def healthz():
        from sqlalchemy import text

        async with ctx.sessions() as session:
            await session.execute(text("SELECT 1"))
        return {"status": "ok"}

    from zaima.store import admin_api, api
    from zaima.web import agent_socket, chat, console, pages, service_chat, unsubscribe

    app.include_router(api.router)
    app.include_router(admin_api.router)
    from zaima.bot import admin_api as bot_admin_api

    app.include_router(bot_admin_api.router)
    app.include_router(chat.router)
    app.include_router(service_chat.router)
    app.include_router(unsubscribe.router)
    app.include_router(agent_socket.router)
    app.include_router(console.router)
    app.include_router(console.api)
    from zaima.web import evidence as evidence_pages

    app.include_router(evidence_pages.router)
    from zaima.web import service_admin

    app.include_router(service_admin.router)
    app.include_router(service_admin.console_api)
    app.include_router(pages.router)
    app.router.routes[0:0] = api.hot_routes()
    app.router._mark_routes_changed()  # FastAPI's router caches what it derives from its routes

    @app.get("/widget.js", include_in_schema=False)
    async def widget_js():
        # Embedded on other sites: cacheable for a while, and loadable cross-origin.
        return FileResponse(STATIC_DIR / "widget.js", media_type="text/javascript; charset=utf-8",
                            headers={"Cache-Control": "public, max-age=300", "Access-Control-Allow-Origin": "*"})
    if settings.demo_gateway:
        from zaima.demo import gateway

        app.include_router(gateway.router)
    if settings.demo_supplier:
        from zaima.demo import supplier

        app.include_router(supplier.router)
    from zaima.web.cors import ChatCors
    from zaima.web.json_guard import JsonGuard

    app.add_middleware(JsonGuard)
    app.add_middleware(ChatCors)  # outermost: the guard's refusals reach the widget with CORS headers too
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
