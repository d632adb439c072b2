"""The HTTP floor of an order: the three requests of `bench/orders.py` against endpoints that do nothing.

A FastAPI app with the same three routes (POST /api/v1/orders with a validated JSON body, GET
/pay/epay/notify with a query string answered `success`, GET /api/v1/orders/{no} answered with an
order-sized JSON document) runs under uvicorn with the options Zaima uses (uvloop, httptools, no
access log) in a child process, and the same aiohttp client as `bench/orders.py` drives it. It
reports the CPU the server process and the client spend per order: the part of the 2-core budget
that framework and client take before any database or business logic.

    .venv/bin/python bench/http_floor.py

The LAST line of stdout is one JSON object. Together with `bench/pg_floor.py` it bounds what any
implementation on this stack can reach (docs/benchmarks.md, "The floor").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import log  # noqa: E402 - bench/common.py, next to this script

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

APP = '''
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel

app = FastAPI()
ORDER = {"order_no": "V70ZPAC3X6SN", "status": "delivered", "status_text": "已发货", "quantity": 1,
         "amount": "1.00", "keys": [{"id": 1, "secret": "BENCH-0000-0000-0000"}],
         "timeline": [{"at": "2026-11-26T09:00:00+00:00", "kind": k, "text": k, "actor": "system"}
                      for k in ("created", "stock_reserved", "paid", "delivered")]}


class OrderCreate(BaseModel):
    sku: str
    quantity: int = 1
    contact: str
    pay_type: str = "alipay"


@app.post("/api/v1/orders")
async def create(body: OrderCreate):
    return {"order_no": "V70ZPAC3X6SN", "access_token": "t" * 24, "amount": "1.00"}


@app.get("/pay/epay/notify")
async def notify(request: Request):
    dict(request.query_params)
    return PlainTextResponse("success")


@app.get("/api/v1/orders/{order_no}")
async def read(order_no: str):
    return ORDER
'''


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def drive(base: str, buyers: int, orders: int, warmup: int, server_pid: int) -> dict:
    notify = (f"{base}/pay/epay/notify?pid=1001&type=alipay&out_trade_no=V70ZPAC3X6SN&trade_no=T1&name=x"
              "&money=1.00&trade_status=TRADE_SUCCESS&sign=0123456789abcdef0123456789abcdef&sign_type=MD5")
    body = {"sku": "bench-card", "quantity": 1, "contact": "bench@example.com", "pay_type": "alipay"}
    remaining = warmup + orders
    done = 0
    marks: dict[str, float] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=buyers)) as client:
        async def buyer() -> None:
            nonlocal remaining, done
            while remaining > 0:
                remaining -= 1
                async with client.post(f"{base}/api/v1/orders", json=body) as r:
                    await r.read()
                async with client.get(notify) as r:
                    await r.read()
                async with client.get(f"{base}/api/v1/orders/V70ZPAC3X6SN") as r:
                    await r.json()
                done += 1
                if done == warmup:
                    marks.update(wall=time.perf_counter(), client=time.process_time(), server=cpu_seconds(server_pid))

        await asyncio.gather(*(buyer() for _ in range(buyers)))
    wall = time.perf_counter() - marks["wall"]
    return {
        "bench": "http_floor", "orders": orders, "buyers": buyers,
        "orders_per_s": round(orders / wall, 1),
        "server_cpu_ms_per_order": round(1000 * (cpu_seconds(server_pid) - marks["server"]) / orders, 3),
        "client_cpu_ms_per_order": round(1000 * (time.process_time() - marks["client"]) / orders, 3),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--buyers", type=int, default=8)
    p.add_argument("--orders", type=int, default=4000)
    p.add_argument("--warmup", type=int, default=400)
    args = p.parse_args()
    port = free_port()
    tmp = tempfile.TemporaryDirectory(prefix="zaima-http-floor-")
    workdir = Path(tmp.name)
    (workdir / "floor_app.py").write_text(APP)
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "floor_app:app", "--port", str(port),
                               "--loop", "uvloop", "--http", "httptools", "--log-level", "warning",
                               "--no-access-log"], cwd=workdir)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the floor app did not start") from None
                time.sleep(0.1)
        result = asyncio.run(drive(f"http://127.0.0.1:{port}", args.buyers, args.orders, args.warmup, server.pid))
    finally:
        server.terminate()
        server.wait(10)
        tmp.cleanup()
    log(f"{result['orders_per_s']} orders/s; server {result['server_cpu_ms_per_order']} ms + client "
        f"{result['client_cpu_ms_per_order']} ms of CPU per order (three requests)")
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
