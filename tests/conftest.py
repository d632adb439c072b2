"""Shared fixtures: real databases (SQLite and PostgreSQL), migrated with Alembic, a context with a
frozen clock, an in-process ASGI client, and a live uvicorn server for tests that need real HTTP.

Every database test runs on SQLite and on PostgreSQL (127.0.0.1:5432, user postgres). A throwaway
database is created per run from a migrated template; each test gets its own copy. Without a
reachable PostgreSQL the PostgreSQL variants are skipped, unless ZAIMA_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import shutil
import socket
import uuid
from pathlib import Path

import httpx
import pytest
import uvicorn

from zaima.app import create_app
from zaima.config import Settings
from zaima.context import build_context
from zaima.core.clock import FrozenClock

PG_HOST = os.environ.get("ZAIMA_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("ZAIMA_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("ZAIMA_TEST_PG_USER", "postgres")
REQUIRE_SERVICES = os.environ.get("ZAIMA_REQUIRE_SERVICES") == "1"
RUN_ID = uuid.uuid4().hex[:8]
PG_TEMPLATE = f"zaima_tpl_{RUN_ID}"

EPAY_KEY = "test-merchant-key-0123456789abcdef"
SUPPLIER_SECRET = "test-supplier-secret"


def _pg_dsn(db: str) -> str:
    return f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{db}"


async def _pg_exec(sql: str, db: str = "postgres") -> None:
    import asyncpg

    conn = await asyncpg.connect(_pg_dsn(db), timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _pg_available() -> bool:
    try:
        with socket.create_connection((PG_HOST, PG_PORT), timeout=2):
            return True
    except OSError:
        return False


def _migrate(url: str) -> None:
    from zaima.db import create_engine
    from zaima.migrate import upgrade

    async def run():
        engine = create_engine(url)
        await upgrade(engine)
        await engine.dispose()

    asyncio.run(run())


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tpl") / "template.db"
    _migrate(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_template():
    if not _pg_available():
        if REQUIRE_SERVICES:
            pytest.fail(f"PostgreSQL is required (ZAIMA_REQUIRE_SERVICES=1) but {PG_HOST}:{PG_PORT} is unreachable")
        pytest.skip("PostgreSQL not reachable")
    asyncio.run(_pg_exec(f'CREATE DATABASE "{PG_TEMPLATE}"'))
    _migrate(f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{PG_TEMPLATE}")
    yield PG_TEMPLATE
    asyncio.run(_pg_exec(f'DROP DATABASE IF EXISTS "{PG_TEMPLATE}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path):
    """A freshly migrated, empty database: one SQLite file or one PostgreSQL database per test."""
    if request.param == "sqlite":
        template = request.getfixturevalue("sqlite_template")
        path = tmp_path / "zaima.db"
        shutil.copy(template, path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    template = request.getfixturevalue("pg_template")
    name = f"zaima_t_{RUN_ID}_{secrets.token_hex(4)}"
    asyncio.run(_pg_exec(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    yield f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    asyncio.run(_pg_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_settings(db_url: str, tmp_path: Path, port: int | None = None, **overrides) -> Settings:
    port = port or free_port()
    values = dict(
        env="test",
        var_dir=tmp_path / "var",
        database_url=db_url,
        host="127.0.0.1",
        port=port,
        secret_key="test-secret-key-0123456789",
        card_key_encryption_key=base64.b64encode(b"k" * 32).decode(),
        epay_gateway=f"http://127.0.0.1:{port}/demo-gateway/",
        epay_pid="1000",
        epay_key=EPAY_KEY,
        epay_refund_enabled=True,
        supplier_base_url=f"http://127.0.0.1:{port}/demo-supplier",
        supplier_app_id="test",
        supplier_secret=SUPPLIER_SECRET,
        demo_gateway=True,
        demo_supplier=True,
        worker_enabled=False,
        bot_enabled=False,  # transport and store tests speak to people only; tests/bot turn the bot on
    )
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(db_url, tmp_path) -> Settings:
    return make_settings(db_url, tmp_path)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
async def ctx(settings, clock):
    context = build_context(settings, clock=clock)
    yield context
    await context.close()


@pytest.fixture
async def client(settings, ctx):
    """An in-process client (no network) for API tests."""
    app = create_app(settings, ctx=ctx, migrate=False)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://zaima.test") as c:
        yield c


class LiveServer:
    def __init__(self, settings: Settings, ctx):
        self.settings = settings
        self.ctx = ctx
        self.url = settings.base_url
        self.app = create_app(settings, ctx=ctx, migrate=False)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=settings.port,
                                                    log_level="warning", lifespan="off"))
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.server.serve())
        for _ in range(200):
            if self.server.started:
                return
            await asyncio.sleep(0.02)
        raise RuntimeError("live server did not start")

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task:
            await self.task


@pytest.fixture
async def live_server(settings, ctx):
    """A real uvicorn server on a free port in the test's event loop, sharing the test's context:
    the demo gateway and demo supplier on it are real HTTP peers for the app."""
    server = LiveServer(settings, ctx)
    await server.start()
    yield server
    await server.stop()
