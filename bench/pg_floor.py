"""The PostgreSQL floor of an order: what the database work alone costs, with no framework at all.

`bench/orders.py` asks for ≥ 400 delivered orders/s on PostgreSQL on this 2-core machine, with the
server, PostgreSQL and the benchmark client sharing the cores. This script measures how much of the
two cores the *database side* of an order takes when nothing else is in the way: raw asyncpg,
prepared statements, no SQLAlchemy, no HTTP, no Zaima code. It runs the statements an order needs
at the least, in the same three transactions the three requests of an order make, against the real
schema (built by Zaima's migrations, so the same tables, keys and indexes):

1. **create** — INSERT the order; reserve its key (`FOR UPDATE SKIP LOCKED`); INSERT its two
   timeline entries; INSERT its expiry and re-query jobs.
2. **notify** — lock the order row; INSERT the payment; mark the key sold; UPDATE the order; INSERT
   the paid and delivered entries, the delivery attempt and the notify record; DELETE the two jobs.
3. **read** — the order with its product; its timeline; its payment; its keys.

It reports the CPU that PostgreSQL's processes and this client spend per order (from /proc, so the
database must run on this machine), and what is left of the two cores at 400 orders/s for
everything else (HTTP, validation, the ORM, the bench client's HTTP).

    psql -h 127.0.0.1 -U postgres -c 'CREATE DATABASE zaima_floor'
    ZAIMA_ENV=demo ZAIMA_VAR_DIR=/tmp/floorvar \\
      ZAIMA_DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/zaima_floor .venv/bin/zaima db upgrade
    .venv/bin/python bench/pg_floor.py --dsn postgresql://postgres@127.0.0.1:5432/zaima_floor
    psql -h 127.0.0.1 -U postgres -c 'DROP DATABASE zaima_floor'

The LAST line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import log  # noqa: E402 - bench/common.py, next to this script

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds() -> float:
    """utime + stime of every process named postgres on this machine."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        if name == "postgres":
            fields = stat[stat.rindex(")") + 2:].split()
            total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


CREATE = [
    ("order", """INSERT INTO orders (order_no, product_id, quantity, unit_price_fen, amount_fen, contact, contact_kind,
                 recharge_inputs, pay_type, status, delivered_quantity, refunded_quantity, refunded_fen, created_at,
                 expires_at, client_ip, version)
                 VALUES ($1, $2, 1, 100, 100, 'bench@example.com', 'email', '{}', 'alipay', 'pending_payment', 0, 0, 0,
                 $3, $4, '127.0.0.1', 1) RETURNING id"""),
    ("reserve", """UPDATE card_keys SET status = 'reserved', order_id = $1, reserved_at = $3
                   WHERE id IN (SELECT id FROM card_keys WHERE product_id = $2 AND status = 'available'
                                ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id"""),
    ("events2", """INSERT INTO order_events (order_id, at, kind, actor_kind, actor_id, reason, data, conversation_id)
                   VALUES ($1, $2, 'created', 'customer', NULL, '', '{"quantity": 1, "amount": 100}', NULL),
                          ($1, $2, 'stock_reserved', 'system', NULL, '', '{"quantity": 1}', NULL)"""),
    ("jobs2", """INSERT INTO jobs (kind, payload, dedupe_key, status, run_at, attempts, last_error, created_at)
                 VALUES ('expire_order', $1, $2, 'pending', $3, 0, '', $4),
                        ('requery_payment', $1, $5, 'pending', $4, 0, '', $4)"""),
]
NOTIFY = [
    ("lock", "SELECT id, status, amount_fen, version FROM orders WHERE order_no = $1 FOR UPDATE"),
    ("payment", """INSERT INTO payments (order_id, provider, out_trade_no, trade_no, pay_type, amount_fen, received_via,
                   raw, created_at) VALUES ($1, 'epay', $2, $3, 'alipay', 100, 'notify', $4, $5)"""),
    ("sell", """UPDATE card_keys SET status = 'sold', sold_at = $2 WHERE order_id = $1 AND status = 'reserved'
                RETURNING id"""),
    ("order", """UPDATE orders SET status = 'delivered', paid_at = $2, delivered_at = $2, delivered_quantity = 1,
                 version = version + 1 WHERE id = $1 AND version = $3"""),
    ("events2", """INSERT INTO order_events (order_id, at, kind, actor_kind, actor_id, reason, data, conversation_id)
                   VALUES ($1, $2, 'paid', 'gateway', NULL, '', $3, NULL),
                          ($1, $2, 'delivered', 'system', NULL, '', '{"quantity": 1}', NULL)"""),
    ("attempt", """INSERT INTO delivery_attempts (order_id, at, method, result, quantity, detail)
                   VALUES ($1, $2, 'stock', 'delivered', 1, 'need 1, delivered 1')"""),
    ("notification", """INSERT INTO payment_notifications (received_at, out_trade_no, verdict, reason, params,
                        remote_addr) VALUES ($1, $2, 'accepted', '', $3, '127.0.0.1')"""),
    ("unjob", "DELETE FROM jobs WHERE dedupe_key IN ($1, $2)"),
]
READ = [
    ("order", """SELECT o.*, p.sku, p.name, p.name_en, p.kind, p.usage_instructions FROM orders o
                 JOIN products p ON p.id = o.product_id WHERE o.order_no = $1"""),
    ("events", "SELECT * FROM order_events WHERE order_id = $1 ORDER BY id"),
    ("payment", "SELECT * FROM payments WHERE provider = 'epay' AND out_trade_no = $1"),
    ("keys", "SELECT id, ciphertext, product_id, status FROM card_keys WHERE order_id = $1 AND status = 'sold' ORDER BY id"),
]


async def prepare(conn: asyncpg.Connection) -> dict:
    return {group: {name: await conn.prepare(sql) for name, sql in stmts}
            for group, stmts in (("create", CREATE), ("notify", NOTIFY), ("read", READ))}


async def one_order(conn: asyncpg.Connection, st: dict, product_id: int) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    order_no = secrets.token_hex(6).upper()
    async with conn.transaction():
        order_id = await st["create"]["order"].fetchval(order_no, product_id, now, now + timedelta(minutes=15))
        await st["create"]["reserve"].fetch(order_id, product_id, now)
        await st["create"]["events2"].fetch(order_id, now)
        payload = json.dumps({"order_id": order_id})
        await st["create"]["jobs2"].fetch(payload, f"expire:{order_id}", now + timedelta(minutes=15), now,
                                            f"requery:{order_id}")
    params = json.dumps({"out_trade_no": order_no, "money": "1.00", "trade_status": "TRADE_SUCCESS",
                         "trade_no": "T" + order_no, "sign": secrets.token_hex(16)})
    async with conn.transaction():
        row = await st["notify"]["lock"].fetchrow(order_no)
        await st["notify"]["payment"].fetch(row["id"], order_no, "T" + order_no, params, now)
        await st["notify"]["sell"].fetch(row["id"], now)
        await st["notify"]["order"].fetch(row["id"], now, row["version"])
        await st["notify"]["events2"].fetch(row["id"], now, json.dumps({"trade_no": "T" + order_no}))
        await st["notify"]["attempt"].fetch(row["id"], now)
        await st["notify"]["notification"].fetch(now, order_no, params)
        await st["notify"]["unjob"].fetch(f"expire:{row['id']}", f"requery:{row['id']}")
    order = await st["read"]["order"].fetchrow(order_no)
    await st["read"]["events"].fetch(order["id"])
    await st["read"]["payment"].fetchrow(order_no)
    await st["read"]["keys"].fetch(order["id"])


async def setup(dsn: str, keys: int) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        now = datetime.now(UTC).replace(tzinfo=None)
        sku = "floor-" + secrets.token_hex(4)
        product_id = await conn.fetchval(
            """INSERT INTO products (sku, kind, name, name_en, description, usage_instructions, price_fen,
               input_fields, min_quantity, max_quantity, allow_backorder, active, sort_order, created_at)
               VALUES ($1, 'card_key', 'floor', 'floor', '', '', 100, '[]', 1, 5, false, true, 0, $2) RETURNING id""",
            sku, now)
        await conn.executemany(
            """INSERT INTO card_keys (product_id, ciphertext, key_id, fingerprint, status, status_reason, created_at)
               VALUES ($1, $2, 'k1', $3, 'available', '', $4)""",
            [(product_id, secrets.token_bytes(60), secrets.token_hex(32), now) for _ in range(keys)])
        return product_id
    finally:
        await conn.close()


async def run(args: argparse.Namespace) -> dict:
    product_id = await setup(args.dsn, args.orders + args.warmup)
    conns = [await asyncpg.connect(args.dsn) for _ in range(args.concurrency)]
    statements = [await prepare(c) for c in conns]
    queue = list(range(args.warmup + args.orders))
    done = 0
    marks: dict[str, float] = {}

    async def worker(i: int) -> None:
        nonlocal done
        while queue:
            queue.pop()
            await one_order(conns[i], statements[i], product_id)
            done += 1
            if done == args.warmup:
                marks.update(wall=time.perf_counter(), client=time.process_time(), pg=postgres_cpu_seconds())

    try:
        await asyncio.gather(*(worker(i) for i in range(args.concurrency)))
        # Read before the connections close: a backend's CPU leaves /proc with it.
        wall = time.perf_counter() - marks["wall"]
        client_ms = 1000 * (time.process_time() - marks["client"]) / args.orders
        pg_ms = 1000 * (postgres_cpu_seconds() - marks["pg"]) / args.orders
    finally:
        for c in conns:
            await c.close()
    budget_ms = 1000 * args.cores / args.target
    return {
        "bench": "pg_floor", "orders": args.orders, "concurrency": args.concurrency,
        "orders_per_s": round(args.orders / wall, 1),
        "statements_per_order": len(CREATE) + len(NOTIFY) + len(READ) + 4,  # + 2 × (BEGIN, COMMIT)
        "postgres_cpu_ms_per_order": round(pg_ms, 3),
        "asyncpg_client_cpu_ms_per_order": round(client_ms, 3),
        "target_orders_per_s": args.target, "cores": args.cores,
        "cpu_budget_ms_per_order": round(budget_ms, 3),
        "left_for_everything_else_ms": round(budget_ms - pg_ms - client_ms, 3),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/zaima_floor",
                   help="a migrated database on this machine (it gains a product, keys and orders)")
    p.add_argument("--orders", type=int, default=4000)
    p.add_argument("--warmup", type=int, default=400)
    p.add_argument("--concurrency", type=int, default=8, help="like bench/orders.py --buyers")
    p.add_argument("--target", type=float, default=400.0, help="orders/s the budget is computed for")
    p.add_argument("--cores", type=int, default=os.cpu_count())
    args = p.parse_args()
    host = args.dsn.split("@")[-1].split("/")[0].split(":")[0]
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("the PostgreSQL CPU is read from /proc: --dsn must point at this machine")
    result = asyncio.run(run(args))
    log(f"{result['orders_per_s']} orders/s; PostgreSQL {result['postgres_cpu_ms_per_order']} ms + client "
        f"{result['asyncpg_client_cpu_ms_per_order']} ms of CPU per order; budget at {args.target:g}/s on "
        f"{args.cores} cores: {result['cpu_budget_ms_per_order']} ms")
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
