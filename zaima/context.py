"""Everything a service needs from the outside world, built once per process."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from zaima import sql
from zaima.config import Settings
from zaima.core import http
from zaima.core.clock import Clock
from zaima.core.crypto import SecretBox
from zaima.db import WalCheckpointer, create_engine, make_sessionmaker, transact
from zaima.realtime import Hub, InProcessHub, build_hub
from zaima.store.epay import EpayClient


@dataclass
class AppContext:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    clock: Clock
    box: SecretBox
    epay: EpayClient | None
    supplier: object | None  # zaima.store.suppliers.SupplierAdapter
    worker_wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    service_wakeup: asyncio.Event = field(default_factory=asyncio.Event)  # zaima.service.loop
    service_state: dict = field(default_factory=dict)  # the service loop's memory on this node
    message_writer: object | None = None  # zaima.web.message_writer: customer messages' group commit
    checkpointer: WalCheckpointer | None = None  # SQLite: the WAL copied back off the event loop (zaima.db)
    # Realtime fan-out and presence. Connects in start() (the app lifespan calls it); a RedisHub also
    # starts itself on first publish or presence call, so code that never runs the lifespan works.
    hub: Hub = field(default_factory=InProcessHub)

    async def transact(self, fn, attempts: int = 6, *, lean: bool = False):
        return await transact(self.sessions, fn, attempts, lean=lean)

    def wake_worker(self) -> None:
        self.worker_wakeup.set()

    def kick_service(self) -> None:
        """Ask the service loop for a routing pass now (a hand-off, a freed slot, a presence change)."""
        self.service_wakeup.set()

    tasks: set = field(default_factory=set)

    def spawn(self, coro, name: str) -> asyncio.Task:
        """Run `coro` in the background (e.g. the bot's answer after the customer's message is acked);
        kept referenced until done, and failures are logged rather than lost."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            structlog.get_logger("zaima").error("background_task_failed", task=task.get_name(),
                                                error=repr(task.exception()))

    async def start(self) -> None:
        """Connect what needs connecting (the realtime hub) and start the SQLite checkpointer; idempotent."""
        await self.hub.start()
        if self.checkpointer is not None:
            self.checkpointer.start()

    async def close(self) -> None:
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=5)
        if self.message_writer is not None:
            await self.message_writer.close()
        if self.checkpointer is not None:
            await self.checkpointer.stop()
        await http.aclose_all()  # the gateway's, the supplier's, the LLM's pooled connections
        await self.hub.close()
        await sql.release_held(self.engine)
        await self.engine.dispose()


def build_context(settings: Settings, clock: Clock | None = None, engine: AsyncEngine | None = None,
                  supplier=None, hub: Hub | None = None) -> AppContext:
    from zaima.store.suppliers import HttpSupplierAdapter

    settings.check()
    engine = engine or create_engine(settings.resolved_database_url)
    epay = None
    if settings.epay_gateway and settings.epay_pid and settings.epay_key:
        epay = EpayClient(settings.epay_gateway, settings.epay_pid, settings.epay_key, settings.epay_timeout_seconds)
    if supplier is None and settings.supplier_base_url and settings.supplier_secret:
        supplier = HttpSupplierAdapter(settings.supplier_base_url, settings.supplier_app_id, settings.supplier_secret)
    clock = clock or Clock()
    return AppContext(
        settings=settings,
        engine=engine,
        sessions=make_sessionmaker(engine),
        clock=clock,
        box=SecretBox(settings.encryption_key_bytes),
        epay=epay,
        supplier=supplier,
        hub=hub if hub is not None else build_hub(settings, clock),
        checkpointer=WalCheckpointer(engine.url),
    )
