"""Order throughput benchmark: buy → pay (signed 易支付 notify) → delivered, against a running server.

Each simulated buyer loops over: POST /api/v1/orders, GET /pay/epay/notify with a correctly signed
notify (expects "success"), GET /api/v1/orders/{no} with X-Order-Token until the order is
`delivered`. Latency is create → delivered as the buyer sees it. Every delivered key is collected,
so a key sold twice shows up as a duplicate.

    .venv/bin/python bench/orders.py --base-url http://127.0.0.1:8200 --buyers 50 --orders 2000

Each buyer sends its requests on a keep-alive connection of its own through bench/http1.py, a minimal
HTTP/1.1 client on httptools, and the client runs on uvloop: the client shares this 2-core machine with
the server, and aiohttp's pool cost about 0.6 ms of CPU per request here (the first version of this
benchmark used httpx, at 1–3 ms), which the server then did not get. aiohttp still makes the few setup
calls (product, key import, sold count).

Progress goes to stderr; the LAST line of stdout is one JSON object with the results. Only loopback
addresses are accepted as targets, and the run stops by itself (after --orders, or at --timeout seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import sys
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import log, loopback_only, run_client  # noqa: E402 - bench/common.py, next to this script
from http1 import Http1Connection, HttpError  # noqa: E402 - bench/http1.py

from zaima.store.epay import signed  # noqa: E402 - the app's own signing rule

DEFAULT_SKU = "bench-card"
CONTACT = "bench@example.com"


def default_epay_key(var_dir: str) -> str | None:
    if os.environ.get("ZAIMA_EPAY_KEY"):
        return os.environ["ZAIMA_EPAY_KEY"]
    for base in (Path(var_dir), ROOT / "var"):
        path = base / "secrets.json"
        if path.exists():
            value = json.loads(path.read_text()).get("epay_key")
            if value:
                return value
    return None


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


class Bench:
    def __init__(self, args: argparse.Namespace, client: aiohttp.ClientSession):
        self.args = args
        self.client = client
        self.product_name = ""
        self.next_index = 0
        self.total = args.warmup + args.orders
        self.latencies: list[float] = []
        self.keys: list[str] = []
        self.delivered = 0
        self.errors = 0
        self.error_samples: list[str] = []
        self.measuring = False
        self.done_measured = 0
        self.measured_keys = 0
        self.extra_polls = 0  # GETs that did not yet show `delivered` (delivery should be immediate)
        self.admin = {"Authorization": "Basic " + base64.b64encode(
            f"{args.admin_user}:{args.admin_password}".encode()).decode()}

    async def call(self, method: str, path: str, **kw) -> tuple[int, str]:
        async with self.client.request(method, path, **kw) as r:
            return r.status, await r.text()

    # --- setup -------------------------------------------------------------------------------
    async def prepare_stock(self) -> None:
        """Create the product if needed and top its stock up to enough keys for this run."""
        a, sku = self.args, self.args.sku
        status, text = await self.call("GET", f"/api/v1/products/{sku}")
        if status == 404:
            if a.sku_given:
                raise SystemExit(f"product {sku!r} does not exist")
            status, text = await self.call("POST", "/api/v1/admin/products", headers=self.admin, json={
                "sku": sku, "kind": "card_key", "name": "压测卡密 bench card", "name_en": "bench card",
                "price": "1.00", "max_quantity": 10, "allow_backorder": False})
            if status != 201:
                raise SystemExit(f"cannot create product {sku!r}: {status} {text[:300]}")
            log(f"created product {sku}")
            status, text = await self.call("GET", f"/api/v1/products/{sku}")
        if status != 200:
            raise SystemExit(f"cannot read product {sku!r}: {status} {text[:300]}")
        product = json.loads(text)
        self.product_name = product["name"]
        available = product["in_stock"] or 0
        need = self.total - available
        if need > 0:
            if a.no_topup:
                raise SystemExit(f"{sku} has {available} keys, the run needs {self.total}")
            run = secrets.token_hex(4)
            lines = "\n".join(f"BENCH-{run}-{i:07d}-{secrets.token_hex(8)}" for i in range(need))
            status, text = await self.call("POST", f"/api/v1/admin/products/{sku}/keys", data=lines.encode(),
                                           headers={**self.admin, "content-type": "text/plain"},
                                           timeout=aiohttp.ClientTimeout(total=300))
            if status != 201:
                raise SystemExit(f"cannot import keys: {status} {text[:300]}")
            log(f"imported {json.loads(text)['imported']} keys into {sku} (had {available} available)")
        else:
            log(f"{sku} has {available} keys available; the run needs {self.total}")

    async def sold_count(self) -> int | None:
        status, text = await self.call("GET", f"/api/v1/admin/products/{self.args.sku}/keys", headers=self.admin,
                                       params={"limit": "1"})
        return json.loads(text).get("counts", {}).get("sold", 0) if status == 200 else None

    # --- one order ---------------------------------------------------------------------------
    def fail(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 10:
            self.error_samples.append(what)
            log(f"error: {what}")

    async def one_order(self, conn: Http1Connection, n: int) -> None:
        a = self.args
        t0 = time.perf_counter()
        status, text = await conn.request("POST", "/api/v1/orders", json_body={
            "sku": a.sku, "quantity": 1, "contact": CONTACT, "pay_type": "alipay"})
        if status != 201:
            return self.fail(f"create: {status} {text[:200]}")
        order = json.loads(text)
        order_no, token, money = order["order_no"], order["access_token"], order["amount"]
        params = signed({"pid": a.pid, "trade_no": f"BENCH{n:08d}{secrets.token_hex(4)}", "out_trade_no": order_no,
                         "type": "alipay", "name": self.product_name, "money": money,
                         "trade_status": "TRADE_SUCCESS"}, a.epay_key)
        status, text = await conn.request("GET", "/pay/epay/notify", params=params)
        if status != 200 or text.strip() != "success":
            return self.fail(f"notify {order_no}: {status} {text[:200]}")
        view = None
        for attempt in range(a.poll_attempts):
            status, text = await conn.request("GET", f"/api/v1/orders/{order_no}", headers={"X-Order-Token": token})
            if status != 200:
                return self.fail(f"get {order_no}: {status} {text[:200]}")
            view = json.loads(text)
            if view["status"] == "delivered":
                break
            self.extra_polls += 1
            await asyncio.sleep(0.01 * (attempt + 1))
        else:
            return self.fail(f"order {order_no} not delivered, status {view and view['status']}")
        elapsed = time.perf_counter() - t0
        self.keys.extend(k["secret"] for k in view["keys"])
        if len(view["keys"]) != 1:
            self.fail(f"order {order_no} delivered {len(view['keys'])} keys, expected 1")
        self.delivered += 1
        if self.measuring:
            self.latencies.append(elapsed)
            self.measured_keys += len(view["keys"])

    async def buyer(self, limit: int, deadline: float) -> None:
        conn = Http1Connection(self.args.base_url, self.args.request_timeout)  # the buyer's keep-alive connection
        try:
            while self.next_index < limit and time.perf_counter() < deadline:
                n = self.next_index
                self.next_index += 1
                try:
                    await self.one_order(conn, n)
                except (HttpError, OSError, TimeoutError, ValueError, KeyError) as exc:
                    self.fail(f"order #{n}: {exc.__class__.__name__}: {exc}")
                if self.measuring:
                    self.done_measured += 1
        finally:
            conn.close()

    async def phase(self, count: int, deadline: float) -> None:
        limit = self.next_index + count
        await asyncio.gather(*(self.buyer(limit, deadline) for _ in range(self.args.buyers)))


async def progress(bench: Bench, start: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=2)
        except TimeoutError:
            elapsed = time.perf_counter() - start
            log(f"  {bench.done_measured}/{bench.args.orders} orders, {bench.done_measured / elapsed:.0f}/s, "
                f"errors {bench.errors}")


async def run(args: argparse.Namespace) -> dict:
    connector = aiohttp.TCPConnector(limit=args.buyers)
    timeout = aiohttp.ClientTimeout(total=args.request_timeout)
    async with aiohttp.ClientSession(args.base_url, connector=connector, timeout=timeout) as client:
        bench = Bench(args, client)
        try:
            await bench.prepare_stock()
        except aiohttp.ClientError as exc:
            raise SystemExit(f"cannot reach {args.base_url}: {exc} (is `zaima demo` running there?)") from exc
        sold_before = await bench.sold_count()
        deadline = time.perf_counter() + args.timeout
        if args.warmup:
            log(f"warm-up: {args.warmup} orders")
            await bench.phase(args.warmup, deadline)
        log(f"run: {args.orders} orders with {args.buyers} buyers against {args.base_url}")
        bench.measuring = True
        delivered_before = bench.delivered
        start = time.perf_counter()
        stop = asyncio.Event()
        reporter = asyncio.create_task(progress(bench, start, stop))
        await bench.phase(args.orders, deadline)
        wall = time.perf_counter() - start
        stop.set()
        await reporter
        sold_after = await bench.sold_count()

    lat = sorted(bench.latencies)
    measured_delivered = bench.delivered - delivered_before
    result = {
        "orders_per_s": round(measured_delivered / wall, 1) if wall > 0 else 0.0,
        "p50_ms": round(percentile(lat, 0.50) * 1000, 1),
        "p99_ms": round(percentile(lat, 0.99) * 1000, 1),
        "orders": args.orders,
        "delivered": measured_delivered,
        "keys_sold": bench.measured_keys,
        "duplicates": len(bench.keys) - len(set(bench.keys)),
        "errors": bench.errors,
        "buyers": args.buyers,
        "database": args.label,
    }
    extra = {"wall_s": round(wall, 2), "mean_ms": round(sum(lat) / len(lat) * 1000, 1) if lat else 0.0,
             "max_ms": round(lat[-1] * 1000, 1) if lat else 0.0, "warmup": args.warmup,
             "keys_collected_incl_warmup": len(bench.keys), "extra_polls": bench.extra_polls,
             "server_sold_delta": None if sold_before is None or sold_after is None else sold_after - sold_before}
    log("details: " + json.dumps(extra))
    if extra["server_sold_delta"] is not None and extra["server_sold_delta"] != len(bench.keys):
        bench.errors += 1
        result["errors"] = bench.errors
        log(f"WARNING: the server counts {extra['server_sold_delta']} keys sold, buyers received {len(bench.keys)}")
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base-url", default="http://127.0.0.1:8000", help="server to drive (loopback only)")
    p.add_argument("--buyers", type=int, default=50, help="concurrent buyers")
    p.add_argument("--orders", type=int, default=2000, help="orders in the measured run")
    p.add_argument("--warmup", type=int, default=50, help="orders before measuring (not counted in timings)")
    p.add_argument("--sku", default=None, help=f"card-key product to buy (default: {DEFAULT_SKU}, created and "
                                               "topped up through the admin API)")
    p.add_argument("--no-topup", action="store_true", help="with --sku: fail instead of importing keys")
    p.add_argument("--epay-key", default=None, help="merchant key (default: $ZAIMA_EPAY_KEY or var/secrets.json)")
    p.add_argument("--var-dir", default=os.environ.get("ZAIMA_VAR_DIR", "var"),
                   help="where secrets.json is looked for (default: $ZAIMA_VAR_DIR or var)")
    p.add_argument("--pid", default="1000", help="易支付 merchant id")
    p.add_argument("--admin-user", default="admin", help="admin login (the demo's by default)")
    p.add_argument("--admin-password", default="zaima-demo-2026", help="admin password (the demo's by default)")
    p.add_argument("--label", default="unknown", help='"database" field of the result, e.g. sqlite or postgresql')
    p.add_argument("--poll-attempts", type=int, default=20, help="order polls before an order counts as failed")
    p.add_argument("--request-timeout", type=float, default=30.0, help="seconds per HTTP request")
    p.add_argument("--timeout", type=float, default=600.0, help="stop starting new orders after this many seconds")
    args = p.parse_args(argv)
    args.base_url = loopback_only(args.base_url)
    args.sku_given = args.sku is not None
    args.sku = args.sku or DEFAULT_SKU
    args.epay_key = args.epay_key or default_epay_key(args.var_dir)
    if not args.epay_key:
        p.error("no merchant key: pass --epay-key, set ZAIMA_EPAY_KEY, or point --var-dir at the demo's var/")
    if args.buyers < 1 or args.orders < 1 or args.warmup < 0:
        p.error("--buyers and --orders must be positive, --warmup not negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run_client(run(args))
    print(json.dumps(result), flush=True)
    return 0 if result["errors"] == 0 and result["duplicates"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
