"""JSON columns through orjson, on SQLite and PostgreSQL: what orjson refuses (a customer's text with a lone
surrogate, an integer beyond 64 bits) is stored and read back as the standard library would, and documents
stored before (\\u escapes) read back unchanged."""

from __future__ import annotations

import json

from sqlalchemy import select, text

from tests.store.helpers import make_order, make_product
from zaima.core import jsoncodec
from zaima.core.audit import SYSTEM
from zaima.db import unit_of_work
from zaima.models import OrderEvent
from zaima.store import timeline


def test_what_orjson_refuses_is_written_as_the_standard_library_writes_it():
    awkward = {"text": "坏表情\ud83d", "big": 2**70, 3: "int key"}
    assert jsoncodec.dumps(awkward) == json.dumps(awkward)
    assert jsoncodec.loads(jsoncodec.dumps(awkward)) == json.loads(json.dumps(awkward))
    assert json.loads(jsoncodec.dumps_bytes(awkward)) == json.loads(json.dumps(awkward))
    plain = {"reason": "重复付款，需人工退款", "amount": 3000, "ok": True, "none": None, "list": [1, "二"]}
    assert json.loads(jsoncodec.dumps(plain)) == plain and jsoncodec.loads(json.dumps(plain)) == plain


async def test_json_columns_keep_what_customers_type_and_what_was_stored_before(ctx):
    product = await make_product(ctx, sku="json-codec")
    order = await make_order(ctx, product)
    awkward = {"text": "坏表情\ud83d", "big": 2**70, "plain": "卡密没收到"}
    async with unit_of_work(ctx.sessions) as session:
        await timeline.record(session, order, "note", SYSTEM, ctx.clock.now(), **awkward)
    async with unit_of_work(ctx.sessions) as session:
        # A document as the standard library stored it before: ASCII with \u escapes.
        legacy = json.dumps({"reason": "旧数据", "emoji": "😀"})
        await session.execute(text("UPDATE order_events SET data = :data WHERE order_id = :id AND kind = 'created'"),
                              {"data": legacy, "id": order.id})
    async with unit_of_work(ctx.sessions) as session:
        events = {e.kind: e.data for e in await session.scalars(select(OrderEvent).where(OrderEvent.order_id == order.id))}
    assert {k: events["note"][k] for k in awkward} == awkward
    assert events["created"] == {"reason": "旧数据", "emoji": "😀"}
