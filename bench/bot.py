"""Bot turn latency and throughput in one process.

A turn is what the bot does for one customer message that the chat has already stored: understand it
(normalisation, intent model, slots), check ownership and policy with a live order lookup, act,
answer, and store the answer with its events. `turns_per_s` is turns divided by the time spent in
them (one at a time); `with_customer_message` adds storing the customer's message and is measured
on the wall clock. Runs on a throwaway SQLite database (or --database-url), with conversations
opened from the order page of delivered orders, and a rotating mix of everyday messages.

    .venv/bin/python bench/bot.py --turns 3000 --concurrency 1
    .venv/bin/python bench/bot.py --turns 3000 --concurrency 8

Prints a human summary, then JSON on the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MESSAGES = [
    "在吗", "我的订单发货了吗", "卡密在哪里看", "怎么兑换啊", "退款规则是什么", "客服几点上班",
    "付了钱没收到卡密", "好的谢谢", "订单什么状态了？？", "这个卡怎么用", "多久能到账", "你好 有人吗",
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(args) -> dict:
    from zaima.app import tune_gc
    from zaima.bot import engine, knowledge
    from zaima.bot.demo_kb import seed_kb
    from zaima.bot.nlu import get_model
    from zaima.config import Settings
    from zaima.context import build_context
    from zaima.conversations import conversations, identity, messages
    from zaima.conversations.senders import Sender
    from zaima.db import unit_of_work
    from zaima.migrate import upgrade
    from zaima.models import Conversation, Customer
    from zaima.store import catalog, epay, orders, payments, stock

    workdir = Path(tempfile.mkdtemp(prefix="zaima-botbench-"))
    settings = Settings(env="test", var_dir=workdir,
                        database_url=args.database_url or f"sqlite+aiosqlite:///{workdir / 'bench.db'}",
                        secret_key=secrets.token_urlsafe(24),
                        card_key_encryption_key=base64.b64encode(secrets.token_bytes(32)).decode(),
                        epay_key=secrets.token_hex(16), epay_pid="1000", worker_enabled=False,
                        log_level="WARNING")
    ctx = build_context(settings)
    await upgrade(ctx.engine)
    get_model()
    knowledge.warm_up()
    async with unit_of_work(ctx.sessions) as session:
        await seed_kb(session, ctx.clock)
        product = await catalog.create_product(session, ctx.clock, "bench-card", kind="card_key", name="点卡 100 元",
                                               price_fen=10000, usage_instructions="在游戏商城兑换页粘贴卡密。")
        await stock.import_keys(session, ctx.box, ctx.clock, product,
                                [f"BENCH-{i:05d}-{secrets.token_hex(4)}" for i in range(args.conversations)])
    conversation_ids = []
    for i in range(args.conversations):
        async with unit_of_work(ctx.sessions) as session:
            fresh = await catalog.get_product(session, "bench-card")
            order = await orders.create_order(session, ctx, fresh, 1, f"1380000{i:04d}")
        params = epay.signed({"pid": "1000", "trade_no": f"B{i}", "out_trade_no": order.order_no, "type": "alipay",
                              "name": "bench", "money": "100.00", "trade_status": "TRADE_SUCCESS"}, settings.epay_key)
        assert await payments.handle_notify(ctx, params) == "accepted"
        async with unit_of_work(ctx.sessions) as session:
            customer = await identity.customer_for_order(session, ctx.clock, order)
            opened = await conversations.open_conversation(session, ctx.clock, customer, order)
            conversation_ids.append(opened.conversation.id)

    tune_gc()  # as the server does after start-up (zaima.app)
    latencies: list[float] = []  # the bot's turn: from the stored customer message to the stored answer
    with_post: list[float] = []  # the same plus storing the customer's message (the chat layer's part)
    outcomes: dict[str, int] = {}
    counter = iter(range(args.turns))

    async def worker(slot: int):
        for n in counter:
            cid = conversation_ids[(n * 7 + slot) % len(conversation_ids)]
            text = MESSAGES[n % len(MESSAGES)]
            start = time.perf_counter()

            async def post(session, cid=cid, text=text):
                conversation = await session.get(Conversation, cid)
                customer = await session.get(Customer, conversation.customer_id)
                await messages.post_message(session, ctx.clock, settings, conversation, Sender.customer(customer),
                                            text)

            await ctx.transact(post)
            stored = time.perf_counter()
            result = await engine.respond(ctx, cid, text)
            done = time.perf_counter()
            latencies.append((done - stored) * 1000)
            with_post.append((done - start) * 1000)
            outcome = result.outcome if result else "quiet"
            outcomes[outcome] = outcomes.get(outcome, 0) + 1

    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(args.concurrency)))
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    await ctx.close()
    return {
        "bench": "bot", "database": "postgresql" if args.database_url else "sqlite", "turns": len(latencies),
        "concurrency": args.concurrency,
        "turns_per_s": round(len(latencies) / (sum(latencies) / 1000), 1) if args.concurrency == 1
        else round(len(latencies) / wall, 1),
        "latency_ms": {"p50": round(statistics.median(latencies), 2), "p99": round(percentile(latencies, 0.99), 2),
                       "max": round(max(latencies), 2)},
        "with_customer_message": {"turns_per_s": round(len(latencies) / wall, 1),
                                  "p50_ms": round(statistics.median(with_post), 2),
                                  "p99_ms": round(percentile(with_post, 0.99), 2)},
        "cpu_ms_per_turn": round(cpu / len(latencies) * 1000, 2), "outcomes": outcomes,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--conversations", type=int, default=50)
    parser.add_argument("--database-url", default="", help="default: a throwaway SQLite file")
    arguments = parser.parse_args()
    result = asyncio.run(main(arguments))
    print(f"{result['turns']} turns, {result['turns_per_s']} turns/s, p50 {result['latency_ms']['p50']} ms, "
          f"p99 {result['latency_ms']['p99']} ms, outcomes {result['outcomes']}")
    print(json.dumps(result, ensure_ascii=False))
