"""bench/http1.py, the load generators' HTTP/1.1 client, against a real uvicorn server: what it reads is
what the server sent (fixed-length and chunked bodies, status codes), requests share one keep-alive
connection, and it reconnects when the server closes one."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route

from tests.conftest import free_port

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from http1 import Http1Connection  # noqa: E402 - bench/http1.py

peers: list = []


async def echo(request: Request):
    peers.append(request.client.port)
    body = await request.json() if request.method == "POST" else None
    return JSONResponse({"method": request.method, "query": dict(request.query_params), "body": body,
                         "token": request.headers.get("x-order-token")}, status_code=201 if body else 200)


async def chunked(request: Request):
    async def parts():
        for word in ("在", "吗", "?"):
            yield word.encode()
    return StreamingResponse(parts(), media_type="text/plain")


async def closing(request: Request):
    peers.append(request.client.port)
    return PlainTextResponse("bye", status_code=404, headers={"Connection": "close"})


async def test_the_bench_client_reads_what_the_server_sent_on_one_connection_and_reconnects():
    app = Starlette(routes=[Route("/echo", echo, methods=["GET", "POST"]), Route("/chunked", chunked),
                            Route("/closing", closing)])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    conn = Http1Connection(f"http://127.0.0.1:{port}")
    try:
        status, text = await conn.request("POST", "/echo", json_body={"sku": "卡密", "quantity": 1})
        assert status == 201 and json.loads(text)["body"] == {"sku": "卡密", "quantity": 1}
        status, text = await conn.request("GET", "/echo", params={"a": "1 2", "b": "签名"}, headers={"X-Order-Token": "t"})
        assert status == 200 and json.loads(text) == {"method": "GET", "query": {"a": "1 2", "b": "签名"}, "body": None,
                                                       "token": "t"}
        assert await conn.request("GET", "/chunked") == (200, "在吗?")
        assert peers[0] == peers[1]  # one keep-alive connection
        assert await conn.request("GET", "/closing") == (404, "bye")
        status, _ = await conn.request("GET", "/echo")  # the server closed it: a new connection
        assert status == 200 and peers[-1] != peers[0]
    finally:
        conn.close()
        server.should_exit = True
        await task
