"""Durable jobs on SQLite and PostgreSQL: they survive restarts, expired leases are taken over,
dedupe keys keep one pending job, failures back off and give up, and no job runs twice at once."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from zaima import jobs
from zaima.context import build_context
from zaima.db import unit_of_work
from zaima.models import Job

# Test-only job kinds. Handlers are plain module-level functions registered like the real ones;
# what they did is recorded in CALLS so a test can see every run.
CALLS: list[tuple[str, dict]] = []
FAIL = {"flaky": True}


class WorkerCrashed(BaseException):
    """Stands for the process dying mid-job: not an Exception, so run_due cannot record an outcome."""


@jobs.handler("test_record")
async def _record(ctx, payload: dict) -> None:
    CALLS.append(("test_record", payload))


@jobs.handler("test_always_fails")
async def _always_fails(ctx, payload: dict) -> None:
    CALLS.append(("test_always_fails", payload))
    raise RuntimeError("remote side says no")


@jobs.handler("test_crashes_once")
async def _crashes_once(ctx, payload: dict) -> None:
    CALLS.append(("test_crashes_once", payload))
    if FAIL["flaky"]:
        FAIL["flaky"] = False
        raise WorkerCrashed()


@jobs.handler("test_later")
async def _later(ctx, payload: dict) -> None:
    CALLS.append(("test_later", payload))
    if payload["round"] < 2:
        raise jobs.RetryLater(
            ctx.clock.now() + timedelta(minutes=10),
            "not yet",
            payload={**payload, "round": payload["round"] + 1},
        )


@jobs.handler("test_slow")
async def _slow(ctx, payload: dict) -> None:
    CALLS.append(("test_slow", payload))
    await asyncio.sleep(0.01)  # yield to the other worker while this job is "running"


@pytest.fixture(autouse=True)
def _reset_calls():
    CALLS.clear()
    FAIL["flaky"] = True
    yield
    CALLS.clear()


async def enqueue(ctx, kind: str, payload: dict | None = None, **kwargs) -> None:
    async with unit_of_work(ctx.sessions) as session:
        await jobs.enqueue(session, ctx, kind, payload or {}, **kwargs)


async def all_jobs(ctx) -> list[Job]:
    async with ctx.sessions() as session:
        return list(await session.scalars(select(Job).order_by(Job.id)))


async def test_job_survives_a_restart(settings, ctx, clock):
    await enqueue(ctx, "test_record", {"n": 1})
    await enqueue(ctx, "test_record", {"n": 2}, run_at=clock.now() + timedelta(minutes=5))
    await ctx.close()  # the process stops before any worker ran

    restarted = build_context(settings, clock=clock)
    try:
        assert await jobs.run_due(restarted) == 1
        assert CALLS == [("test_record", {"n": 1})]
        clock.advance(minutes=5)
        assert await jobs.run_due(restarted) == 1
        assert CALLS[-1] == ("test_record", {"n": 2})
        assert [j.status for j in await all_jobs(restarted)] == ["done", "done"]
    finally:
        await restarted.close()


async def test_running_job_whose_lease_expired_is_picked_up_again(ctx, clock):
    await enqueue(ctx, "test_crashes_once", {"n": 1})
    with pytest.raises(WorkerCrashed):
        await jobs.run_due(ctx)
    [job] = await all_jobs(ctx)
    assert job.status == "running" and job.attempts == 1

    # Another worker does not touch it while the lease holds...
    clock.advance(seconds=jobs.LEASE.total_seconds() - 1)
    assert await jobs.run_due(ctx) == 0
    # ...and takes it over once the lease has run out.
    clock.advance(seconds=2)
    assert await jobs.run_due(ctx) == 1
    [job] = await all_jobs(ctx)
    assert job.status == "done" and job.attempts == 2
    assert len(CALLS) == 2


async def test_dedupe_key_keeps_one_pending_job(ctx, clock):
    for n in range(3):
        await enqueue(ctx, "test_record", {"n": n}, dedupe_key="only-one")
    [job] = await all_jobs(ctx)
    assert job.payload == {"n": 0} and job.status == "pending"

    assert await jobs.run_due(ctx) == 1
    assert CALLS == [("test_record", {"n": 0})]
    # Once the first is done the key is free again: a new job may be queued under it.
    await enqueue(ctx, "test_record", {"n": 9}, dedupe_key="only-one")
    rows = await all_jobs(ctx)
    assert [(j.status, j.dedupe_key) for j in rows] == [("done", None), ("pending", "only-one")]


async def test_concurrent_enqueue_with_one_dedupe_key_keeps_one_job(ctx):
    await asyncio.gather(*(enqueue(ctx, "test_record", {"n": n}, dedupe_key="race") for n in range(8)))
    rows = await all_jobs(ctx)
    assert len(rows) == 1 and rows[0].dedupe_key == "race"


async def test_failing_handler_is_retried_with_backoff_then_ends_failed(ctx, clock):
    await enqueue(ctx, "test_always_fails")
    delays = []
    for attempt in range(1, jobs.MAX_ATTEMPTS + 1):
        assert await jobs.run_due(ctx) == 1
        [job] = await all_jobs(ctx)
        assert job.attempts == attempt
        assert "remote side says no" in job.last_error
        if attempt < jobs.MAX_ATTEMPTS:
            assert job.status == "pending" and job.locked_until is None
            wait = job.run_at - clock.now()
            delays.append(wait)
            assert await jobs.run_due(ctx) == 0  # not due before its backoff has passed
            clock.set(job.run_at)
    [job] = await all_jobs(ctx)
    assert job.status == "failed" and job.finished_at == clock.now()
    assert delays == sorted(delays) and delays[0] >= timedelta(seconds=5) and delays[-1] > delays[0]
    assert len(CALLS) == jobs.MAX_ATTEMPTS
    clock.advance(days=1)
    assert await jobs.run_due(ctx) == 0  # a failed job is never picked up again


async def test_a_handler_asking_to_run_later_is_rescheduled_with_its_new_payload(ctx, clock):
    await enqueue(ctx, "test_later", {"round": 0})
    assert await jobs.run_due(ctx) == 1
    [job] = await all_jobs(ctx)
    assert job.status == "pending" and job.payload == {"round": 1} and job.attempts == 0
    assert job.run_at == clock.now() + timedelta(minutes=10) and job.last_error == "not yet"
    assert await jobs.run_due(ctx) == 0
    for _ in range(2):
        clock.advance(minutes=10)
        assert await jobs.run_due(ctx) == 1
    [job] = await all_jobs(ctx)
    assert job.status == "done" and [p["round"] for _, p in CALLS] == [0, 1, 2]


async def test_two_workers_never_run_one_job_twice(settings, ctx, clock):
    for n in range(20):
        await enqueue(ctx, "test_slow", {"n": n})
    other_node = build_context(settings, clock=clock)  # a second process: its own engine and pool
    try:
        ran = await asyncio.gather(
            jobs.run_due(ctx), jobs.run_due(ctx), jobs.run_due(other_node), jobs.run_due(other_node)
        )
    finally:
        await other_node.close()
    counts = Counter(p["n"] for _, p in CALLS)
    assert sum(ran) == 20
    assert sorted(counts) == list(range(20)) and set(counts.values()) == {1}
    async with ctx.sessions() as session:
        done = await session.scalar(select(func.count()).select_from(Job).where(Job.status == "done"))
        assert done == 20


async def test_a_worker_that_outlived_its_lease_cannot_overwrite_the_new_owner(ctx, clock):
    """A handler that runs past its lease is taken over; when it finally ends, its late outcome
    must not overwrite the run of the worker that now owns the job."""
    started, release = asyncio.Event(), asyncio.Event()

    @jobs.handler("test_overrun")
    async def _overrun(ctx, payload: dict) -> None:
        CALLS.append(("test_overrun", payload))
        if len(CALLS) == 1:  # the first run hangs past its lease, then fails
            started.set()
            await release.wait()
            raise RuntimeError("finished far too late")
        raise jobs.RetryLater(ctx.clock.now() + timedelta(hours=1), "second owner reschedules")

    await enqueue(ctx, "test_overrun", {})
    first = asyncio.create_task(jobs.run_due(ctx))
    await started.wait()
    clock.advance(seconds=jobs.LEASE.total_seconds() + 1)
    assert await jobs.run_due(ctx) == 1  # the second worker takes over and reschedules
    release.set()
    await first
    [job] = await all_jobs(ctx)
    # The second owner's outcome stands: pending an hour later, not the first run's failure backoff.
    assert job.status == "pending" and job.last_error == "second owner reschedules"
    assert job.run_at == clock.now() + timedelta(hours=1)
