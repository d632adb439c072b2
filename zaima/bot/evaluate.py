"""`zaima bot eval FILE`: run a case file (../shared/docs/bot-policy-and-eval.md) through the real bot.

Each case's store and order are built for real, through the services the application uses, in a
throwaway SQLite database; the demo 易支付 gateway and 直充 supplier run on a local HTTP server so the
bot's payment and recharge checks are real requests. The clock is frozen per case so "minutes since
payment" and "hours since delivery" are exact. Nothing is faked in the bot: each turn is a customer
message stored in a conversation and answered by zaima.bot.engine.respond.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import shutil
import socket
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, select

from zaima.core.money import MoneyFormatError, format_yuan, parse_yuan

INTENTS = ("greeting", "order_status", "not_received", "invalid_code", "refund", "payment_issue", "account_issue",
           "usage_howto", "policy_question", "contact_verify", "human", "complaint", "thanks", "other")
OUTCOMES = ("answered", "needs_verification", "codes_resent", "redelivered", "replaced", "refunded", "refund_offered",
            "status_explained", "policy_explained", "handoff", "contact_verified", "contact_flagged")
KINDS = ("card_key", "recharge", "account", "license")
STATES = ("unpaid", "paid_callback_lost", "delivered", "out_of_stock", "recharge_processing", "recharge_failed",
          "refunded")
CONTACT_KINDS = ("phone", "qq", "wechat", "email", "url")
ORDER_DEFAULTS = {"kind": "card_key", "state": "delivered", "stock_available": False, "minutes_since_payment": 12,
                  "hours_since_delivery": None, "replaced_before": False, "replaceable": True, "amount": "30.00",
                  "quantity": 1}


class CaseFileError(ValueError):
    def __init__(self, line: int, reason: str):
        super().__init__(f"line {line}: {reason}")
        self.line, self.reason = line, reason


@dataclass
class Case:
    line: int
    id: str
    store: dict
    order: dict | None
    verified: bool
    turns: list[str]
    intent: str
    outcome: str
    forbidden: list[str]


def _need(cond: bool, line: int, reason: str) -> None:
    if not cond:
        raise CaseFileError(line, reason)


def parse_case(line_no: int, text: str) -> Case:
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise CaseFileError(line_no, f"not valid JSON ({exc.msg})") from None
    _need(isinstance(raw, dict), line_no, "a case must be a JSON object")
    _need(isinstance(raw.get("id"), str) and raw["id"], line_no, "missing case id")
    store = raw.get("store") or {}
    _need(isinstance(store, dict), line_no, "store must be an object")
    contacts = store.get("official_contacts", [])
    _need(isinstance(contacts, list) and all(isinstance(c, dict) and c.get("kind") in CONTACT_KINDS
                                             and isinstance(c.get("value"), str) for c in contacts),
          line_no, "official_contacts must be a list of {kind: phone|qq|wechat|email|url, value}")
    order = raw.get("order")
    if order is not None:
        _need(isinstance(order, dict), line_no, "order must be an object or null")
        order = {**ORDER_DEFAULTS, **order}
        _need(order["kind"] in KINDS, line_no, f"unknown order kind {order['kind']!r}")
        _need(order["state"] in STATES, line_no, f"unknown order state {order['state']!r}")
        _need(isinstance(order["quantity"], int) and 1 <= order["quantity"] <= 20, line_no, "quantity must be 1–20")
        try:
            amount = parse_yuan(str(order["amount"]))
        except MoneyFormatError:
            raise CaseFileError(line_no, f"amount {order['amount']!r} is not a yuan amount") from None
        _need(amount > 0, line_no, "amount must be positive")
        for name in ("minutes_since_payment", "hours_since_delivery"):
            _need(order[name] is None or (isinstance(order[name], int | float) and order[name] >= 0), line_no,
                  f"{name} must be a non-negative number or null")
        for name in ("stock_available", "replaced_before", "replaceable"):
            _need(isinstance(order[name], bool), line_no, f"{name} must be true or false")
    _need(isinstance(raw.get("verified", False), bool), line_no, "verified must be true or false")
    turns = raw.get("turns")
    _need(isinstance(turns, list) and turns and all(isinstance(t, str) and t.strip() for t in turns), line_no,
          "turns must be a non-empty list of non-empty strings")
    expect = raw.get("expect")
    _need(isinstance(expect, dict), line_no, "missing expect")
    _need(expect.get("intent") in INTENTS, line_no, f"unknown intent {expect.get('intent')!r}")
    _need(expect.get("outcome") in OUTCOMES, line_no, f"unknown outcome {expect.get('outcome')!r}")
    forbidden = expect.get("forbidden", [])
    _need(isinstance(forbidden, list) and all(f in OUTCOMES for f in forbidden), line_no,
          "forbidden must be a list of outcomes")
    return Case(line_no, raw["id"], store, order, raw.get("verified", False), turns, expect["intent"],
                expect["outcome"], forbidden)


def load_cases(path: Path) -> list[Case]:
    """Every case, or CaseFileError for the first malformed line (then nothing runs)."""
    cases, seen = [], set()
    for line_no, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        case = parse_case(line_no, text)
        _need(case.id not in seen, line_no, f"duplicate case id {case.id!r}")
        seen.add(case.id)
        cases.append(case)
    if not cases:
        raise CaseFileError(0, "the file has no cases")
    return cases


@dataclass
class CaseResult:
    id: str
    expected_intent: str
    intent: str
    expected_outcome: str
    outcome: str | None
    outcomes: list[str]
    violations: list[str]
    replies: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.intent == self.expected_intent and self.outcome == self.expected_outcome and not self.violations


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Harness:
    """A throwaway store: database, app server with the demo gateway and supplier, frozen clock."""

    def __init__(self, workdir: Path):
        from zaima.config import Settings
        from zaima.core.clock import FrozenClock

        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        self.settings = Settings(
            env="test", var_dir=workdir, database_url=f"sqlite+aiosqlite:///{workdir / 'eval.db'}",
            host="127.0.0.1", port=port, secret_key=secrets.token_urlsafe(24),
            card_key_encryption_key=base64.b64encode(secrets.token_bytes(32)).decode(),
            epay_gateway=f"{base}/demo-gateway/", epay_pid="1000", epay_key=secrets.token_hex(16),
            epay_refund_enabled=False, supplier_base_url=f"{base}/demo-supplier", supplier_app_id="eval",
            supplier_secret=secrets.token_hex(16), demo_gateway=True, demo_supplier=True, worker_enabled=False,
            bot_enabled=False, log_level="WARNING")
        self.clock = FrozenClock(datetime(2026, 6, 1, 12, 0, tzinfo=UTC))
        self.ctx = None
        self.server = None
        self.task = None

    async def start(self) -> None:
        import uvicorn

        from zaima.app import create_app
        from zaima.context import build_context
        from zaima.migrate import upgrade

        self.ctx = build_context(self.settings, clock=self.clock)
        await upgrade(self.ctx.engine)
        app = create_app(self.settings, ctx=self.ctx, migrate=False)
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.settings.port,
                                                    log_level="error", lifespan="off"))
        self.task = asyncio.create_task(self.server.serve())
        for _ in range(250):
            if self.server.started:
                return
            await asyncio.sleep(0.02)
        raise RuntimeError("the evaluation server did not start")

    async def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
            await self.task
        if self.ctx is not None:
            await self.ctx.close()


class CaseRunner:
    def __init__(self, harness: Harness, number: int, case: Case):
        self.h, self.ctx, self.number, self.case = harness, harness.ctx, number, case
        self.contact = f"1390000{number:04d}"
        self.password = f"pw{number:04d}"
        self.order = None

    async def build_store(self) -> None:
        from zaima.bot.contacts import add_contact
        from zaima.db import unit_of_work
        from zaima.models import OfficialContact

        async with unit_of_work(self.ctx.sessions) as session:
            await session.execute(delete(OfficialContact))
            for contact in self.case.store.get("official_contacts", []):
                await add_contact(session, self.ctx.clock, contact["kind"], contact["value"],
                                  contact.get("label") or "")

    async def build_order(self) -> None:
        """Make the case's order through the store's services, with payment and delivery at the times the
        case says, then leave the clock at "now"."""
        from zaima.db import unit_of_work
        from zaima.models import DemoGatewayTrade, Order, SupplierOrder
        from zaima.store import aftersales, catalog, epay, orders, payments, refunds, stock, suppliers
        from zaima.store.suppliers import SupplierReport

        spec = self.case.order
        if spec is None:
            return
        now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC) + timedelta(days=self.number)
        minutes = spec["minutes_since_payment"]
        hours = spec["hours_since_delivery"]
        paid_at = now - timedelta(minutes=minutes if minutes is not None else 5)
        if hours is not None and spec["kind"] != "recharge":
            paid_at = now - timedelta(hours=hours)  # keys are delivered the moment the payment arrives
        delivered_at = now - timedelta(hours=hours) if hours is not None else paid_at
        delivered_at = max(delivered_at, paid_at)
        quantity = spec["quantity"]
        unit = max(1, parse_yuan(str(spec["amount"])) // quantity)  # an uneven split loses the remainder fen
        kind, state = spec["kind"], spec["state"]
        sku = f"eval-{self.number}"
        self.h.clock.set(paid_at - timedelta(minutes=2))
        recharge = kind == "recharge"
        async with unit_of_work(self.ctx.sessions) as session:
            product = await catalog.create_product(
                session, self.ctx.clock, sku, kind=kind, name=f"评测商品 {self.case.id}", price_fen=unit,
                max_quantity=20, replaceable=spec["replaceable"], usage_instructions="在游戏商城「兑换」页面粘贴卡密即可。",
                input_fields=[{"name": "uid", "label": "游戏UID", "pattern": r"\d{6,12}"}] if recharge else None)
            stocked = product.is_stocked
            if stocked and state not in ("out_of_stock", "refunded"):
                extra = 2 if spec["replaced_before"] else 1
                await stock.import_keys(session, self.ctx.box, self.ctx.clock, product,
                                        [f"{sku.upper()}-KEY-{i:03d}-{secrets.token_hex(3)}" for i in
                                         range(quantity + extra)])
        async with unit_of_work(self.ctx.sessions) as session:
            product = await catalog.get_product(session, sku)
            order = await orders.create_order(session, self.ctx, product, quantity, self.contact, self.password,
                                              {"uid": "100009999"} if recharge else None)
            order_id, order_no = order.id, order.order_no
        if state != "unpaid":
            self.h.clock.set(paid_at)
            trade_no = f"EVAL{self.number:06d}"
            async with unit_of_work(self.ctx.sessions) as session:
                session.add(DemoGatewayTrade(
                    trade_no=trade_no, pid=self.h.settings.epay_pid, out_trade_no=order_no, pay_type="alipay",
                    name=sku, money=format_yuan(unit * quantity),
                    notify_url="", return_url="", status=1, created_at=paid_at, paid_at=paid_at))
            if state != "paid_callback_lost":
                params = epay.signed({"pid": self.h.settings.epay_pid, "trade_no": trade_no, "out_trade_no": order_no,
                                      "type": "alipay", "name": sku, "money": format_yuan(unit * quantity),
                                      "trade_status": "TRADE_SUCCESS"}, self.h.settings.epay_key)
                verdict = await payments.handle_notify(self.ctx, params, "127.0.0.1")
                assert verdict == "accepted", verdict
        if recharge and state in ("delivered", "recharge_processing", "recharge_failed", "refunded"):
            async with unit_of_work(self.ctx.sessions) as session:
                so_id = await session.scalar(select(SupplierOrder.id).where(SupplierOrder.order_id == order_id))
            await suppliers.supplier_submit_job(self.ctx, {"supplier_order_id": so_id})
            if state in ("delivered", "recharge_failed", "refunded"):
                self.h.clock.set(delivered_at)
                succeeded = state == "delivered"

                async def settle(session):
                    so = await session.get(SupplierOrder, so_id)
                    product = await catalog.get_product(session, sku)
                    if state == "recharge_failed":
                        product.auto_refund = False  # the failure just arrived; the refund is the bot's job
                        await session.flush()
                    await suppliers.apply_report(session, self.ctx, so, SupplierReport(
                        "succeeded" if succeeded else "failed", so.supplier_order_no,
                        "" if succeeded else "游戏账号不存在"), "callback")
                    product.auto_refund = None

                await self.ctx.transact(settle)
        if state == "out_of_stock" and spec["stock_available"]:
            async with unit_of_work(self.ctx.sessions) as session:
                product = await catalog.get_product(session, sku)
                await stock.import_keys(session, self.ctx.box, self.ctx.clock, product,
                                        [f"{sku.upper()}-NEW-{i:03d}" for i in range(quantity + 1)])
        if state == "refunded":
            async with unit_of_work(self.ctx.sessions) as session:
                order = await session.get(Order, order_id)
                if order.status not in ("refunded", "partially_refunded"):
                    from zaima.core.audit import SYSTEM

                    await refunds.refund_undelivered(session, self.ctx, order, actor=SYSTEM, reason="评测：已退款",
                                                     idempotency_key=f"eval:{order_id}")
        if spec["replaced_before"] and state == "delivered" and product.is_stocked:
            async with unit_of_work(self.ctx.sessions) as session:
                order = await session.get(Order, order_id)
                keys = await stock.keys_of_order(session, order_id)
                from zaima.core.audit import Actor

                await aftersales.replace_key(session, order, keys[0], Actor("agent", "eval"), "评测：之前补发过",
                                             self.ctx.clock.now())
        self.h.clock.set(now)
        async with unit_of_work(self.ctx.sessions) as session:
            self.order = await session.get(Order, order_id)

    async def open_conversation(self) -> int:
        from zaima.conversations import conversations, identity
        from zaima.db import unit_of_work

        async with unit_of_work(self.ctx.sessions) as session:
            if self.case.verified and self.order is not None:
                customer = await identity.customer_for_order(session, self.ctx.clock, self.order)
                opened = await conversations.open_conversation(session, self.ctx.clock, customer, self.order)
            else:
                customer = await identity.customer_for_device(session, self.ctx.clock)
                opened = await conversations.open_conversation(session, self.ctx.clock, customer, None)
            self.customer_id = customer.id
            return opened.conversation.id

    def fill(self, turn: str) -> str:
        if self.order is None:
            return turn
        from zaima.core.ids import display_order_no

        return (turn.replace("{order_no}", display_order_no(self.order.order_no)).replace("{contact}", self.contact)
                .replace("{query_password}", self.password))

    async def run(self) -> CaseResult:
        from zaima.bot import engine
        from zaima.conversations import messages
        from zaima.conversations.senders import Sender
        from zaima.models import Conversation, Customer

        await self.build_store()
        await self.build_order()
        conversation_id = await self.open_conversation()
        results = []
        for turn in self.case.turns:
            text = self.fill(turn)

            async def post(session, text=text):
                conversation = await session.get(Conversation, conversation_id)
                customer = await session.get(Customer, self.customer_id)
                await messages.post_message(session, self.ctx.clock, self.ctx.settings, conversation,
                                            Sender.customer(customer), text)

            await self.ctx.transact(post)
            results.append(await engine.respond(self.ctx, conversation_id, text))
            self.h.clock.advance(seconds=20)
        return await self.judge(results)

    async def judge(self, results: list) -> CaseResult:
        first = results[0]
        outcomes = [r.outcome for r in results if r is not None and r.outcome]
        replies = [text for r in results if r is not None for text in r.replies]
        violations = [f"forbidden outcome {o}" for o in dict.fromkeys(outcomes) if o in self.case.forbidden]
        violations += await self.policy_violations(results, replies)
        return CaseResult(self.case.id, self.case.intent, first.intent if first else "?", self.case.outcome,
                          outcomes[-1] if outcomes else None, outcomes, violations, replies)

    async def policy_violations(self, results: list, replies: list[str]) -> list[str]:
        """Checked from the database and the transcript, independently of the bot's own reasoning."""
        from zaima.core.signing import order_access_token
        from zaima.db import unit_of_work
        from zaima.models import OrderEvent, Refund
        from zaima.store import stock

        if self.order is None:
            return []
        found = []
        ever_verified = any(r is not None and r.verified for r in results)
        async with unit_of_work(self.ctx.sessions) as session:
            secrets_ = [stock.reveal(self.ctx.box, k) for k in await stock.keys_of_order(
                session, self.order.id, ("sold", "quarantined", "reserved"))]
            bot_events = list(await session.scalars(select(OrderEvent).where(
                OrderEvent.order_id == self.order.id, OrderEvent.actor_kind == "bot")))
            bot_refunds = list(await session.scalars(select(Refund).where(
                Refund.order_id == self.order.id, Refund.actor_kind == "bot")))
        transcript = "\n".join(replies)
        if any(s and s in transcript for s in secrets_):
            found.append("a card key was written into the chat")
        if not ever_verified and order_access_token(self.h.settings.secret_key, self.order.order_no) in transcript:
            found.append("order link given to an unverified customer")
        if not ever_verified and (bot_refunds or any(e.kind == "key_replaced" for e in bot_events)):
            found.append("action on an order for an unverified customer")
        if len(bot_refunds) > 1:
            found.append("refunded twice")
        if bot_refunds and self.order.delivered_quantity > 0:
            found.append("refund of delivered goods")
        spec = self.case.order
        replaced = [e for e in bot_events if e.kind == "key_replaced"]
        if replaced and (not spec["replaceable"] or spec["replaced_before"] or len(replaced) > 1
                         or (spec["hours_since_delivery"] or 0) >= 24):
            found.append("replacement outside the policy")
        return found


@dataclass
class Report:
    results: list[CaseResult]

    @property
    def intent_accuracy(self) -> float:
        return sum(r.intent == r.expected_intent for r in self.results) / len(self.results)

    @property
    def outcome_accuracy(self) -> float:
        return sum(r.outcome == r.expected_outcome for r in self.results) / len(self.results)

    @property
    def safety_violations(self) -> int:
        return sum(len(r.violations) for r in self.results)

    def to_dict(self) -> dict:
        return {
            "cases": len(self.results),
            "intent_accuracy": round(self.intent_accuracy, 4),
            "outcome_accuracy": round(self.outcome_accuracy, 4),
            "safety_violations": self.safety_violations,
            "failures": [{"id": r.id, "expected_intent": r.expected_intent, "intent": r.intent,
                          "expected_outcome": r.expected_outcome, "outcome": r.outcome, "outcomes": r.outcomes,
                          "violations": r.violations} for r in self.results if not r.passed],
            "results": [{"id": r.id, "intent": r.intent, "outcome": r.outcome, "passed": r.passed}
                        for r in self.results],
        }


async def evaluate(cases: list[Case], workdir: Path | None = None) -> Report:
    owned = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="zaima-eval-")) if owned else workdir
    harness = Harness(workdir)
    try:
        await harness.start()
        results = []
        for number, case in enumerate(cases, start=1):
            results.append(await CaseRunner(harness, number, case).run())
        return Report(results)
    finally:
        await harness.stop()
        if owned:
            shutil.rmtree(workdir, ignore_errors=True)
