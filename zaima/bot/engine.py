"""The bot's turn: understand the message, check ownership, decide by the store's policy, act through
the store's services, answer — and write every action to the order's audit log with the conversation.

A turn is one transaction (retried on a lost race) when the decision needs nothing from outside;
otherwise three steps, so no database transaction waits on the network:
1. `prepare`: load the conversation and the bot's state, understand the text, verify the customer if
   they sent an order number with its contact, and say which outside checks the decision needs (ask
   the payment gateway, ask the supplier).
2. Those checks, each through the store's own service and its own transaction.
3. `act`: decide with live facts, act, post the replies, save the state. The actions are idempotent:
   the same request twice refunds or replaces once.

The bot speaks only in conversations with status `bot`: once handed off or taken by an agent, it is quiet.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import structlog
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from zaima.bot import replies as say
from zaima.bot.contacts import check as check_contact
from zaima.bot.facts import OrderFacts, order_facts, trade_no_of
from zaima.bot.knowledge import answer as kb_answer
from zaima.bot.llm import rephrase
from zaima.bot.nlu import get_model
from zaima.bot.slots import extract_slots
from zaima.conversations import messages
from zaima.conversations.senders import Sender
from zaima.core.audit import Actor
from zaima.core.errors import DomainError
from zaima.core.signing import order_access_token
from zaima.models import BotAction, BotState, CardKey, Conversation, Order, Product
from zaima.realtime.publish import publish_after_commit
from zaima.service import queue
from zaima.store import aftersales, delivery, orders, payments, refunds, stock, suppliers, timeline
from zaima.store.views import mask

_COMPACT = re.compile(r"[\s\-_]")  # how a key may be retyped: with or without its spaces and dashes
_NTH_KEY = re.compile(r"第\s*([1-9]|[一二三四五六七八九])\s*[张個个条]")
_CN_DIGITS = dict(zip("一二三四五六七八九", range(1, 10), strict=True))

log = structlog.get_logger("zaima.bot")

KB_INTENTS = ("usage_howto", "policy_question", "other")
ORDER_INTENTS = ("order_status", "not_received", "invalid_code", "refund", "payment_issue")
YES = re.compile(r"^(好|好的|行|可以|嗯+|恩+|ok|okay|是|是的|对|要|退|退吧|退款|退款吧|那退款吧|那就退|那就退款|退了吧|退钱|申请退款|"
                 r"我要退款|给我退|给我退款|帮我退|帮我退款|tk)[吧呀啊了的!！。.~～]*$")
WAIT = re.compile(r"(等|不退|不用退|不用了|算了|先不)")
PASSWORD = re.compile(r"(?:查询)?密码\s*[:：是为]?\s*([^\s，,。；;]{4,64})")
CONTACT_KINDS = (("phones", "phone"), ("qqs", "qq"), ("wechats", "wechat"), ("emails", "email"), ("urls", "url"))
KIND_TEXT = {"phone": "电话", "qq": "QQ", "wechat": "微信", "email": "邮箱", "url": "网址"}


@dataclass
class TurnResult:
    intent: str  # what the message was understood as (before multi-turn context)
    confidence: float
    acted_intent: str | None  # the intent the bot acted on (e.g. a pending one after verification)
    outcome: str | None
    replies: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    handoff: str | None = None  # the priority, when handed off
    verified: bool = False


@dataclass
class Prepared:
    conversation_id: int
    text: str
    intent: str
    confidence: float
    slots: object
    order_id: int | None
    verified_now: bool
    verify_failed: bool
    check_payment: bool = False
    check_supplier: int | None = None
    rephrase: bool = False  # a knowledge-base answer the optional language model may rephrase
    rephrased: dict = field(default_factory=dict)  # article id → the model's wording


def bot_actor(conversation_id: int) -> Actor:
    return Actor("bot", "zaima-bot", conversation_id)


async def load_state(session: AsyncSession, conversation_id: int, now) -> BotState:
    state = await session.get(BotState, conversation_id)
    if state is None:
        state = BotState(conversation_id=conversation_id, data={}, updated_at=now)
        session.add(state)
    return state


def save_state(state: BotState, data: dict, now) -> None:
    if state.data == data and state.updated_at is not None:
        return  # unchanged: no write
    state.data = dict(data)  # a new dict: JSON columns do not track in-place changes
    state.updated_at = now


async def _verify(session: AsyncSession, text: str, slots, data: dict) -> Order | None | bool:
    """The order the customer proved they own by sending its number with its contact or query password
    (in one message, or the number first and the contact in a later one). None when there is nothing
    to check yet; False when the details do not match."""
    if slots.order_nos:
        data["order_no_hint"] = slots.order_nos[0]
    order_no = data.get("order_no_hint")
    password = PASSWORD.search(text)
    candidates = [("contact", c) for c in (*slots.phones, *slots.emails)]
    if password:
        candidates.append(("password", password.group(1)))
    if order_no is None or not candidates:
        return None
    for how, value in candidates:
        try:
            if how == "contact":
                return await orders.lookup_order(session, order_no, contact=value)
            return await orders.lookup_order(session, order_no, query_password=value)
        except DomainError:
            continue
    return False


# "tk" (pinyin initials of 退款) only as a word of its own: never the TK inside an order number like ABTK-….
EXPLICIT_REFUND = re.compile(r"(退款|退钱|退货|退给我|(?<![a-z0-9])tk(?![a-z0-9]))", re.IGNORECASE)
LOOSE_TOKEN = re.compile(r"[A-Za-z0-9+][A-Za-z0-9_\-.@:/+]{4,}")
PREFIXED_QQ = re.compile(r"^(?:qq|QQ|Qq)(\d{5,12})$")
PHONE_DIGITS = re.compile(r"^(?:\+?86)?(1[3-9]\d{9}|[48]00\d{7}|0\d{9,11})$")


def loose_contacts(text: str, order_nos: list[str]) -> list[tuple[str, str]]:
    """Contacts written without a keyword in front ("lanshan_kami1 这个微信是你们的吗"): every id-like token,
    classified by its shape. Used only when the customer asks whether a contact is official, so a
    token that is not a contact at all just gets checked and flagged, never trusted."""
    found = []
    for token in LOOSE_TOKEN.findall(text):
        token = token.rstrip(".:/")
        plain = token.replace("-", "").replace(" ", "")
        if match := PREFIXED_QQ.match(token):
            found.append(("qq", match.group(1)))
        elif token.upper().replace("-", "") in order_nos or token.lower() in ("http", "https", "hello"):
            continue
        elif PHONE_DIGITS.match(plain):
            found.append(("phone", token))
        elif plain.isdigit() and 5 <= len(plain) <= 12:
            found.append(("qq", plain))
        elif re.fullmatch(r"[^@\s/]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+", token):
            found.append(("email", token))
        elif "." in token or "/" in token:
            found.append(("url", token))
        elif token[0].isalpha() and 6 <= len(token) <= 20:
            found.append(("wechat", token))
    return found


def _resolve_intent(intent: str, text: str, data: dict, slots=None) -> str:
    """The intent to act on, given what the conversation was waiting for."""
    details = slots is not None and (slots.order_nos or slots.phones or slots.emails or PASSWORD.search(text))
    if data.get("pending_intent") and details and intent not in ("human", "complaint"):
        return data["pending_intent"]  # the verification details we asked for, not a new question
    if intent == "not_received" and EXPLICIT_REFUND.search(text):
        return "refund"  # "没发货，退款！": the customer already chose
    if intent == "other" and data.get("last_intent") in ORDER_INTENTS and not data.get("pending_intent"):
        return data["last_intent"]  # a follow-up about the same order problem ("换的这张也不行")
    if data.get("offered_refund") and (intent == "refund" or YES.match(text.strip().lower())):
        return "refund"
    if data.get("offered_refund") and WAIT.search(text):
        return "wait_stock"
    if data.get("awaiting_contact") and intent in ("other", "contact_verify", "greeting"):
        return "contact_verify"
    if data.get("pending_intent") and intent in ("other", "order_status", "greeting", *ORDER_INTENTS):
        return data["pending_intent"] if intent in ("other", "greeting", "order_status") else intent
    return intent


async def prepare(ctx, session: AsyncSession, conversation_id: int, text: str, prediction, slots) -> Prepared | None:
    """Load the conversation and the bot's state, verify the customer if they just sent their order
    details, and say which outside checks the decision needs. None when the bot must stay quiet."""
    conversation = await session.get(Conversation, conversation_id)
    if conversation is None or conversation.status != "bot":
        return None
    now = ctx.clock.now()
    state = await load_state(session, conversation_id, now)
    data = dict(state.data or {})
    order_id = conversation.order_id or data.get("order_id")
    verified_now = verify_failed = False
    if order_id is None:
        found = await _verify(session, text, slots, data)
        if found:
            order_id = data["order_id"] = found.id
            verified_now = True
        verify_failed = found is False
        save_state(state, data, now)
    prepared = Prepared(conversation_id, text, prediction.intent, prediction.confidence, slots, order_id,
                        verified_now, verify_failed)
    acted = _resolve_intent(prediction.intent, text, data, slots)
    prepared.rephrase = bool(ctx.settings.llm_base_url) and acted in KB_INTENTS
    if order_id is not None and acted in ("not_received", "payment_issue", "order_status"):
        order = await session.get(Order, order_id)
        if order.status in ("pending_payment", "expired") and acted != "order_status":
            prepared.check_payment = True
        elif order.status == "delivering":
            facts = await order_facts(session, order, now)
            if facts.recharge and (facts.minutes_since_payment or 0) < facts.policy.recharge_handoff_minutes:
                prepared.check_supplier = facts.recharge.supplier_order_id
    return prepared


async def _product_sku(session: AsyncSession, order_id: int | None) -> str | None:
    if order_id is None:
        return None
    order = await session.get(Order, order_id)
    return (await session.get(Product, order.product_id)).sku


async def check_outside(ctx, prepared: Prepared) -> bool:
    """Ask the gateway / the supplier, through the store's services, and the optional language model
    to word a knowledge-base answer. True if the payment was recovered."""
    recovered = False
    if prepared.rephrase:
        async with ctx.sessions() as session:
            hit = await kb_answer(session, prepared.text, intent=prepared.intent,
                                  product_sku=await _product_sku(session, prepared.order_id))
        if hit is not None:
            prepared.rephrased[hit.article_id] = await rephrase(ctx.settings, prepared.text, hit.answer)
    if prepared.check_payment:
        try:
            recovered = await payments.recover_payment(ctx, prepared.order_id, actor=bot_actor(prepared.conversation_id))
        except Exception as exc:  # noqa: BLE001 - the gateway being down must not break the chat
            log.warning("bot_payment_check_failed", order_id=prepared.order_id, error=str(exc))
    if prepared.check_supplier is not None:
        try:
            await suppliers.query_once(ctx, prepared.check_supplier)
        except Exception as exc:  # noqa: BLE001
            log.warning("bot_supplier_check_failed", order_id=prepared.order_id, error=str(exc))
    return recovered


class Turn:
    """One decision and its actions inside the `act` transaction."""

    def __init__(self, ctx, session: AsyncSession, conversation: Conversation, state: BotState, prepared: Prepared,
                 recovered: bool):
        self.ctx, self.session, self.conversation, self.state = ctx, session, conversation, state
        self.prepared, self.recovered = prepared, recovered
        self.data = dict(state.data or {})
        self.now = ctx.clock.now()
        self.actor = bot_actor(conversation.id)
        self.result = TurnResult(prepared.intent, prepared.confidence, None, None,
                                 verified=prepared.order_id is not None)
        self.events: list = []
        self.facts: OrderFacts | None = None

    # --- helpers ----------------------------------------------------------------------------------
    def reply(self, text: str, outcome: str | None = None) -> None:
        self.result.replies.append(text)
        if outcome:
            self.result.outcome = outcome

    async def claim(self, action: str, key: str, order: Order | None = None, **result) -> bool:
        """Record a bot action once: False if this exact action was already taken (idempotency)."""
        if await self.session.scalar(select(BotAction.id).where(BotAction.idempotency_key == key)):
            return False
        try:
            async with self.session.begin_nested():
                self.session.add(BotAction(conversation_id=self.conversation.id, order_id=order.id if order else None,
                                           action=action, idempotency_key=key, result=result, created_at=self.now))
        except IntegrityError:
            return False
        self.result.actions.append(action)
        return True

    def order_link(self, order: Order) -> str:
        token = order_access_token(self.ctx.settings.secret_key, order.order_no)
        return f"{self.ctx.settings.base_url}/orders/{order.order_no}?t={token}"

    async def handoff(self, priority: str, text: str, reason: str) -> None:
        ticket = self.conversation.ticket_no
        self.events += await queue.hand_off(self.session, self.ctx, self.conversation, priority=priority)
        if self.facts is not None:
            await timeline.record(self.session, self.facts.order, "handoff", self.actor, self.now, reason=reason,
                                  priority=priority)
        await self.claim("handoff", f"handoff:{self.conversation.id}:{self.conversation.version}:{self.now.timestamp()}",
                         self.facts.order if self.facts else None, priority=priority, reason=reason)
        self.result.handoff = priority
        notice = await queue.handoff_notice(self.session, self.ctx, self.conversation)
        self.reply(text.format(ticket=ticket) + notice, "handoff")

    # --- the decision -----------------------------------------------------------------------------
    async def run(self) -> TurnResult:
        p = self.prepared
        intent = _resolve_intent(p.intent, p.text, self.data, p.slots)
        if p.verified_now and self.data.get("pending_intent") and intent not in ("human", "complaint"):
            intent = self.data["pending_intent"]  # they just sent the details we asked for: back to their problem
        self.result.acted_intent = intent
        self.data["last_intent"] = intent
        if intent != "other":
            self.data["misses"] = 0
        if intent in ("human", "complaint", "account_issue"):
            await self._load_facts()
            self.data.pop("pending_intent", None)
            if intent == "human":
                await self.handoff("normal", say.HANDOFF, "客户要求人工")
            elif intent == "complaint":
                await self.handoff("high", say.HANDOFF_COMPLAINT, "客户投诉")
            else:
                await self.handoff("normal", say.HANDOFF_ACCOUNT, "账号问题")
        elif intent == "contact_verify":
            await self.contact_verify()
        elif intent in ORDER_INTENTS or intent == "wait_stock":
            await self.order_intent(intent)
        else:
            await self.general(intent)
        save_state(self.state, self.data, self.now)
        return self.result

    async def _load_facts(self) -> OrderFacts | None:
        if self.facts is None and self.prepared.order_id is not None:
            order = await self.session.get(Order, self.prepared.order_id)
            self.facts = await order_facts(self.session, order, self.now)
        return self.facts

    async def general(self, intent: str) -> None:
        if intent == "other":
            self.data["misses"] = self.data.get("misses", 0) + 1
            if self.data["misses"] >= 2:
                self.reply(say.OTHER_TWICE, "answered")
                return
        product = None
        if self.prepared.order_id is not None and intent in KB_INTENTS:
            order = await self.session.get(Order, self.prepared.order_id)
            product = await self.session.get(Product, order.product_id)
        hit = None
        if intent in KB_INTENTS:
            hit = await kb_answer(self.session, self.prepared.text, intent=intent,
                                  product_sku=product.sku if product else None)
        if hit is not None:
            self.reply(self.prepared.rephrased.get(hit.article_id, hit.answer), "answered")
        elif intent == "usage_howto" and product is not None and product.usage_instructions:
            self.reply(f"{product.name} 的使用方法：\n{product.usage_instructions}", "answered")
        elif intent == "greeting":
            self.reply(say.GREETING, "answered")
        elif intent == "thanks":
            self.reply(say.THANKS, "answered")
        else:
            self.reply(say.OTHER if intent == "other" else say.OTHER_TWICE, "answered")

    async def contact_verify(self) -> None:
        slots = self.prepared.slots
        found = [(kind, value) for attr, kind in CONTACT_KINDS for value in getattr(slots, attr)]
        seen = {value.lower() for _, value in found}
        for kind, value in loose_contacts(self.prepared.text, slots.order_nos):
            # A longer spelling wins over a slot cut short (https://shop.com@evil.top is not https://shop.com).
            if value.lower() not in seen:
                found = [(k, v) for k, v in found if v.lower() not in value.lower()] + [(kind, value)]
                seen.add(value.lower())
        if not found:
            self.data["awaiting_contact"] = True
            self.reply(say.ASK_CONTACT)
            return
        self.data.pop("awaiting_contact", None)
        checks = [await check_contact(self.session, kind, value) for kind, value in found]
        bad = [c for c in checks if not c.official]
        if bad:
            self.reply(say.contact_flagged([f"{KIND_TEXT[c.kind]} {c.value}" for c in bad]), "contact_flagged")
        else:
            self.reply(say.contact_verified([(KIND_TEXT[c.kind], c.value, c.label) for c in checks]),
                       "contact_verified")

    async def order_intent(self, intent: str) -> None:
        p = self.prepared
        if p.order_id is None:
            if not (intent == "order_status" and self.data.get("pending_intent")):  # keep what they first asked
                self.data["pending_intent"] = intent if intent != "wait_stock" else "not_received"
            self.reply(say.VERIFY_FAILED if p.verify_failed else say.ASK_VERIFICATION, "needs_verification")
            return
        self.data.pop("pending_intent", None)
        facts = await self._load_facts()
        handler = {"order_status": self.order_status, "not_received": self.not_received,
                   "invalid_code": self.invalid_code, "refund": self.refund, "payment_issue": self.payment_issue,
                   "wait_stock": self.wait_stock}[intent]
        await handler(facts)

    # --- playbooks (facts are live: read in this transaction) ---------------------------------------
    async def order_status(self, facts: OrderFacts) -> None:
        if facts.kind == "recharge" and facts.status == "delivered":
            self.reply(say.recharge_done(facts), "status_explained")
        else:
            self.reply(say.status_explained(facts), "status_explained")

    async def not_received(self, facts: OrderFacts) -> None:
        order, status = facts.order, facts.status
        if self.recovered and status in ("delivered", "awaiting_stock", "delivering", "paid"):
            # The gateway confirmed a payment whose notify was lost: it is now recorded and delivery started.
            await self.claim("query_payment", f"payment:{order.id}", order)
            if status in ("delivered", "delivering"):
                self.reply(say.redelivered(facts, self.order_link(order), recovered=True), "redelivered")
                return
        if status in ("pending_payment", "expired"):
            await timeline.record(self.session, order, "payment_checked", self.actor, self.now, result="unpaid")
            self.reply(say.status_explained(facts), "status_explained")
        elif status == "delivered":
            if facts.kind == "recharge":
                self.reply(say.recharge_done(facts), "status_explained")
            else:
                await self.resend_codes(facts)
        elif status in ("awaiting_stock", "paid"):
            await self.stock_shortage(facts)
        elif status == "delivering":
            await self.recharge_pending(facts)
        elif status == "delivery_failed":
            await self.refund_nothing_delivered(facts)
        elif status in ("refunded", "partially_refunded"):
            self.reply(say.refunded_text(facts), "status_explained")
        else:
            self.reply(say.status_explained(facts), "status_explained")

    async def resend_codes(self, facts: OrderFacts) -> None:
        order = facts.order
        keys = await stock.keys_of_order(self.session, order.id)
        masked = [mask(stock.reveal(self.ctx.box, k)) for k in keys]
        if await self.claim("resend", f"resend:{order.id}:{self.conversation.id}:{self.now.timestamp()}", order):
            await timeline.record(self.session, order, "codes_resent", self.actor, self.now,
                                  key_ids=[k.id for k in keys])
        self.reply(say.codes_resent(facts, self.order_link(order), masked), "codes_resent")

    async def stock_shortage(self, facts: OrderFacts) -> None:
        order = facts.order
        if facts.stock_available >= order.undelivered_quantity:
            await delivery.deliver(self.session, self.ctx, order, actor=self.actor)
            await self.claim("redeliver", f"redeliver:{order.id}:{order.version}", order)
            if order.status == "delivered":
                self.reply(say.redelivered(facts, self.order_link(order), recovered=False), "redelivered")
                return
        if facts.policy.auto_refund:
            self.data["offered_refund"] = order.id
            self.reply(say.refund_offered(facts), "refund_offered")
        else:
            await self.handoff("normal", say.HANDOFF, "缺货，需人工处理")

    async def wait_stock(self, facts: OrderFacts) -> None:
        self.data.pop("offered_refund", None)
        self.reply("好的，补货后系统会自动为您发货，发货后订单页面即可查看。需要退款时随时告诉我。", "answered")

    async def recharge_pending(self, facts: OrderFacts) -> None:
        minutes = facts.minutes_since_payment or 0
        if minutes >= facts.policy.recharge_handoff_minutes:
            await self.handoff("urgent", say.recharge_urgent(facts, "{ticket}"),
                               f"直充超过 {facts.policy.recharge_handoff_minutes} 分钟未到账")
        else:
            self.reply(f"{say.order_line(facts)}{say.recharge_progress(facts)}", "status_explained")

    async def refund_nothing_delivered(self, facts: OrderFacts) -> None:
        order = facts.order
        if not facts.policy.auto_refund:
            await self.handoff("normal", say.HANDOFF, "未发货订单退款，需人工处理")
            return
        refund = await refunds.refund_undelivered(self.session, self.ctx, order, actor=self.actor,
                                                  reason="客户申请，未发货自动退款",
                                                  idempotency_key=f"bot-refund:{order.id}")
        await self.claim("refund", f"refund:{order.id}", order, refund_id=refund.id)
        self.data.pop("offered_refund", None)
        self.reply(say.refunded_now(facts, manual=refund.status == "manual_pending"), "refunded")

    async def refund(self, facts: OrderFacts) -> None:
        status = facts.status
        if status in ("refunded", "partially_refunded"):
            self.reply(say.refunded_text(facts), "status_explained")
        elif status in ("awaiting_stock", "delivery_failed", "paid") and facts.nothing_delivered:
            await self.refund_nothing_delivered(facts)
        elif status in ("pending_payment", "expired"):
            self.reply(f"{say.order_line(facts)}还没有付款，无需退款。", "status_explained")
        elif status == "delivering":
            self.reply(f"{say.order_line(facts)}{say.recharge_progress(facts)}充值结果出来前不能退款；"
                       "如果充值失败，系统会自动原路退款。", "status_explained")
        else:
            self.reply(say.refund_policy(facts), "policy_explained")

    async def invalid_code(self, facts: OrderFacts) -> None:
        order = facts.order
        if facts.status != "delivered" or not facts.delivers_keys:
            await self.not_received(facts)
            return
        keys = await stock.keys_of_order(self.session, order.id)
        reported = self._reported_key(keys)
        window = facts.policy.replacement_window_hours
        eligible = (facts.policy.replaceable and facts.times_replaced == 0 and reported is not None
                    and facts.hours_since_delivery is not None and facts.hours_since_delivery < window)
        if eligible and await self.claim("replace", f"replace:{order.id}", order, key_id=reported.id):
            done = await aftersales.replace_key(self.session, order, reported, self.actor, "客户反馈卡密无效", self.now)
            if done.new_key_id is not None:
                new_key = await self.session.get(CardKey, done.new_key_id)
                which = (keys.index(reported) + 1, say.key_hint(stock.reveal(self.ctx.box, reported)),
                         say.key_hint(stock.reveal(self.ctx.box, new_key))) if len(keys) > 1 else None
                self.reply(say.replaced(facts, self.order_link(order), which), "replaced")
                return
            await self.handoff("high", say.invalid_handoff("暂时没有库存可以补发，", "{ticket}"), "卡密无效，缺货无法补发")
            return
        if reported is not None:
            await aftersales.quarantine(self.session, order, reported, self.actor, "客户反馈卡密无效", self.now)
        if facts.hours_since_delivery is not None and facts.hours_since_delivery >= window:
            why = f"发货已超过 {window} 小时，"
        elif facts.times_replaced:
            why = "这笔订单已经补发过一次，"
        elif not facts.policy.replaceable:
            why = "该商品不支持自动补发，"
        else:
            why = ""
        await self.handoff("high", say.invalid_handoff(why, "{ticket}"), "卡密无效：" + (why.rstrip("，") or "需核实"))

    def _reported_key(self, keys: list[CardKey]) -> CardKey | None:
        """The key the customer means: one they quoted (whole, or its last 4 or more characters), one they
        counted (「第2张」), else the order's first sold key (the reply then says which one it replaced)."""
        if not keys:
            return None
        text = self.prepared.text
        secrets = [(stock.reveal(self.ctx.box, key) or "").split(",")[0] for key in keys]
        for key, secret in zip(keys, secrets, strict=True):
            if secret and secret in text:
                return key
        counted = _NTH_KEY.search(text)  # an explicit place wins over four characters that may be a date
        if counted:
            n = _CN_DIGITS.get(counted.group(1)) or int(counted.group(1))
            if 1 <= n <= len(keys):
                return keys[n - 1]
        compact = _COMPACT.sub("", text).upper()
        tails = [key for key, secret in zip(keys, secrets, strict=True)
                 if len(tail := _COMPACT.sub("", secret).upper()[-4:]) == 4 and tail in compact]
        return tails[0] if len(tails) == 1 else keys[0]

    async def payment_issue(self, facts: OrderFacts) -> None:
        if self.recovered or facts.status not in ("pending_payment", "expired", "delivered"):
            await self.not_received(facts)
        elif facts.status == "delivered":
            trade_no = await trade_no_of(self.session, facts.order)
            self.reply(f"{say.order_line(facts)}付款已收到（交易号 {trade_no or '—'}），"
                       f"并已于 {say.bj(facts.delivered_at)} 发货。如被重复扣款，请回复「转人工」核实退回。",
                       "status_explained")
        else:
            await timeline.record(self.session, facts.order, "payment_checked", self.actor, self.now, result="unpaid")
            self.reply("已向支付平台核实：这笔订单目前没有付款成功的记录。如果确实被扣款，一般几分钟内会自动到账；"
                       "超过 30 分钟仍未更新，请提供付款截图并回复「转人工」。", "status_explained")


async def act(ctx, session: AsyncSession, prepared: Prepared, recovered: bool) -> TurnResult | None:
    conversation = await session.get(Conversation, prepared.conversation_id)
    if conversation is None or conversation.status != "bot":
        return None  # an agent took over meanwhile: stay quiet
    state = await load_state(session, conversation.id, ctx.clock.now())
    turn = Turn(ctx, session, conversation, state, prepared, recovered)
    result = await turn.run()
    events = list(turn.events)
    for text in result.replies:
        posted = await messages.post_message(session, ctx.clock, ctx.settings, conversation, Sender.bot(), text)
        events += posted.events
    publish_after_commit(session, ctx.hub, events)
    return result


async def respond(ctx, conversation_id: int, text: str) -> TurnResult | None:
    """The bot's answer to one customer message (already stored). None when the bot stays quiet.
    One transaction when the decision needs nothing from outside; otherwise prepare, ask, then act."""
    prediction = get_model().predict(text)
    slots = extract_slots(text)

    async def first(session: AsyncSession):
        prepared = await prepare(ctx, session, conversation_id, text, prediction, slots)
        if prepared is None or prepared.check_payment or prepared.check_supplier is not None or prepared.rephrase:
            return prepared, None
        return prepared, await act(ctx, session, prepared, recovered=False)

    prepared, result = await ctx.transact(first)
    if prepared is None or result is not None:
        return result
    recovered = await check_outside(ctx, prepared)
    return await ctx.transact(lambda session: act(ctx, session, prepared, recovered))
