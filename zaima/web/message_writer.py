"""Group commit for customer messages: every customer socket of this process hands its `send` frames to
one writer, which stores whatever has arrived meanwhile in one transaction (messages.post_many), then
publishes the events and lets each socket send its ack.

Why: a message stored on its own costs a transaction of about ten statements; under load most of that
is per-transaction and per-statement overhead, not work. Batching cuts it to a few shared queries plus
the sequence update per message, and it adds no waiting: a batch is written as soon as the previous
one is done, so at low load every batch holds one message.

Rules kept from the single-message path: the message is committed before its ack and before any event
is published; one socket's messages are stored in the order it sent them (it waits for each ack);
each conversation appears at most once per batch, so the service rules (tickets.after_post) see
exactly the status change this message made. A batch that fails as a whole is retried one message at
a time, so one bad message cannot fail the others.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

import structlog

from zaima.conversations import messages
from zaima.conversations.messages import Draft, Posted
from zaima.models import Conversation
from zaima.realtime.hub import stop_task
from zaima.realtime.publish import publish_after_commit
from zaima.service import tickets

log = structlog.get_logger("zaima.chat")
MAX_BATCH = 100


@dataclass
class _Pending:
    draft: Draft
    future: asyncio.Future


class MessageWriter:
    """One per process (writer_for): customer sockets call post() and await their message's result."""

    def __init__(self, ctx):
        self.ctx = ctx
        self._pending: deque[_Pending] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._closed = False
        self.batches = self.written = 0  # how well batching works: written / batches messages per transaction

    async def post(self, draft: Draft) -> tuple[Conversation, Posted]:
        """Store `draft`; raises what messages.post_many reports for it (e.g. ConversationClosed)."""
        if self._closed:
            raise RuntimeError("the message writer is closed")
        future = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(draft, future))
        self._wakeup.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="message-writer")
        return await future

    async def close(self, timeout: float = 5.0) -> None:
        """Finish the batch being written (its messages are acked), refuse new ones, drop the queued."""
        self._closed = True
        self._wakeup.set()
        if self._task is not None and not self._task.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                await stop_task(self._task)
        self._drop(self._pending)
        self._pending.clear()

    @staticmethod
    def _drop(items) -> None:
        """Their sockets get a cancellation: not acked, so the client sends them again (same id)."""
        for item in items:
            if not item.future.done():
                item.future.cancel()

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending and not self._closed:
                batch = self._take()
                try:
                    await self._write(batch)
                finally:
                    self._drop(batch)  # only those a failure or a cancellation left unanswered
            if self._closed:
                return

    def _take(self) -> list[_Pending]:
        """The next batch: oldest first, one message per conversation (later ones wait for the next)."""
        batch: list[_Pending] = []
        later: list[_Pending] = []
        seen: set[int] = set()
        while self._pending and len(batch) < MAX_BATCH:
            item = self._pending.popleft()
            if item.future.done():  # the socket went away while waiting; it resends on reconnect
                continue
            if item.draft.conversation_id in seen:
                later.append(item)
            else:
                seen.add(item.draft.conversation_id)
                batch.append(item)
        self._pending.extendleft(reversed(later))
        return batch

    async def _write(self, batch: list[_Pending]) -> None:
        if not batch:
            return
        ctx = self.ctx

        async def write(session):
            loaded, results = await messages.post_many(session, ctx.clock, ctx.settings, [i.draft for i in batch])
            events = []
            for result in results:
                if isinstance(result, Posted) and not result.duplicate:
                    conversation = loaded[result.message.conversation_id]
                    events += await tickets.after_post(session, ctx, conversation, result)
                    events += result.events
            publish_after_commit(session, ctx.hub, events)
            return loaded, results

        try:
            loaded, results = await ctx.transact(write)
        except Exception as exc:
            if len(batch) > 1:
                log.warning("message_batch_failed", size=len(batch), error=repr(exc)[:200])
                for item in batch:
                    await self._write([item])
            elif not batch[0].future.done():
                batch[0].future.set_exception(exc)
            return
        self.batches += 1
        self.written += len(batch)
        for item, result in zip(batch, results, strict=True):
            if item.future.done():
                continue
            if isinstance(result, Exception):
                item.future.set_exception(result)
            else:
                item.future.set_result((loaded[result.message.conversation_id], result))


def writer_for(ctx) -> MessageWriter:
    if ctx.message_writer is None:
        ctx.message_writer = MessageWriter(ctx)
    return ctx.message_writer
