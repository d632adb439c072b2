"""Realtime chat benchmark: N customer sockets and M agent sockets against a running server.

Written against docs/realtime.md only. Setup, per customer: `POST /api/v1/chat/session` with `{}` (a
new anonymous customer and conversation), then `/ws/customer` with `auth`. Agents log into the
console (`POST /console/login`, the CSRF token from `GET /console`, `POST /console/api/ws-ticket`),
open `/ws/agent` with `auth`, and each agent socket `subscribe`s to its share of the customers'
conversations (`last_seq` 0). Sessions and sockets are set up `--setup-concurrency` at a time.

Load: for `--warmup` + `--duration` seconds the customers send `--rate` messages per second in
total, round-robin over all customer sockets (`client_msg_id` unique, the text holds the id and the
send time). A message is *delivered* when the agent socket watching its conversation receives the
`message` frame for it; latency is that receive time minus the send time (one monotonic clock).
Only messages sent after the warm-up count for latency and throughput; all count for loss and
duplicates. After the run the client waits up to `--grace` seconds for stragglers (time in which
sockets are still reconnecting or re-subscribing does not count, up to `--max-recovery`), then:

- lost        = sent and acked, never delivered to the watching agent;
- duplicated  = the same (conversation, seq) or client_msg_id delivered again to the same socket;
- errors      = `error` frames, failed sends and unexpected closes;
- connections held = customer sockets that still answer a `ping` with `pong` at the end.

Optionally (`--reply-rate`) agents answer customers; those replies are measured the other way.

The client follows the document's reconnect rule (unless `--no-reconnect`): after a server-side close
it backs off 1, 2, 4 … 15 s, authenticates again with the highest seq it received (agents: subscribe
again with it) and resends unacked messages with the same client_msg_id. A redelivery on a resumed
connection is reported apart (`duplicated_after_resume`), since the document tells clients to
de-duplicate by seq. `rate_limited` errors carry no `ref`, so an agent socket that gets one cannot tell
which `subscribe` was dropped: it subscribes to all its conversations again once the errors stop
(`agent_resubscribe_all`). Setup waits until every agent's subscribes are through (a ping round trip).

In the same run, a bare `websockets` echo server is started in a subprocess on a free port and
driven by the same client code at the same connection count and rate (each frame echoed to its
sender): the physical reference. `ratio_vs_echo` = zaima messages/s ÷ echo messages/s.

    .venv/bin/python bench/chat.py --base-url http://127.0.0.1:8300 --customers 2000 --agents 4 \\
        --rate 1000 --duration 20

The client is aiohttp (uvloop when installed), one process by default, or `--client-procs K`
processes each holding 1/K of the customers and agents. Progress goes to stderr; a human summary,
then one JSON object on the LAST line of stdout. Only loopback addresses are accepted as targets,
and the run stops by itself. The server's CPU is read from /proc for the processes listening on the
target port (and their children), or `--server-pid`.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import multiprocessing
import os
import re
import resource
import secrets
import subprocess
import sys
import time
from collections import Counter
from urllib.parse import urlsplit

import aiohttp
from common import log, loopback_only  # bench/common.py, next to this script

try:  # optional speed-ups; the benchmark does not require them
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

TEXT = aiohttp.WSMsgType.TEXT
PING = '{"type":"ping"}'
PING_EVERY = 25.0  # seconds, as docs/realtime.md asks of clients
DOC_FRAME_LIMIT = 20  # frames per second per socket before `rate_limited`
CLK_TCK = os.sysconf("SC_CLK_TCK")

ECHO_SERVER = r"""
import asyncio, resource, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
from websockets.asyncio.server import serve

async def echo(ws):
    async for message in ws:
        await ws.send(message)

async def main():
    async with serve(echo, "127.0.0.1", 0, compression=None, max_size=65536) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.get_running_loop().create_future()

try:
    import uvloop
    uvloop.run(main())
except ImportError:
    asyncio.run(main())
"""


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def lat_summary(values_ms: list[float]) -> dict:
    v = sorted(values_ms)
    return {"p50": round(percentile(v, 0.50), 2), "p90": round(percentile(v, 0.90), 2),
            "p99": round(percentile(v, 0.99), 2), "max": round(v[-1], 2) if v else 0.0, "n": len(v)}


def split(total: int, parts: int, index: int) -> int:
    return total // parts + (1 if index < total % parts else 0)


# --- server CPU from /proc ----------------------------------------------------------------------
def _proc_stat(pid: int) -> tuple[int, float] | None:
    """(ppid, utime+stime seconds) of one process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(rest[1]), (int(rest[11]) + int(rest[12])) / CLK_TCK


def listener_pids(port: int) -> list[int]:
    """Processes holding a listening TCP socket on `port` (any address)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(f"socket:[{cols[9]}]")
        except OSError:
            continue
    pids = []
    if not inodes:
        return pids
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            for fd in os.listdir(f"/proc/{entry}/fd"):
                if os.readlink(f"/proc/{entry}/fd/{fd}") in inodes:
                    pids.append(int(entry))
                    break
        except OSError:
            continue
    return pids


def cpu_matching(texts: list[str]) -> float:
    """CPU seconds of the live processes whose command line contains one of `texts` (e.g. the
    database's backends: "postgres zaima_chatbench")."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(text in cmd for text in texts):
            st = _proc_stat(int(entry))
            total += st[1] if st else 0.0
    return total


def cpu_of(pids: list[int]) -> float:
    """CPU seconds used so far by `pids` and all their (live) descendants."""
    if not pids:
        return 0.0
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            s = _proc_stat(int(entry))
            if s:
                stats[int(entry)] = s
    wanted, frontier = set(pids), list(pids)
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _) in stats.items():
            if ppid == parent and pid not in wanted:
                wanted.add(pid)
                frontier.append(pid)
    return sum(stats[p][1] for p in wanted if p in stats)


class CpuSampler:
    """Samples the server's CPU seconds 5 times a second, so that CPU can be charged to any interval
    afterwards (up to the last delivery when the server falls behind, not just the send window)."""

    def __init__(self, pids: list[int], match: list[str] | None = None):
        import threading
        self.pids = pids
        self.match = match
        self.samples: list[tuple[float, float]] = []
        self.db_samples: list[tuple[float, float]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        if pids:
            self.thread.start()

    def run(self) -> None:
        while True:
            self.sample()
            if self.stop.wait(0.2):
                self.sample()
                return

    def sample(self) -> None:
        now = time.monotonic()
        self.samples.append((now, cpu_of(self.pids)))
        if self.match:
            self.db_samples.append((now, cpu_matching(self.match)))

    def finish(self) -> None:
        if self.pids:
            self.stop.set()
            self.thread.join()

    def at(self, t: float, db: bool = False) -> float:
        """Interpolated CPU seconds at monotonic time t."""
        pts = self.db_samples if db else self.samples
        if not pts:
            return 0.0
        if t <= pts[0][0]:
            return pts[0][1]
        for (t0, c0), (t1, c1) in zip(pts, pts[1:], strict=False):
            if t0 <= t <= t1:
                return c0 + (c1 - c0) * ((t - t0) / (t1 - t0) if t1 > t0 else 1.0)
        return pts[-1][1]


# --- one shard of the client: a share of the customers and agents, in one event loop --------------
class Rec:
    """One message a customer sent (or an agent reply)."""
    __slots__ = ("t", "conv", "measured", "ack_t", "seq", "deliveries", "echoes", "first_t")

    def __init__(self, t: float, conv: int, measured: bool):
        self.t = t
        self.conv = conv
        self.measured = measured
        self.ack_t = 0.0
        self.seq = None
        self.deliveries = 0
        self.echoes = 0
        self.first_t = 0.0


class Sock:
    __slots__ = ("idx", "ws", "conv", "token", "last_seq", "agent", "open", "seen", "seen_ids", "gen", "pong",
                 "queue", "subs", "subs_set", "last_by_conv", "tasks", "unacked", "resub", "last_rl")

    def __init__(self, idx: int):
        self.idx = idx
        self.ws = None
        self.conv = 0
        self.token = ""
        self.last_seq = 0
        self.agent = None
        self.open = False
        self.seen: dict = {}            # (conversation, seq) of `message` frames received -> connection no.
        self.seen_ids: dict = {}        # client_msg_ids delivered to this client -> connection no.
        self.gen = 0                    # connection number: a redelivery after a reconnect is not a duplicate
        self.pong = False
        self.queue: asyncio.Queue | None = None  # agents: paced outgoing frames
        self.subs: list[int] = []
        self.subs_set: set = set()
        self.last_by_conv: dict = {}   # agents: highest seq received per conversation
        self.tasks: list = []
        self.unacked: dict = {}        # customers: client_msg_id -> frame, resent after a reconnect
        self.resub = False             # agents: a frame was rate_limited, so re-send every subscribe
        self.last_rl = 0.0             # agents: when the last rate_limited error arrived


class Shard:
    def __init__(self, cfg: dict, index: int, mode: str):
        self.cfg = cfg
        self.index = index
        self.mode = mode  # "zaima" or "echo"
        self.n_customers = split(cfg["customers"], cfg["client_procs"], index)
        self.n_agents = split(cfg["agents"], cfg["client_procs"], index) if mode == "zaima" else 0
        self.rate = cfg["rate"] / cfg["client_procs"]
        self.reply_rate = cfg["reply_rate"] / cfg["client_procs"] if mode == "zaima" else 0.0
        self.tag = f"{cfg['run_id']}{'e' if mode == 'echo' else 'z'}{index}"
        self.customers: list[Sock] = []
        self.agents: list[Sock] = []
        self.sent: dict[str, Rec] = {}
        self.replies: dict[str, Rec] = {}
        self.closing = False
        self.c = Counter()               # event counters
        self.frames_customer = Counter()
        self.frames_agent = Counter()
        self.error_codes = Counter()
        self.error_samples: list[str] = []
        self.close_codes = Counter()
        self.lat: list[float] = []       # ms, measured messages, send -> delivered to the watching agent
        self.ack_lat: list[float] = []   # ms, send -> ack on the sender's socket
        self.echo_lat: list[float] = []  # ms, send -> own `message` frame on the sender's socket
        self.reply_lat: list[float] = []  # ms, agent reply -> customer
        self.session_ms: list[float] = []
        self.connect_ms: list[float] = []
        self.last_delivery = 0.0
        self.last_reply_delivery = 0.0
        self.window = (0.0, 0.0)
        self.sched_lag_max = 0.0
        self.reconnects: set = set()

    # --- bookkeeping -----------------------------------------------------------------------------
    def error(self, what: str) -> None:
        self.c["client_errors"] += 1
        if len(self.error_samples) < 12:
            self.error_samples.append(what)
            log(f"[{self.mode}:{self.index}] {what}")

    def on_error_frame(self, role: str, d: dict) -> None:
        code = d.get("code")
        self.error_codes[f"{role}:{code}"] += 1
        if len(self.error_samples) < 12:
            self.error_samples.append(f"{role} error frame: {json.dumps(d, ensure_ascii=False)[:200]}")

    # --- readers ---------------------------------------------------------------------------------
    async def customer_reader(self, s: Sock) -> None:
        loads, monotonic, frames, echo = json.loads, time.monotonic, self.frames_customer, self.mode == "echo"
        ws = s.ws
        try:
            async for msg in ws:
                if msg.type is not TEXT:
                    frames[str(msg.type)] += 1
                    if msg.type is aiohttp.WSMsgType.ERROR:
                        break
                    continue
                now = monotonic()
                try:
                    d = loads(msg.data)
                    kind = d["type"]
                except (ValueError, KeyError, TypeError):
                    frames["unparsable"] += 1
                    continue
                frames[kind] += 1
                if kind == "ack":
                    cmid = d.get("client_msg_id")
                    s.unacked.pop(cmid, None)
                    seq = d.get("seq")
                    if isinstance(seq, int) and seq > s.last_seq:
                        s.last_seq = seq
                    rec = self.sent.get(cmid)
                    if rec is None:
                        self.c["ack_unknown"] += 1
                    elif rec.ack_t:
                        self.c["ack_repeated"] += 1
                    else:
                        rec.ack_t = now
                        rec.seq = d.get("seq")
                        self.c["acked"] += 1
                        if d.get("duplicate"):
                            self.c["ack_duplicate_flag"] += 1
                        if rec.measured:
                            self.ack_lat.append((now - rec.t) * 1000)
                elif kind == "message":
                    self.customer_message(s, d, now)
                elif kind == "pong":
                    s.pong = True
                elif kind == "error":
                    self.on_error_frame("customer", d)
                elif echo and kind == "send":  # the echo server sent our frame back
                    self.delivered(s, d.get("conversation_id"), d.get("client_msg_id"), now)
                elif echo and kind == "ping":
                    s.pong = True
        except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
            self.error(f"customer socket {s.idx}: {exc.__class__.__name__}: {exc}")
        finally:
            self.socket_closed(s, "customer")

    def customer_message(self, s: Sock, d: dict, now: float) -> None:
        m = d.get("message") or {}
        seq, cmid = m.get("seq"), m.get("client_msg_id")
        if isinstance(seq, int) and seq > s.last_seq:
            s.last_seq = seq
        key = (d.get("conversation_id"), seq)
        g = s.seen.get(key)
        if g is not None:
            if g != s.gen:
                self.c["redelivered_after_reconnect"] += 1
            else:
                self.c["customer_duplicated_after_resume" if s.gen else "customer_duplicated"] += 1
            return
        s.seen[key] = s.gen
        rec = self.sent.get(cmid) if cmid else None
        if rec is not None:  # the customer's own message, broadcast back to its socket
            rec.echoes += 1
            self.c["own_echo"] += 1
            if rec.measured:
                self.echo_lat.append((now - rec.t) * 1000)
            return
        rec = self.replies.get(cmid) if cmid else None
        if rec is None and m.get("sender_kind") == "agent":
            # customers see client_msg_id null on agent messages: match by the id in the text
            body = m.get("body") or ""
            if body.startswith("bench reply "):
                rec = self.replies.get(body.split(" ", 3)[2])
        if rec is not None:
            rec.deliveries += 1
            if rec.deliveries == 1:
                self.c["replies_delivered"] += 1
                if rec.measured:
                    self.reply_lat.append((now - rec.t) * 1000)
                    self.last_reply_delivery = now
            return
        self.c[f"customer_other_message:{m.get('sender_kind')}"] += 1

    async def agent_reader(self, a: Sock) -> None:
        loads, monotonic, frames = json.loads, time.monotonic, self.frames_agent
        ws = a.ws
        try:
            async for msg in ws:
                if msg.type is not TEXT:
                    frames[str(msg.type)] += 1
                    if msg.type is aiohttp.WSMsgType.ERROR:
                        break
                    continue
                now = monotonic()
                try:
                    d = loads(msg.data)
                    kind = d["type"]
                except (ValueError, KeyError, TypeError):
                    frames["unparsable"] += 1
                    continue
                frames[kind] += 1
                if kind == "message":
                    m = d.get("message") or {}
                    conv, seq, cmid = d.get("conversation_id"), m.get("seq"), m.get("client_msg_id")
                    ours = cmid in self.sent if cmid else False
                    key = (conv, seq)
                    g = a.seen.get(key)
                    if g is not None:
                        if g != a.gen:
                            self.c["redelivered_after_reconnect"] += 1
                        elif ours:
                            self.delivered(a, conv, cmid, now)  # counted as duplicated by client_msg_id
                        else:
                            self.c["duplicated_other_after_resume" if a.gen else "duplicated_other"] += 1
                        continue
                    a.seen[key] = a.gen
                    if isinstance(seq, int):
                        last = a.last_by_conv.get(conv, 0)
                        if seq <= last:
                            self.c["out_of_order"] += 1
                        else:
                            if seq != last + 1:
                                self.c["seq_gaps"] += 1
                            a.last_by_conv[conv] = seq
                    if ours:
                        if conv not in a.subs_set:
                            self.c["delivered_to_unsubscribed"] += 1
                        self.delivered(a, conv, cmid, now)
                    elif cmid and cmid in self.replies:
                        self.c["agent_saw_own_reply"] += 1
                    else:
                        self.c[f"agent_other_message:{m.get('sender_kind')}"] += 1
                elif kind == "pong":
                    a.pong = True
                elif kind == "error":
                    self.on_error_frame("agent", d)
                    if d.get("code") == "rate_limited":
                        # The error names no frame (no `ref`): any subscribe may have been dropped.
                        a.resub = True
                        a.last_rl = now
        except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
            self.error(f"agent socket {a.idx}: {exc.__class__.__name__}: {exc}")
        finally:
            self.socket_closed(a, "agent")

    def delivered(self, s: Sock, conv, cmid, now: float) -> None:
        rec = self.sent.get(cmid)
        if rec is None:
            self.c["delivered_unknown"] += 1
            return
        g = s.seen_ids.get(cmid)
        if g is not None:
            if g != s.gen:
                self.c["redelivered_after_reconnect"] += 1
            else:
                self.c["duplicated_after_resume" if s.gen else "duplicated"] += 1
            return
        s.seen_ids[cmid] = s.gen
        if conv != rec.conv:
            self.c["wrong_conversation"] += 1
        rec.deliveries += 1
        if rec.deliveries == 1:
            rec.first_t = now
            self.c["delivered"] += 1
            if rec.measured:
                self.lat.append((now - rec.t) * 1000)
                self.c["delivered_measured"] += 1
                if now > self.last_delivery:
                    self.last_delivery = now
        else:
            self.c["delivered_to_several_sockets"] += 1

    def socket_closed(self, s: Sock, role: str) -> None:
        s.open = False
        if not self.closing:
            code = s.ws.close_code if s.ws is not None else None
            self.close_codes[f"{role}:{code}"] += 1
            self.c["unexpected_closes"] += 1
            if len(self.error_samples) < 12:
                self.error_samples.append(f"{role} socket {s.idx} closed by the server, code {code}")
                log(f"[{self.mode}:{self.index}] {role} socket {s.idx} closed, code {code}")
            if self.cfg["reconnect"] and self.mode == "zaima" and code != 4001:
                self.reconnects.add(asyncio.create_task(self.reconnect(s, role)))

    async def reconnect(self, s: Sock, role: str) -> None:
        """The document's reconnect rule: back off 1, 2, 4 … 15 s (+ jitter), auth again with the highest
        seq received (agents: subscribe again with it), then resend unacked messages with the same ids."""
        delay = 1.0
        while not self.closing:
            await asyncio.sleep(delay + delay * 0.2 * secrets.randbelow(1000) / 1000)
            if self.closing:
                return
            s.gen += 1
            try:
                if role == "customer":
                    ws = await self.http.ws_connect(self.cfg["ws_base"] + "/ws/customer", autoping=True,
                                                    max_msg_size=1 << 22)
                    await ws.send_str(json.dumps({"type": "auth", "token": s.token, "conversation_id": s.conv,
                                                  "last_seq": s.last_seq}))
                    s.ws = ws
                    await self.wait_ready(ws, "customer")
                    s.open = True
                    s.tasks.append(asyncio.create_task(self.customer_reader(s)))
                    for frame in list(s.unacked.values()):
                        if not s.open:
                            break
                        self.c["resent"] += 1
                        await ws.send_str(frame)
                        await asyncio.sleep(0.1)  # stay far below the frame limit
                else:
                    ticket = (await self.tickets(1))[0]
                    ws = await self.staff_http.ws_connect(self.cfg["ws_base"] + "/ws/agent", autoping=True,
                                                          max_msg_size=1 << 22)
                    await ws.send_str(json.dumps({"type": "auth", "ticket": ticket}))
                    s.ws = ws
                    await self.wait_ready(ws, "agent")
                    s.open = True
                    s.tasks.append(asyncio.create_task(self.agent_reader(s)))
                    for conv in s.subs:
                        s.queue.put_nowait(json.dumps({"type": "subscribe", "conversation_id": conv,
                                                       "last_seq": s.last_by_conv.get(conv, 0)}))
                self.c[f"reconnects_{role}"] += 1
                return
            except (TimeoutError, aiohttp.ClientError, OSError, RuntimeError, ValueError, KeyError,
                    SystemExit) as exc:
                self.c[f"reconnect_attempts_failed_{role}"] += 1
                if s.ws is not None and not s.open:
                    await s.ws.close()
                if len(self.error_samples) < 12:
                    self.error_samples.append(f"{role} {s.idx} reconnect: {exc.__class__.__name__}: {exc}")
                delay = min(15.0, delay * 2)

    # --- setup -----------------------------------------------------------------------------------
    async def wait_ready(self, ws, role: str) -> dict:
        """Read frames until `ready` (the first one, per the document); anything before it is kept."""
        deadline = time.monotonic() + self.cfg["request_timeout"]
        while True:
            msg = await ws.receive(timeout=max(0.1, deadline - time.monotonic()))
            if msg.type is not TEXT:
                raise RuntimeError(f"{role} socket closed before ready: {msg.type} {ws.close_code} {msg.extra}")
            d = json.loads(msg.data)
            (self.frames_customer if role == "customer" else self.frames_agent)[d.get("type")] += 1
            if d.get("type") == "ready":
                return d
            if d.get("type") == "error":
                self.on_error_frame(role, d)

    async def setup_customer(self, s: Sock, http: aiohttp.ClientSession, sem: asyncio.Semaphore) -> None:
        cfg = self.cfg
        async with sem:
            try:
                if self.mode == "zaima":
                    t0 = time.monotonic()
                    async with http.post(cfg["base_url"] + "/api/v1/chat/session", json={}) as r:
                        text = await r.text()
                        if r.status != 200:
                            raise RuntimeError(f"POST /api/v1/chat/session: {r.status} {text[:200]}")
                    self.session_ms.append((time.monotonic() - t0) * 1000)
                    body = json.loads(text)
                    s.token = body["customer_token"]
                    s.conv = body["conversation"]["id"]
                    s.last_seq = body["conversation"].get("last_seq", 0)
                    if s.agent is not None:  # pipeline: the agent subscribes while others are set up
                        s.agent.subs.append(s.conv)
                        s.agent.subs_set.add(s.conv)
                        s.agent.queue.put_nowait(json.dumps({"type": "subscribe", "conversation_id": s.conv,
                                                             "last_seq": 0}))
                    url = cfg["ws_base"] + "/ws/customer"
                else:
                    s.conv = s.idx
                    url = cfg["echo_url"]
                t1 = time.monotonic()
                s.ws = await http.ws_connect(url, autoping=True, max_msg_size=1 << 22)
                if self.mode == "zaima":
                    await s.ws.send_str(json.dumps({"type": "auth", "token": s.token, "conversation_id": s.conv,
                                                    "last_seq": s.last_seq}))
                    await self.wait_ready(s.ws, "customer")
                self.connect_ms.append((time.monotonic() - t1) * 1000)
                s.open = True
                s.tasks.append(asyncio.create_task(self.customer_reader(s)))
                self.customers.append(s)
            except (TimeoutError, aiohttp.ClientError, OSError, RuntimeError, ValueError, KeyError) as exc:
                self.c["setup_failed"] += 1
                self.error(f"customer {s.idx} setup: {exc.__class__.__name__}: {exc}")
                if s.ws is not None:
                    await s.ws.close()

    async def login_agents(self, http: aiohttp.ClientSession) -> list[str]:
        cfg = self.cfg
        base = cfg["base_url"]
        async with http.post(base + "/console/login", data={"username": cfg["agent_user"],
                                                             "password": cfg["agent_password"]},
                             allow_redirects=False) as r:
            if r.status not in (302, 303):
                raise SystemExit(f"console login as {cfg['agent_user']!r} failed: {r.status} {(await r.text())[:200]}")
        async with http.get(base + "/console") as r:
            page = await r.text()
        m = re.search(r'<meta[^>]*name="csrf-token"[^>]*content="([^"]*)"', page) or \
            re.search(r'<meta[^>]*content="([^"]*)"[^>]*name="csrf-token"', page)
        if not m:
            raise SystemExit(f"GET /console ({r.status}): no <meta name=\"csrf-token\">")
        self.csrf = html.unescape(m.group(1))
        return await self.tickets(self.n_agents)

    async def tickets(self, count: int) -> list[str]:
        out = []
        for _ in range(count):
            async with self.staff_http.post(self.cfg["base_url"] + "/console/api/ws-ticket",
                                            headers={"X-CSRF-Token": self.csrf}) as r:
                if r.status != 200:
                    raise SystemExit(f"POST /console/api/ws-ticket: {r.status} {(await r.text())[:200]}")
                out.append((await r.json())["ticket"])
        return out

    async def setup_agent(self, a: Sock, ticket: str, http: aiohttp.ClientSession) -> None:
        a.ws = await http.ws_connect(self.cfg["ws_base"] + "/ws/agent", autoping=True, max_msg_size=1 << 22)
        await a.ws.send_str(json.dumps({"type": "auth", "ticket": ticket}))
        await self.wait_ready(a.ws, "agent")
        a.open = True
        a.queue = asyncio.Queue()
        a.tasks.append(asyncio.create_task(self.agent_reader(a)))
        a.tasks.append(asyncio.create_task(self.agent_sender(a)))
        a.tasks.append(asyncio.create_task(self.resubscriber(a)))

    async def resubscriber(self, a: Sock) -> None:
        """After `rate_limited` errors stop (2 s quiet) and the paced queue is empty, subscribe again to
        every conversation from the highest seq received: re-subscribing is harmless, a dropped one is not."""
        while True:
            await asyncio.sleep(0.5)
            if not (a.resub and a.open and a.queue.empty() and time.monotonic() - a.last_rl > 2.0):
                continue
            a.resub = False
            a.gen += 1  # a catch-up that overlaps live frames is a redelivery, not a duplicate
            self.c["agent_resubscribe_all"] += 1
            for conv in a.subs:
                a.queue.put_nowait(json.dumps({"type": "subscribe", "conversation_id": conv,
                                               "last_seq": a.last_by_conv.get(conv, 0)}))

    async def agent_sender(self, a: Sock) -> None:
        """Paced writer: at most --agent-frame-rate frames per second, as the document's limit asks."""
        gap = 1.0 / self.cfg["agent_frame_rate"]
        while True:
            item = await a.queue.get()
            if item is None:
                return
            if not a.open:
                continue
            try:
                if isinstance(item, tuple):  # a reply: (cmid, conv)
                    cmid, conv = item
                    now = time.monotonic()
                    rec = Rec(now, conv, self.window[0] <= now < self.window[1])
                    self.replies[cmid] = rec
                    self.c["replies_sent"] += 1
                    await a.ws.send_str(json.dumps({"type": "send", "conversation_id": conv, "client_msg_id": cmid,
                                                    "text": f"bench reply {cmid} t={now:.6f}"}))
                else:
                    await a.ws.send_str(item)
            except (aiohttp.ClientError, ConnectionError) as exc:
                self.error(f"agent {a.idx} send: {exc}")
            await asyncio.sleep(gap)

    async def pinger(self) -> None:
        """Every socket sends `ping` every 25 s, spread evenly (the server closes silent sockets)."""
        socks = self.customers
        next_agent_ping = time.monotonic() + PING_EVERY
        while not self.closing:
            step = PING_EVERY / max(1, len(socks))  # customers are still being added during setup
            for s in list(socks):
                if self.closing:
                    return
                if s.open:
                    try:
                        await s.ws.send_str(PING)
                    except (aiohttp.ClientError, ConnectionError):
                        pass
                await asyncio.sleep(step)
                if time.monotonic() >= next_agent_ping:
                    next_agent_ping += PING_EVERY
                    for a in self.agents:
                        if a.open:
                            a.queue.put_nowait(PING)
            if not socks:
                await asyncio.sleep(1)

    async def setup(self) -> dict:
        cfg = self.cfg
        t0 = time.monotonic()
        cpu0 = time.process_time()
        conn = aiohttp.TCPConnector(limit=0, limit_per_host=0, force_close=False)
        timeout = aiohttp.ClientTimeout(total=cfg["request_timeout"])
        self.http = aiohttp.ClientSession(connector=conn, timeout=timeout, cookie_jar=aiohttp.DummyCookieJar())
        if self.mode == "zaima":
            self.staff_http = aiohttp.ClientSession(timeout=timeout, cookie_jar=aiohttp.CookieJar(unsafe=True),
                                                    connector=aiohttp.TCPConnector(limit=0))
            try:
                tickets = await self.login_agents(self.staff_http)
            except aiohttp.ClientError as exc:
                raise SystemExit(f"cannot reach {cfg['base_url']}: {exc} (is `zaima demo` running there?)") from exc
            for i, ticket in enumerate(tickets):
                a = Sock(i)
                await self.setup_agent(a, ticket, self.staff_http)
                self.agents.append(a)
        sem = asyncio.Semaphore(cfg["setup_concurrency"])
        socks = []
        for i in range(self.n_customers):
            s = Sock(i)
            if self.agents:
                s.agent = self.agents[i % len(self.agents)]
            socks.append(s)
        pinger = asyncio.create_task(self.pinger())
        progress = asyncio.create_task(self.setup_progress(t0))
        await asyncio.gather(*(self.setup_customer(s, self.http, sem) for s in socks))
        self.customers.sort(key=lambda s: s.idx)
        customers_s = time.monotonic() - t0
        # the agents' paced subscribe frames may still be queued; wait for them to drain
        for _ in range(10):
            while any(a.open and (not a.queue.empty() or a.resub) for a in self.agents):
                await asyncio.sleep(0.1)
            # frames are handled in order: once a ping's pong is back, every subscribe before it was
            # processed and any error for it has arrived
            for a in self.agents:
                a.pong = False
                a.queue.put_nowait(PING)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not all(a.pong or not a.open for a in self.agents):
                await asyncio.sleep(0.05)
            if not any(a.resub for a in self.agents):
                break
        progress.cancel()
        self.pinger_task = pinger
        self.setup_errors = sum(self.error_codes.values())
        return {"setup_s": round(time.monotonic() - t0, 2), "customers_setup_s": round(customers_s, 2),
                "error_frames_during_setup": self.setup_errors,
                "agent_resubscribe_all_during_setup": self.c["agent_resubscribe_all"],
                "setup_cpu_s": round(time.process_time() - cpu0, 2),
                "customers_connected": len(self.customers), "agents_connected": len(self.agents),
                "subscriptions": sum(len(a.subs) for a in self.agents)}

    async def setup_progress(self, t0: float) -> None:
        while True:
            await asyncio.sleep(5)
            subs_left = sum(a.queue.qsize() for a in self.agents)
            log(f"[{self.mode}:{self.index}] setup {time.monotonic() - t0:.0f}s: {len(self.customers)}/"
                f"{self.n_customers} customers connected, {subs_left} subscribes queued")

    # --- load ------------------------------------------------------------------------------------
    async def load(self, t_start: float) -> None:
        cfg = self.cfg
        warm_end = t_start + cfg["warmup"]
        t_end = warm_end + cfg["duration"]
        self.window = (warm_end, t_end)
        rate = self.rate
        customers = self.customers
        n_cust = len(customers)
        dumps, monotonic = json.dumps, time.monotonic
        replier = asyncio.create_task(self.reply_load(t_start, t_end)) if self.reply_rate > 0 else None
        reporter = asyncio.create_task(self.load_progress(t_start, t_end))
        delay = t_start - monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        self.cpu_at_go = time.process_time()
        n = 0
        tag = self.tag
        tick = cfg["tick"]
        while n_cust:
            now = monotonic()
            if now >= t_end:
                break
            due = int((now - t_start) * rate)
            if due > n:
                lag = now - (t_start + (n + 1) / rate)
                if lag > self.sched_lag_max:
                    self.sched_lag_max = lag
            while n < due:
                s = customers[n % n_cust]
                n += 1
                if not s.open:
                    self.c["skipped_closed"] += 1
                    continue
                cmid = f"{tag}-{n}"
                t = monotonic()
                self.sent[cmid] = Rec(t, s.conv, t >= warm_end)
                self.c["sent"] += 1
                if t >= warm_end:
                    self.c["sent_measured"] += 1
                frame = dumps({"type": "send", "conversation_id": s.conv, "client_msg_id": cmid,
                               "text": f"bench {cmid} t={t:.6f}{cfg['pad']}"})
                s.unacked[cmid] = frame
                try:
                    await s.ws.send_str(frame)
                except (aiohttp.ClientError, ConnectionError) as exc:
                    self.c["send_failed"] += 1
                    self.error(f"send on customer {s.idx}: {exc}")
            await asyncio.sleep(tick)
        if replier:
            await replier
        reporter.cancel()

    async def reply_load(self, t_start: float, t_end: float) -> None:
        rate, customers, n = self.reply_rate, self.customers, 0
        delay = t_start - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        while customers:
            now = time.monotonic()
            if now >= t_end:
                return
            due = int((now - t_start) * rate)
            while n < due:
                s = customers[n % len(customers)]
                n += 1
                a = s.agent
                if a is None or not a.open or a.queue.qsize() > self.cfg["agent_frame_rate"]:
                    self.c["replies_skipped"] += 1
                    continue
                a.queue.put_nowait((f"{self.tag}-r{n}", s.conv))
            await asyncio.sleep(0.01)

    async def load_progress(self, t_start: float, t_end: float) -> None:
        while True:
            await asyncio.sleep(5)
            log(f"[{self.mode}:{self.index}] load {time.monotonic() - t_start:.0f}s/{t_end - t_start:.0f}s: "
                f"sent {self.c['sent']}, acked {self.c['acked']}, delivered {self.c['delivered']}, "
                f"errors {sum(self.error_codes.values()) + self.c['client_errors']}")

    def recovering(self) -> bool:
        """A socket is reconnecting, or an agent is still re-sending its paced subscribes."""
        return any(not t.done() for t in self.reconnects) or any(a.queue.qsize() > 1 or a.resub
                                                                 for a in self.agents)

    async def drain(self) -> float:
        """Wait for every sent message to be acked and delivered: up to --grace seconds, not counting
        time in which sockets are still reconnecting or re-subscribing (at most --max-recovery s)."""
        t0 = time.monotonic()
        zaima = self.mode == "zaima"
        waited = 0.0
        while waited < self.cfg["grace"] and time.monotonic() - t0 < self.cfg["grace"] + self.cfg["max_recovery"]:
            done = self.c["delivered"] >= self.c["sent"] and (not zaima or self.c["acked"] >= self.c["sent"])
            if done and self.c["replies_delivered"] >= self.c["replies_sent"]:
                break
            await asyncio.sleep(0.05)
            if not self.recovering():
                waited += 0.05
        return time.monotonic() - t0

    async def check_held(self) -> tuple[int, int]:
        """Connections held = sockets that answer a ping now."""
        for s in self.customers + self.agents:
            s.pong = False
        for s in self.customers:
            if s.open:
                try:
                    await s.ws.send_str(PING)
                except (aiohttp.ClientError, ConnectionError):
                    pass
        for a in self.agents:
            if a.open:
                a.queue.put_nowait(PING)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 10:
            if all(s.pong or not s.open for s in self.customers + self.agents):
                break
            await asyncio.sleep(0.05)
        return sum(s.pong for s in self.customers), sum(a.pong for a in self.agents)

    async def close(self) -> None:
        self.closing = True
        self.pinger_task.cancel()
        for t in self.reconnects:
            t.cancel()
        sem = asyncio.Semaphore(200)

        async def close_one(s: Sock) -> None:
            async with sem:
                if s.queue is not None:
                    s.queue.put_nowait(None)
                if s.ws is not None:
                    try:
                        await asyncio.wait_for(s.ws.close(), 5)
                    except (TimeoutError, aiohttp.ClientError, ConnectionError):
                        pass
                for t in s.tasks:
                    t.cancel()

        await asyncio.gather(*(close_one(s) for s in self.customers + self.agents))
        await self.http.close()
        if self.mode == "zaima":
            await self.staff_http.close()

    async def lost_in_db(self, lost: list[tuple[str, Rec]]) -> dict:
        """For a sample of lost messages: is the message in the database (GET …/messages)?"""
        by_conv = {s.conv: s for s in self.customers}
        found = missing = 0
        for cmid, rec in lost[:20]:
            s = by_conv.get(rec.conv)
            if s is None:
                continue
            url = f"{self.cfg['base_url']}/api/v1/chat/conversations/{rec.conv}/messages"
            try:
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as h:
                    async with h.get(url, params={"after_seq": "0"},
                                     headers={"Authorization": f"Bearer {s.token}"}) as r:
                        body = await r.json() if r.status == 200 else {"messages": []}
            except (TimeoutError, aiohttp.ClientError, ValueError):
                continue
            if any(m.get("client_msg_id") == cmid for m in body.get("messages", [])):
                found += 1
            else:
                missing += 1
        return {"checked": found + missing, "in_database": found, "not_in_database": missing}

    def dump_latencies(self, path: str) -> None:
        """CSV: send time (s from the load start), delivery latency ms (empty if undelivered), ack latency ms."""
        with open(f"{path}.{self.mode}{self.index}.csv", "w") as f:
            f.write("t_send_s,deliver_ms,ack_ms,conversation\n")
            t0 = self.window[0] - self.cfg["warmup"]
            for rec in self.sent.values():
                deliver = f"{(rec.first_t - rec.t) * 1000:.2f}" if rec.deliveries else ""
                ack = f"{(rec.ack_t - rec.t) * 1000:.2f}" if rec.ack_t else ""
                f.write(f"{rec.t - t0:.4f},{deliver},{ack},{rec.conv}\n")

    async def finish(self) -> dict:
        grace = await self.drain()
        if self.cfg["dump_latencies"]:
            self.dump_latencies(self.cfg["dump_latencies"])
        cpu_load = time.process_time() - self.cpu_at_go  # load + drain
        held, agents_held = await self.check_held()
        lost = [(k, r) for k, r in self.sent.items() if r.ack_t and r.deliveries == 0]
        undelivered = [(k, r) for k, r in self.sent.items() if r.deliveries == 0]
        db = await self.lost_in_db(lost) if lost and self.mode == "zaima" else None
        await self.close()
        no_echo = sum(1 for r in self.sent.values() if r.ack_t and r.echoes == 0)
        measured_times = [r.t for r in self.sent.values() if r.measured]
        return {
            "counters": dict(self.c), "frames_customer": dict(self.frames_customer),
            "frames_agent": dict(self.frames_agent), "error_codes": dict(self.error_codes),
            "close_codes": dict(self.close_codes), "error_samples": self.error_samples,
            "lat": self.lat, "ack_lat": self.ack_lat, "echo_lat": self.echo_lat, "reply_lat": self.reply_lat,
            "session_ms": self.session_ms, "connect_ms": self.connect_ms,
            "lost": len(lost),
            "unacked": sum(1 for r in self.sent.values() if not r.ack_t) if self.mode == "zaima" else 0,
            "undelivered": len(undelivered), "lost_sample": [k for k, _ in lost[:5]], "lost_db": db,
            "acked_without_own_echo": no_echo if self.mode == "zaima" else 0,
            "replies_lost": sum(1 for r in self.replies.values() if r.deliveries == 0),
            "held": held, "agents_held": agents_held, "grace_used_s": round(grace, 2),
            "window": self.window, "last_delivery": self.last_delivery,
            "first_measured_send": min(measured_times) if measured_times else 0.0,
            "load_cpu_s": cpu_load, "sched_lag_max_ms": self.sched_lag_max * 1000,
        }


def shard_main(cfg: dict, index: int, mode: str, conn) -> None:
    """One client process: set up, report ready, wait for the start time, run, report results."""
    async def body() -> None:
        shard = Shard(cfg, index, mode)
        try:
            info = await shard.setup()
        except SystemExit as exc:
            conn.send(("fatal", str(exc)))
            return
        conn.send(("ready", info))
        msg = await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        if msg[0] != "go":
            await shard.close()
            return
        await shard.load(msg[1])
        conn.send(("result", await shard.finish()))

    try:
        if uvloop is not None:
            uvloop.run(body())
        else:
            asyncio.run(body())
    except Exception as exc:  # report anything unexpected to the coordinator instead of hanging it
        import traceback
        conn.send(("fatal", f"{exc.__class__.__name__}: {exc}\n{traceback.format_exc()}"))


# --- coordinator ------------------------------------------------------------------------------------
def run_phase(cfg: dict, mode: str, server_pids: list[int]) -> dict:
    """Start the client processes, set up, start them together, collect and merge their results."""
    ctx = multiprocessing.get_context("fork")
    procs, pipes = [], []
    for i in range(cfg["client_procs"]):
        parent, child = ctx.Pipe()
        p = ctx.Process(target=shard_main, args=(cfg, i, mode, child), daemon=True)
        p.start()
        procs.append(p)
        pipes.append(parent)
    try:
        infos = []
        for pipe in pipes:
            kind, info = pipe.recv()
            if kind != "ready":
                raise SystemExit(f"{mode}: client process failed during setup: {info}")
            infos.append(info)
        setup = {k: (max(i[k] for i in infos) if k.endswith("_s") else sum(i[k] for i in infos))
                 for k in infos[0]}
        setup["setup_cpu_s"] = round(sum(i["setup_cpu_s"] for i in infos), 2)
        log(f"{mode}: setup done in {setup['setup_s']} s: {setup['customers_connected']} customers"
            + (f", {setup['agents_connected']} agents, {setup['subscriptions']} subscriptions"
               if mode == "zaima" else ""))
        sampler = CpuSampler(server_pids, cfg["db_cpu_match"] if mode == "zaima" else None)
        t_start = time.monotonic() + 0.5
        for pipe in pipes:
            pipe.send(("go", t_start))
        results = []
        for pipe in pipes:
            kind, res = pipe.recv()
            if kind != "result":
                raise SystemExit(f"{mode}: client process failed: {res}")
            results.append(res)
        sampler.finish()
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
    return merge(cfg, mode, setup, results, sampler, server_pids)


def merge(cfg: dict, mode: str, setup: dict, results: list[dict], sampler: CpuSampler, server_pids: list[int]) -> dict:
    c = Counter()
    fc, fa, ec, cc = Counter(), Counter(), Counter(), Counter()
    lat, ack_lat, echo_lat, reply_lat, session_ms, connect_ms, samples = [], [], [], [], [], [], []
    for r in results:
        c.update(r["counters"])
        fc.update(r["frames_customer"])
        fa.update(r["frames_agent"])
        ec.update(r["error_codes"])
        cc.update(r["close_codes"])
        for key, acc in (("lat", lat), ("ack_lat", ack_lat), ("echo_lat", echo_lat), ("reply_lat", reply_lat),
                         ("session_ms", session_ms), ("connect_ms", connect_ms), ("error_samples", samples)):
            acc.extend(r[key])
    window_start = min(r["window"][0] for r in results)
    window_end = max(r["window"][1] for r in results)
    last = max([r["last_delivery"] for r in results] + [window_end])
    wall = max(cfg["duration"], last - window_start)  # a server that falls behind is not flattered
    server_cpu = sampler.at(window_start + wall) - sampler.at(window_start)
    db_cpu = (sampler.at(window_start + wall, True) - sampler.at(window_start, True)) if sampler.match else None
    delivered_measured = c["delivered_measured"]
    load_cpu = sum(r["load_cpu_s"] for r in results)
    errors = sum(ec.values()) + c["client_errors"] + c["send_failed"]
    out = {
        "customers": cfg["customers"],
        "connections_held": sum(r["held"] for r in results),
        "agents_held": sum(r["agents_held"] for r in results),
        "messages_sent": c["sent"],
        "messages_sent_measured": c["sent_measured"],
        "messages_delivered": c["delivered"],
        "messages_delivered_measured": delivered_measured,
        "messages_per_s": round(delivered_measured / wall, 1) if wall > 0 else 0.0,
        "latency_ms": lat_summary(lat),
        "lost": sum(r["lost"] for r in results),
        "unacked": sum(r["unacked"] for r in results),
        "undelivered": sum(r["undelivered"] for r in results),
        "duplicated": c["duplicated"] + c["duplicated_other"] + c["customer_duplicated"],
        "duplicated_after_resume": (c["duplicated_after_resume"] + c["duplicated_other_after_resume"]
                                    + c["customer_duplicated_after_resume"]),
        "errors": errors,
        "unexpected_closes": c["unexpected_closes"],
        "reconnects": {"customer": c["reconnects_customer"], "agent": c["reconnects_agent"],
                       "redelivered_after_reconnect": c["redelivered_after_reconnect"],
                       "agent_resubscribe_all": c["agent_resubscribe_all"],
                       "failed_attempts": c["reconnect_attempts_failed_customer"]
                       + c["reconnect_attempts_failed_agent"], "resent": c["resent"],
                       "skipped_while_closed": c["skipped_closed"]},
        "setup_s": setup["setup_s"],
        "client_cpu_s": round(load_cpu, 2),
        "client_cpu_ms_per_msg": round(load_cpu * 1000 / max(1, c["sent"]), 3),
        "server_cpu_s": round(server_cpu, 2) if server_pids else None,
        "server_cpu_ms_per_msg": (round(server_cpu * 1000 / max(1, c["sent_measured"]), 3)
                                  if server_pids else None),
        "server_cores_busy": round(server_cpu / wall, 2) if server_pids else None,
        "db_cpu_s": round(db_cpu, 2) if db_cpu is not None else None,
        "db_cpu_ms_per_msg": round(db_cpu * 1000 / max(1, c["sent_measured"]), 3) if db_cpu is not None else None,
        "details": {
            "wall_s": round(wall, 2), "setup": setup,
            "ack_latency_ms": lat_summary(ack_lat) if mode == "zaima" else None,
            "own_echo_latency_ms": lat_summary(echo_lat) if mode == "zaima" else None,
            "session_ms": lat_summary(session_ms) if session_ms else None,
            "connect_auth_ms": lat_summary(connect_ms),
            "frames_to_customers": dict(fc), "frames_to_agents": dict(fa),
            "error_codes": dict(ec), "close_codes": dict(cc), "counters": dict(c),
            "acked_without_own_echo": sum(r["acked_without_own_echo"] for r in results),
            "lost_sample": [k for r in results for k in r["lost_sample"]][:5],
            "lost_in_database": [r["lost_db"] for r in results if r["lost_db"]],
            "grace_used_s": max(r["grace_used_s"] for r in results),
            "scheduler_lag_max_ms": round(max(r["sched_lag_max_ms"] for r in results), 1),
            "error_samples": samples[:12],
            "server_pids": server_pids,
        },
    }
    if mode == "zaima":
        out["agents"] = cfg["agents"]
        if cfg["reply_rate"] > 0:
            out["replies"] = {"sent": c["replies_sent"], "delivered": c["replies_delivered"],
                              "skipped": c["replies_skipped"], "lost": sum(r["replies_lost"] for r in results),
                              "latency_ms": lat_summary(reply_lat)}
    return out


def start_echo_server() -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-c", ECHO_SERVER], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    if not line.isdigit():
        proc.kill()
        raise SystemExit(f"the echo server did not start (printed {line!r}); is `websockets` installed?")
    return proc, int(line)


def summary_lines(res: dict, cfg: dict) -> list[str]:
    z, e = res.get("zaima"), res.get("echo")
    lines = [f"chat bench: {cfg['customers']} customers, {cfg['agents']} agents, {cfg['rate']:g} msg/s offered "
             f"for {cfg['duration']:g} s (+{cfg['warmup']:g} s warm-up), client procs {cfg['client_procs']}"]
    for name, r in (("zaima", z), ("echo ", e)):
        if not r:
            continue
        lat = r["latency_ms"]
        lines.append(
            f"  {name}: held {r['connections_held']}/{r['customers']}, {r['messages_per_s']:.1f} msg/s delivered, "
            f"latency p50 {lat['p50']:.1f} / p99 {lat['p99']:.1f} / max {lat['max']:.1f} ms, "
            f"sent {r['messages_sent']}, lost {r['lost']}, unacked {r['unacked']}, "
            f"undelivered {r['undelivered']}, duplicated {r['duplicated']}"
            + (f" (+{r['duplicated_after_resume']} on resumed connections)" if r.get('duplicated_after_resume') else "")
            + f", errors {r['errors']}, "
            f"setup {r['setup_s']:.1f} s")
        cpu = f"  {name}: client CPU {r['client_cpu_s']:.1f} s ({r['client_cpu_ms_per_msg']:.3f} ms/msg)"
        if r["server_cpu_s"] is not None:
            cpu += (f", server CPU {r['server_cpu_s']:.1f} s over the measured window (to the last delivery) = "
                    f"{r['server_cores_busy']:.2f} cores, {r['server_cpu_ms_per_msg']:.3f} ms/msg")
        if r.get("db_cpu_s") is not None:
            cpu += f"; database processes {r['db_cpu_s']:.1f} s, {r['db_cpu_ms_per_msg']:.3f} ms/msg"
        lines.append(cpu)
    if z:
        d = z["details"]
        if d["ack_latency_ms"]:
            lines.append(f"  zaima: ack latency p50 {d['ack_latency_ms']['p50']:.1f} / p99 "
                         f"{d['ack_latency_ms']['p99']:.1f} ms; session POST p50 "
                         f"{(d['session_ms'] or {}).get('p50', 0):.1f} / p99 {(d['session_ms'] or {}).get('p99', 0):.1f} ms")
        st = d["setup"]
        if st.get("error_frames_during_setup"):
            lines.append(f"  zaima: setup got {st['error_frames_during_setup']} error frames "
                         f"({st['agent_resubscribe_all_during_setup']} agent re-subscribe rounds before the load)")
        if d["error_codes"] or d["close_codes"]:
            lines.append(f"  zaima: error frames {d['error_codes']}, unexpected closes {d['close_codes']}, "
                         f"reconnects {z['reconnects']}")
        if z.get("replies"):
            rp = z["replies"]
            lines.append(f"  replies: sent {rp['sent']}, delivered {rp['delivered']}, lost {rp['lost']}, "
                         f"p50 {rp['latency_ms']['p50']:.1f} / p99 {rp['latency_ms']['p99']:.1f} ms")
    if res.get("ratio_vs_echo") is not None:
        lines.append(f"  ratio vs echo: messages/s {res['ratio_vs_echo']:.3f}, p50 latency "
                     f"{res['latency_ratio_vs_echo']['p50']}x, p99 {res['latency_ratio_vs_echo']['p99']}x, "
                     f"server CPU per message {res.get('server_cpu_ratio_vs_echo')}x")
    if z:
        t = res["targets"]
        lines.append("  targets: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in t.items()))
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    fd_limit = raise_fd_limit()
    need = args.customers + args.agents + 64
    if fd_limit < need:
        log(f"warning: file-descriptor limit {fd_limit} < {need} needed")
    ws_base = "ws" + args.base_url[4:]
    cfg = {k: getattr(args, k) for k in ("customers", "agents", "rate", "duration", "warmup", "grace",
                                          "client_procs", "setup_concurrency", "agent_user", "agent_password",
                                          "agent_frame_rate", "reply_rate", "request_timeout", "tick",
                                          "reconnect", "dump_latencies", "max_recovery",
                                          "db_cpu_match")}
    cfg.update(base_url=args.base_url, ws_base=ws_base, run_id=secrets.token_hex(3),
               pad=" " + "x" * args.pad if args.pad else "")
    result: dict = {"bench": "chat", "customers": args.customers, "agents": args.agents, "rate": args.rate,
                    "duration_s": args.duration, "client_procs": args.client_procs}
    z = e = None
    if not args.echo_only:
        port = urlsplit(args.base_url).port or (443 if args.base_url.startswith("https") else 80)
        pids = args.server_pid or listener_pids(port)
        if not pids:
            log(f"note: no process found listening on port {port}; server CPU is not measured")
        log(f"zaima: {args.customers} customers, {args.agents} agents against {args.base_url}")
        z = run_phase(cfg, "zaima", pids)
        result["zaima"] = z
    if not args.no_echo:
        proc, port = start_echo_server()
        try:
            cfg_e = dict(cfg, echo_url=f"ws://127.0.0.1:{port}/", agents=0, reply_rate=0.0)
            log(f"echo: bare websockets echo server (pid {proc.pid}, port {port}), {args.customers} sockets")
            e = run_phase(cfg_e, "echo", [proc.pid])
        finally:
            proc.terminate()
            proc.wait(timeout=10)
        result["echo"] = e
    if z:
        # top-level fields: the zaima run
        for k in ("connections_held", "agents_held", "messages_sent", "messages_delivered", "messages_per_s",
                  "latency_ms", "lost", "unacked", "duplicated", "duplicated_after_resume", "errors",
                  "unexpected_closes", "reconnects", "setup_s",
                  "client_cpu_s", "server_cpu_s", "server_cpu_ms_per_msg", "server_cores_busy", "db_cpu_s",
                  "db_cpu_ms_per_msg"):
            result[k] = z[k]
        result["targets"] = {
            f"connections_held>={args.customers}": z["connections_held"] >= args.customers,
            f"messages_per_s>={0.98 * args.rate:g}": z["messages_per_s"] >= 0.98 * args.rate,
            "p99<=50ms": z["latency_ms"]["p99"] <= 50.0,
            "lost==0": z["lost"] == 0 and z["unacked"] == 0,
            "duplicated==0": z["duplicated"] == 0,
        }
    if z and e:
        result["ratio_vs_echo"] = round(z["messages_per_s"] / e["messages_per_s"], 3) if e["messages_per_s"] else None
        result["latency_ratio_vs_echo"] = {
            q: (round(z["latency_ms"][q] / e["latency_ms"][q], 1) if e["latency_ms"][q] else None)
            for q in ("p50", "p99", "max")}
        if z["server_cpu_ms_per_msg"] and e["server_cpu_ms_per_msg"]:
            result["server_cpu_ratio_vs_echo"] = round(z["server_cpu_ms_per_msg"] / e["server_cpu_ms_per_msg"], 1)
    else:
        result["ratio_vs_echo"] = None
    echo_brief = None
    if e:
        echo_brief = {k: e[k] for k in ("connections_held", "messages_sent", "messages_delivered", "messages_per_s",
                                        "latency_ms", "lost", "undelivered", "duplicated", "errors", "setup_s",
                                        "client_cpu_s", "server_cpu_s", "server_cpu_ms_per_msg")}
    if z:
        log("zaima details: " + json.dumps(z["details"], ensure_ascii=False))
    if e:
        log("echo details: " + json.dumps(e["details"], ensure_ascii=False))
    for line in summary_lines(result, cfg):
        print(line, flush=True)
    result.pop("zaima", None)
    result.pop("echo", None)
    result["echo"] = echo_brief
    if z:
        result["details"] = {k: z["details"][k] for k in ("setup", "ack_latency_ms", "own_echo_latency_ms", "session_ms",
                                                          "connect_auth_ms", "error_codes", "close_codes",
                                                          "acked_without_own_echo", "scheduler_lag_max_ms",
                                                          "lost_in_database")}
        if z.get("replies"):
            result["replies"] = z["replies"]
    print(json.dumps(result, ensure_ascii=False), flush=True)
    bad = z is not None and (z["lost"] or z["unacked"] or z["duplicated"] or z["errors"] or z["unexpected_closes"])
    return 1 if bad else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base-url", default="http://127.0.0.1:8000", help="server to drive (loopback only)")
    p.add_argument("--customers", type=int, default=2000, help="customer sockets (N), each its own conversation")
    p.add_argument("--agents", type=int, default=4, help="agent sockets (M), sharing one console login per process")
    p.add_argument("--rate", type=float, default=1000.0, help="customer messages per second, in total")
    p.add_argument("--duration", type=float, default=20.0, help="measured seconds of load")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of load before measuring")
    p.add_argument("--grace", type=float, default=10.0, help="seconds to wait for stragglers after the load")
    p.add_argument("--max-recovery", type=float, default=180.0,
                   help="extra seconds the grace period may wait while sockets reconnect and re-subscribe")
    p.add_argument("--reply-rate", type=float, default=0.0,
                   help="agent replies per second in total (0 = agents only listen)")
    p.add_argument("--agent-user", default="agent", help="console login (the demo's by default)")
    p.add_argument("--agent-password", default="zaima-agent-2026", help="console password (the demo's by default)")
    p.add_argument("--agent-frame-rate", type=float, default=15.0,
                   help=f"frames per second one agent socket sends at most (the document's limit is "
                        f"{DOC_FRAME_LIMIT})")
    p.add_argument("--setup-concurrency", type=int, default=50, help="sessions/sockets set up at a time")
    p.add_argument("--client-procs", type=int, default=1, help="client processes to spread the sockets over")
    p.add_argument("--pad", type=int, default=0, help="extra characters per message text")
    p.add_argument("--no-reconnect", dest="reconnect", action="store_false",
                   help="do not follow the document's reconnect rule after a server-side close")
    p.add_argument("--no-echo", action="store_true", help="skip the bare websockets echo reference")
    p.add_argument("--echo-only", action="store_true", help="run only the echo reference")
    p.add_argument("--server-pid", type=int, action="append", default=[],
                   help="server process(es) whose CPU to report (default: whoever listens on the port)")
    p.add_argument("--db-cpu-match", action="append", default=[], metavar="TEXT",
                   help='also report the CPU of processes whose command line contains TEXT, e.g. '
                        '"postgres zaima_chatbench" for that database\'s PostgreSQL backends (repeatable)')
    p.add_argument("--request-timeout", type=float, default=30.0, help="seconds per HTTP request / socket setup")
    p.add_argument("--dump-latencies", metavar="PREFIX", default=None,
                   help="write every message's send time and latencies to PREFIX.<run><proc>.csv")
    p.add_argument("--tick", type=float, default=0.002, help="send scheduler tick in seconds")
    args = p.parse_args(argv)
    args.base_url = loopback_only(args.base_url)
    if args.customers < 1 or args.rate <= 0 or args.duration <= 0 or args.warmup < 0 or args.client_procs < 1:
        p.error("--customers, --rate, --duration and --client-procs must be positive, --warmup not negative")
    if not args.echo_only and args.agents < args.client_procs:
        p.error("every client process needs at least one agent: --agents >= --client-procs")
    if args.customers < args.client_procs:
        p.error("--customers must be >= --client-procs")
    per_socket = args.rate / args.customers
    if per_socket > DOC_FRAME_LIMIT * 0.8:
        p.error(f"{per_socket:.1f} messages/s per customer socket is too close to the documented limit of "
                f"{DOC_FRAME_LIMIT} frames/s: use more --customers or a lower --rate")
    if args.reply_rate and args.reply_rate / args.agents > args.agent_frame_rate * 0.8:
        p.error("--reply-rate / --agents must stay under 80 % of --agent-frame-rate")
    if not 0 < args.agent_frame_rate <= DOC_FRAME_LIMIT:
        p.error(f"--agent-frame-rate must be in (0, {DOC_FRAME_LIMIT}]")
    return args


if __name__ == "__main__":
    raise SystemExit(main())
