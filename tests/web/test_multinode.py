"""Two nodes, one conversation: two real `zaima serve` processes share PostgreSQL and Redis. A customer
on node A and an agent on node B talk both ways (events cross nodes through Redis pub/sub); node A is
then killed with SIGKILL (just after storing a customer message whose ack the customer never gets),
the agent keeps writing, and the customer resumes on node B with the last seq it holds and resends
its unacknowledged message with the same client_msg_id (docs/realtime.md §3 "The reconnect rule" and
§4 "Nodes"). Every message must reach each side exactly once, in order, and the stored transcript
must hold each exactly once.

Needs PostgreSQL and Redis: skipped when either is unreachable, unless ZAIMA_REQUIRE_SERVICES=1.

Isolation: a throwaway PostgreSQL database (a copy of the session's migrated template) and a Redis key
and channel prefix of its own (ZAIMA_REDIS_PREFIX), so another Zaima on the same Redis (a parallel
test run, a local `zaima serve`) neither hears this test's events nor sees its presence.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
import websockets

from tests.conftest import PG_HOST, PG_PORT, PG_USER, REQUIRE_SERVICES
from tests.web.chat_helpers import Client, agent_login, customer_session, customer_socket, say
from tests.web.multinode_helpers import Node
from zaima.core.clock import Clock
from zaima.db import create_engine, make_sessionmaker, unit_of_work
from zaima.staff import create_staff

REDIS_BASE = os.environ.get("ZAIMA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REDIS_DB = 5
DELIVERY_TIMEOUT = 5.0  # cross-node delivery takes milliseconds; this only bounds a failure


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


async def _pg_exec(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/postgres", timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
def redis_url() -> str:
    parsed = urlparse(REDIS_BASE)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 6379
    if not _reachable(host, port):
        if REQUIRE_SERVICES:
            pytest.fail(f"Redis is required (ZAIMA_REQUIRE_SERVICES=1) but {host}:{port} is unreachable")
        pytest.skip("Redis not reachable")
    auth = f"{parsed.username or ''}:{parsed.password}@" if parsed.password else ""
    return f"redis://{auth}{host}:{port}/{REDIS_DB}"


@pytest.fixture
def shared_database(pg_template):
    """A PostgreSQL database of this test's own, copied from the migrated template; dropped after."""
    name = f"zaima_mn_{secrets.token_hex(6)}"
    asyncio.run(_pg_exec(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"'))
    try:
        yield f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        asyncio.run(_pg_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@dataclass
class Cluster:
    a: Node
    b: Node
    username: str
    password: str


async def _prepare_database(url: str, username: str, password: str) -> None:
    """The agent's account."""
    engine = create_engine(url)
    try:
        async with unit_of_work(make_sessionmaker(engine)) as session:
            await create_staff(session, Clock(), username, password, "agent", display_name="客服小林")
    finally:
        await engine.dispose()


async def _forget_presence(redis_url: str, prefix: str) -> None:
    """Node A died holding presence; remove whatever this run left under its prefix."""
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url, socket_connect_timeout=2)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def cluster(redis_url, shared_database, tmp_path: Path):
    username = f"mn-{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(12)
    prefix = f"zaima-test-{secrets.token_hex(4)}:"
    await _prepare_database(shared_database, username, password)
    shared = {
        "ZAIMA_ENV": "test",
        "ZAIMA_DATABASE_URL": shared_database,
        "ZAIMA_REDIS_URL": redis_url,
        "ZAIMA_REDIS_PREFIX": prefix,
        # The same secrets on every node: a customer token or staff ticket from one verifies on the other.
        "ZAIMA_SECRET_KEY": secrets.token_urlsafe(32),
        "ZAIMA_CARD_KEY_ENCRYPTION_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "ZAIMA_VAR_DIR": str(tmp_path / "var"),
        "ZAIMA_WORKER_ENABLED": "false",
        "ZAIMA_BOT_ENABLED": "false",  # the transcript holds exactly the customer's and the agent's messages
        "ZAIMA_LOG_LEVEL": "INFO",
    }
    nodes = [Node(name, _free_port(), shared, tmp_path / f"node-{name}") for name in ("A", "B")]
    try:
        for node in nodes:
            node.start()
        await asyncio.gather(*(node.wait_ready() for node in nodes))
        yield Cluster(nodes[0], nodes[1], username, password)
    finally:
        for node in nodes:
            node.stop()
        # Captured by pytest, so shown only when the test fails.
        print("\n".join(node.report() for node in nodes))
        with contextlib.suppress(Exception):
            await _forget_presence(redis_url, prefix)


async def _connection_dropped(client: Client, timeout: float = 10.0) -> None:
    """Wait until the socket's peer is gone (a dead node sends no close frame)."""
    async def drain():
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                await client.ws.recv()

    await asyncio.wait_for(drain(), timeout)


async def test_two_nodes_exchange_live_and_a_customer_resumes_on_the_other_after_a_crash(cluster):
    a, b = cluster.a, cluster.b
    async with contextlib.AsyncExitStack() as stack:
        # The customer: HTTP session and socket on node A.
        session = await customer_session(a.url)
        cid = session["conversation"]["id"]
        token = session["customer_token"]
        customer = await customer_socket(a.url, session)
        stack.push_async_callback(customer.ws.close)

        # The agent: console login, ticket and socket on node B, watching the conversation.
        agent = await agent_login(b.url, cluster.username, cluster.password)
        stack.push_async_callback(agent.http.aclose)
        agent_ws = await agent.socket()
        stack.push_async_callback(agent_ws.close)
        await agent_ws.send({"type": "subscribe", "conversation_id": cid, "last_seq": 0})
        await agent_ws.send({"type": "ping"})
        await agent_ws.expect("pong")  # frames are handled in order: the subscription is in place

        expected: list[tuple[int, str, str]] = []  # (seq, sender_kind, body), in the order sent
        customer_got: list[int] = []  # seqs of the `message` frames the customer received, over both sockets
        agent_got: list[int] = []

        async def receive(client: Client, seq: int, kind: str, body: str, got: list[int]) -> None:
            frame = await client.expect("message", timeout=DELIVERY_TIMEOUT,
                                        where=lambda f: f["message"]["seq"] == seq)
            assert frame["conversation_id"] == cid
            assert (frame["message"]["sender_kind"], frame["message"]["body"]) == (kind, body)
            got.append(seq)

        async def send(sender: Client, kind: str, body: str) -> int:
            ack = await say(sender, cid, body)
            assert ack["duplicate"] is False and ack["message"]["body"] == body, ack
            expected.append((ack["seq"], kind, body))
            return ack["seq"]

        async def customer_says(body: str) -> None:
            seq = await send(customer, "customer", body)
            await receive(agent_ws, seq, "customer", body, agent_got)  # crossed from A to B
            await receive(customer, seq, "customer", body, customer_got)  # its own echo, as the widget shows it

        async def agent_says(body: str, customer_online: bool = True) -> None:
            seq = await send(agent_ws, "agent", body)
            await receive(agent_ws, seq, "agent", body, agent_got)
            if customer_online:
                await receive(customer, seq, "agent", body, customer_got)  # crossed from B to A

        # 1. Live, both ways, across the nodes.
        await customer_says("在吗？卡密显示无效")
        await agent_says("在的，请把订单号发给我")
        await customer_says("订单号 K7Q39XDM2PHT")
        await agent_says("收到，正在为您查询")
        last_seq = max(customer_got)
        assert last_seq == expected[-1][0]
        # Nothing else, and nothing twice.
        assert [f for f in await customer.quiet(0.3) if f["type"] == "message"] == []

        # 2. The customer sends once more; node A stores and publishes it (the agent sees it), but then
        # dies without a word before the customer has its ack or echo: for the client, both are lost.
        lost_id, lost_body = uuid.uuid4().hex, "还在吗？"
        await customer.send({"type": "send", "conversation_id": cid, "client_msg_id": lost_id, "text": lost_body})
        stored = await agent_ws.expect("message", timeout=DELIVERY_TIMEOUT,
                                       where=lambda f: f["message"]["client_msg_id"] == lost_id)
        lost_seq = stored["message"]["seq"]
        assert (stored["message"]["sender_kind"], stored["message"]["body"]) == ("customer", lost_body)
        expected.append((lost_seq, "customer", lost_body))
        agent_got.append(lost_seq)
        a.kill()
        await _connection_dropped(customer)
        customer.frames.clear()  # the ack and the echo never reached the client
        async with httpx.AsyncClient() as http:  # node A is really gone
            with pytest.raises(httpx.TransportError):
                await http.get(f"{a.url}/healthz", timeout=2)

        # 3. Meanwhile the agent goes on writing; node B stores and delivers as before.
        await agent_says("已为您补发新的卡密", customer_online=False)
        await agent_says("请查看订单页", customer_online=False)
        missed = [seq for seq, _, _ in expected if seq > last_seq]

        # 4. The customer resumes on node B with the same token and the last seq it holds (from before
        # the lost send): exactly the missed messages follow `ready`, in order, then live ones.
        customer = await customer_socket(b.url, session, last_seq=last_seq)
        stack.push_async_callback(customer.ws.close)
        for seq, kind, body in expected:
            if seq > last_seq:
                await receive(customer, seq, kind, body, customer_got)
        assert customer_got[-len(missed):] == missed
        assert missed[0] == lost_seq  # its own unacknowledged message comes back from the database
        assert [f for f in await customer.quiet(0.3) if f["type"] == "message"] == []

        # The client resends what it had no ack for, with the same client_msg_id, now to node B: the
        # server recognises it, acks it as a duplicate with the stored seq, and broadcasts nothing.
        again = await say(customer, cid, lost_body, msg_id=lost_id)
        assert again["duplicate"] is True and again["seq"] == lost_seq, again

        await customer_says("收到了，可以用了，谢谢")
        await agent_says("不客气，祝您使用愉快")
        assert [f for f in await customer.quiet(0.3) if f["type"] == "message"] == []
        assert [f for f in await agent_ws.quiet(0.3) if f["type"] == "message"] == []

        # 5. Every message reached each side exactly once, in order: the customer over its two sockets,
        # the agent over one that stayed on node B throughout.
        seqs = [seq for seq, _, _ in expected]
        assert seqs == list(range(1, len(expected) + 1))
        assert customer_got == seqs
        assert agent_got == seqs

        # 6. The stored transcript, read from the surviving node: each message once, in seq order.
        async with httpx.AsyncClient(base_url=b.url) as http:
            r = await http.get(f"/api/v1/chat/conversations/{cid}/messages",
                               headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        stored_messages = r.json()["messages"]
        customer_view = [(m["seq"], m["sender_kind"], m["body"]) for m in stored_messages]
        assert customer_view == expected
        assert [m["client_msg_id"] for m in stored_messages if m["seq"] == lost_seq] == [lost_id]

        r = await agent.http.get(f"/console/api/conversations/{cid}")
        assert r.status_code == 200, r.text
        detail = r.json()
        staff_view = [(m["seq"], m["sender_kind"], m["body"]) for m in detail["messages"]]
        assert staff_view == expected
        assert all(m["internal"] is False for m in detail["messages"])
        assert detail["conversation"]["last_seq"] == len(expected)
        assert detail["conversation"]["status"] == "open"  # the agent's reply took it over
