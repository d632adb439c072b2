"""Durable jobs: enqueued inside the unit of work that needs them, claimed by compare-and-set, retried
with backoff, and picked up again after a restart (a running job whose lease ran out is claimable).
"""

from __future__ import annotations

import asyncio
import functools
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import bindparam, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from zaima import sql
from zaima.db import insert_ignoring_conflicts, on_commit
from zaima.models import Job

log = structlog.get_logger("zaima.jobs")

Handler = Callable[["object", dict], Awaitable[None]]
HANDLERS: dict[str, Handler] = {}
LEASE = timedelta(minutes=2)
MAX_ATTEMPTS = 8


class RetryLater(Exception):
    """Raised by a handler that wants to run again at a given time (e.g. polling)."""

    def __init__(self, at: datetime, note: str = "", payload: dict | None = None):
        super().__init__(note)
        self.at = at
        self.payload = payload


def handler(kind: str):
    def register(fn: Handler) -> Handler:
        HANDLERS[kind] = fn
        return fn

    return register


@dataclass(frozen=True)
class Queued:
    kind: str
    payload: dict
    run_at: datetime | None = None
    dedupe_key: str | None = None


async def enqueue_all(session: AsyncSession, ctx, jobs: list[Queued]) -> None:
    """Add jobs in the caller's transaction, in one statement. A job whose dedupe key is already
    queued is skipped.

    A dedupe key is held only while its job is pending or running (finishing clears it), so one
    `INSERT … ON CONFLICT DO NOTHING` both queues and deduplicates, even against a concurrent writer.
    """
    now = ctx.clock.now()
    rows = [dict(kind=j.kind, payload=j.payload, dedupe_key=j.dedupe_key, status="pending", run_at=j.run_at or now,
                 attempts=0, created_at=now, last_error="") for j in jobs]
    # One multi-row statement per job count, compiled once; queued with the transaction's other writes.
    await sql.defer(session, _insert_jobs(len(rows)), **sql.numbered(rows))
    if any((j.run_at or now) <= now for j in jobs):
        on_commit(session, ctx.wake_worker)


_JOB_COLUMNS = ("kind", "payload", "dedupe_key", "status", "run_at", "attempts", "created_at", "last_error")


@functools.cache
def _insert_jobs(count: int) -> dict[str, sql.Prepared]:
    rows = sql.values_rows(Job.__table__, _JOB_COLUMNS, count)
    return sql.per_dialect(**{dialect: insert_ignoring_conflicts(dialect, Job, [Job.dedupe_key]).values(rows)
                              for dialect in ("sqlite", "postgresql")})


async def enqueue(session: AsyncSession, ctx, kind: str, payload: dict, run_at: datetime | None = None,
                  dedupe_key: str | None = None) -> None:
    await enqueue_all(session, ctx, [Queued(kind, payload, run_at, dedupe_key)])


@functools.cache
def _cancel(count: int) -> sql.Prepared:
    return sql.Prepared(delete(Job).where(or_(*(Job.dedupe_key == bindparam(f"key{i}") for i in range(count))),
                                          Job.status == "pending"))


async def cancel(session: AsyncSession, *dedupe_keys: str) -> None:
    """Drop queued jobs that became pointless (e.g. payment re-query once the order is paid)."""
    if not dedupe_keys:
        return  # (an empty OR would match every pending job)
    await sql.defer(session, _cancel(len(dedupe_keys)), **{f"key{i}": k for i, k in enumerate(dedupe_keys)})


async def _claim(ctx, job_id: int) -> datetime | None:
    """Take the job by compare-and-set; returns the lease, which also identifies this claim."""
    now = ctx.clock.now()
    lease = now + LEASE
    async with ctx.sessions() as session:
        result = await session.execute(
            update(Job)
            .where(Job.id == job_id)
            .where(or_(Job.status == "pending", (Job.status == "running") & (Job.locked_until < now)))
            .values(status="running", locked_until=lease, attempts=Job.attempts + 1)
        )
        await session.commit()
        return lease if result.rowcount == 1 else None


async def _finish(ctx, job_id: int, lease: datetime, **values) -> None:
    """Record the outcome, unless the lease ran out and another worker has claimed the job since."""
    async with ctx.sessions() as session:
        result = await session.execute(
            update(Job).where(Job.id == job_id, Job.status == "running", Job.locked_until == lease).values(**values)
        )
        await session.commit()
    if result.rowcount != 1:
        log.warning("job_lease_lost", job_id=job_id)


def _backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(5 * 2 ** max(attempts - 1, 0), 1800))


async def run_due(ctx, limit: int = 50) -> int:
    """Run the jobs that are due now; returns how many ran. Used by the worker loop and by tests."""
    now = ctx.clock.now()
    async with ctx.sessions() as session:
        rows = (
            await session.execute(
                select(Job.id, Job.kind, Job.payload, Job.attempts)
                .where(or_(Job.status == "pending", (Job.status == "running") & (Job.locked_until < now)))
                .where(Job.run_at <= now)
                .order_by(Job.run_at, Job.id)
                .limit(limit)
            )
        ).all()
        await session.commit()
    ran = 0
    for job_id, kind, payload, attempts in rows:
        lease = await _claim(ctx, job_id)
        if lease is None:
            continue
        ran += 1
        fn = HANDLERS.get(kind)
        try:
            if fn is None:
                raise RuntimeError(f"no handler for job kind {kind!r}")
            await fn(ctx, payload)
        except RetryLater as later:
            extra = {"payload": later.payload} if later.payload is not None else {}
            await _finish(ctx, job_id, lease, status="pending", run_at=later.at, locked_until=None, attempts=0,
                          last_error=str(later), **extra)
        except Exception as exc:  # noqa: BLE001 - a job failure must not stop the worker
            log.warning("job_failed", job_id=job_id, kind=kind, error=repr(exc))
            done = attempts + 1 >= MAX_ATTEMPTS
            await _finish(
                ctx,
                job_id,
                lease,
                status="failed" if done else "pending",
                run_at=ctx.clock.now() + _backoff(attempts + 1),
                locked_until=None,
                last_error=traceback.format_exc(limit=3)[-2000:],
                finished_at=ctx.clock.now() if done else None,
                **({"dedupe_key": None} if done else {}),
            )
        else:
            await _finish(ctx, job_id, lease, status="done", finished_at=ctx.clock.now(), locked_until=None,
                          dedupe_key=None)
    return ran


async def run_until_idle(ctx, max_rounds: int = 100) -> int:
    total = 0
    for _ in range(max_rounds):
        ran = await run_due(ctx)
        total += ran
        if not ran:
            break
    return total


async def worker_loop(ctx, stop: asyncio.Event) -> None:
    log.info("worker_started")
    while not stop.is_set():
        try:
            ran = await run_due(ctx)
        except Exception as exc:  # noqa: BLE001
            log.error("worker_round_failed", error=repr(exc))
            ran = 0
        if ran:
            continue
        ctx.worker_wakeup.clear()
        try:
            await asyncio.wait_for(ctx.worker_wakeup.wait(), timeout=ctx.settings.worker_poll_seconds)
        except TimeoutError:
            pass
    log.info("worker_stopped")
