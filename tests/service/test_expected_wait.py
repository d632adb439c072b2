"""The expected wait plays routing forward: it counts only the agents who will take the ticket (skills,
languages) until the skill fallback lets anyone take it."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.service.helpers import ALL_DAY, conv, go_online, make_agent, service_pass, set_hours, ticket
from tests.store.helpers import make_order, make_product
from zaima.db import unit_of_work
from zaima.service import queue
from zaima.service.queue import Need, Slot, Snapshot

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
HANDLE = queue.DEFAULT_HANDLE.total_seconds()  # 480 s: no history in these snapshots
FALLBACK = queue.SKILL_FALLBACK.total_seconds()  # 300 s


def waits(snap: Snapshot) -> list[float | None]:
    return [None if w is None else w.total_seconds() for w in snap.waits().values()]


def test_without_skills_the_nth_ticket_takes_the_nth_slot_to_free():
    snap = Snapshot(NOW, [1, 2, 3, 4], slots=[Slot(None), Slot(60.0), Slot(400.0)])
    # free now; busy 60 s (frees in 420); busy 400 s (frees in max(80, 480/5 = 96)); then one handle later
    assert waits(snap) == [0.0, 96.0, 420.0, 480.0]


def test_nobody_online_gives_no_number():
    assert waits(Snapshot(NOW, [1, 2])) == [None, None]


def test_a_ticket_waits_for_an_agent_with_its_skill_and_others_go_ahead_of_it():
    card_key_agent = Slot(0.0, skills=("card_key",))  # busy: frees in 480 s
    recharge_agent = Slot(None, skills=("recharge",))  # free now
    snap = Snapshot(NOW, [1, 2], slots=[card_key_agent, recharge_agent],
                    needs={1: Need("card_key", "zh", FALLBACK), 2: Need("recharge", "zh", FALLBACK)})
    # The first ticket is not given the recharge agent's free slot (routing would not give it either):
    # the recharge ticket behind it takes that slot now, and the card-key ticket waits — until the
    # fallback at 300 s would let the recharge agent take it, but that agent is busy until 480 s too.
    assert waits(snap) == [480.0, 0.0]


def test_free_slots_go_to_the_agent_routing_would_choose():
    """Two free slots at once: routing gives the recharge ticket the least loaded agent, then the one assigned
    longest ago, then the lower id — and which agent that is decides whether the card-key ticket waits."""
    needs = {1: Need("recharge", "zh", FALLBACK), 2: Need("card_key", "zh", FALLBACK)}

    def play(generalist: Slot, specialist: Slot) -> list[float | None]:
        return waits(Snapshot(NOW, [1, 2], slots=[generalist, specialist], needs=needs))

    # Equal load and never assigned: the lower id takes the recharge ticket. The generalist first: the
    # card-key ticket then has only the recharge specialist, who takes it at the skill fallback.
    assert play(Slot(None, agent=1), Slot(None, skills=("recharge",), agent=2)) == [0.0, FALLBACK]
    assert play(Slot(None, agent=2), Slot(None, skills=("recharge",), agent=1)) == [0.0, 0.0]
    # Fairness before the id: the specialist was assigned longer ago, so it takes the recharge ticket.
    assert play(Slot(None, agent=1, last_assigned=-60.0),
                Slot(None, skills=("recharge",), agent=2, last_assigned=-600.0)) == [0.0, 0.0]
    # Load before fairness: the generalist has a second slot free (less loaded), so it takes the first ticket.
    assert waits(Snapshot(NOW, [1, 2], needs=needs, slots=[
        Slot(None, agent=1, capacity=2, last_assigned=-60.0), Slot(None, agent=1, capacity=2, last_assigned=-60.0),
        Slot(None, skills=("recharge",), agent=2, capacity=2, last_assigned=-600.0),
        Slot(30.0, skills=("recharge",), agent=2, capacity=2, last_assigned=-600.0)])) == [0.0, 0.0]


def test_a_ticket_nobody_serves_waits_for_the_skill_fallback():
    snap = Snapshot(NOW, [1], slots=[Slot(None, skills=("card_key",))],
                    needs={1: Need("recharge", "zh", 120.0)})  # queued 3 minutes ago
    assert waits(snap) == [120.0]


def test_languages_count_like_skills():
    snap = Snapshot(NOW, [1, 2], slots=[Slot(None, languages=("zh",)), Slot(200.0, languages=("zh", "en"))],
                    needs={1: Need(None, "en", FALLBACK), 2: Need(None, "zh", FALLBACK)})
    # The English ticket waits for the bilingual agent (frees in 280 s, before its fallback at 300 s);
    # the Chinese ticket behind it takes the free slot now.
    assert waits(snap) == [280.0, 0.0]


async def test_the_promise_follows_routings_choice_of_agent(ctx, clock):
    """Both agents free: the recharge ticket goes to the agent routing picks (here the generalist, the
    lower id), so the card-key ticket behind it is promised the skill fallback, and routing keeps that."""
    await set_hours(ctx, ALL_DAY)
    recharge_product = await make_product(ctx, sku="genshin", kind="recharge")
    card_product = await make_product(ctx, sku="steam-card")
    generalist = await make_agent(ctx, "all", capacity=1)
    specialist = await make_agent(ctx, "topup", capacity=1, skills=["recharge"])
    assert generalist.id < specialist.id
    recharge = await ticket(ctx, order=await make_order(ctx, recharge_product, inputs={"uid": "123456789"}))
    card = await ticket(ctx, order=await make_order(ctx, card_product))
    await go_online(ctx, generalist)
    await go_online(ctx, specialist)
    rows = [await conv(ctx, c.id) for c in (recharge, card)]
    async with unit_of_work(ctx.sessions) as session:
        promised = [(await queue.queue_status(session, ctx, row))["expected_wait_seconds"] for row in rows]
    assert promised == [0, FALLBACK]
    await service_pass(ctx)
    assert (await conv(ctx, recharge.id)).assignee_id == generalist.id
    assert (await conv(ctx, card.id)).status == "queued"
    clock.advance(seconds=FALLBACK)
    await service_pass(ctx)
    assert (await conv(ctx, card.id)).assignee_id == specialist.id


async def test_the_widget_promises_what_routing_then_does(ctx, clock):
    """A recharge ticket with only a card-key agent free: the old estimate said 0 (a free slot), routing
    kept it waiting; now the promise is the skill fallback, and routing keeps it."""
    await set_hours(ctx, ALL_DAY)
    recharge_product = await make_product(ctx, sku="genshin", kind="recharge")
    keys_only = await make_agent(ctx, "keys", capacity=1, skills=["card_key"])
    await go_online(ctx, keys_only)
    waiting = await ticket(ctx, order=await make_order(ctx, recharge_product, inputs={"uid": "123456789"}))
    async with unit_of_work(ctx.sessions) as session:
        view = await queue.queue_status(session, ctx, await conv(ctx, waiting.id))
    assert view["expected_wait_seconds"] == FALLBACK

    clock.advance(seconds=FALLBACK - 60)
    await service_pass(ctx)
    assert (await conv(ctx, waiting.id)).status == "queued"
    async with unit_of_work(ctx.sessions) as session:
        assert (await queue.queue_status(session, ctx, await conv(ctx, waiting.id)))["expected_wait_seconds"] == 60
    clock.advance(seconds=60)
    await service_pass(ctx)
    assert (await conv(ctx, waiting.id)).assignee_id == keys_only.id
