"""The optional language model: a local server speaking the OpenAI chat-completions protocol. It may
reword a knowledge-base answer; it never sees order data, and anything odd falls back to the article."""

from __future__ import annotations

import asyncio

import pytest
import uvicorn
from fastapi import FastAPI, Request

from tests.bot.test_engine import customer_says, delivered_order, open_chat
from tests.conftest import free_port, make_settings
from zaima.bot import knowledge
from zaima.db import unit_of_work

ARTICLE = "客服时间：每天 09:00–24:00（北京时间）。"


class FakeModel:
    def __init__(self):
        self.requests: list[dict] = []
        self.reply = "您好～我们的客服每天 09:00–24:00（北京时间）都在线哦。"
        self.port = free_port()
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def complete(request: Request):
            body = await request.json()
            self.requests.append(body)
            return {"id": "x", "object": "chat.completion", "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": self.reply}}]}

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="off"))

    async def __aenter__(self):
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc):
        self.server.should_exit = True
        await self.task


@pytest.fixture
def llm_port():
    return free_port()


@pytest.fixture
def settings(db_url, tmp_path, llm_port):
    return make_settings(db_url, tmp_path, llm_base_url=f"http://127.0.0.1:{llm_port}/v1", llm_api_key="k")


async def add_article(ctx):
    async with unit_of_work(ctx.sessions) as session:
        await knowledge.create_article(session, ctx.clock, title="客服时间", questions=["客服几点上班", "人工客服什么时候在"],
                                       answer=ARTICLE, intents=["policy_question"])


async def test_rephrases_articles_and_sees_no_order_data(ctx, llm_port):
    await add_article(ctx)
    order = await delivered_order(ctx, sku="llm-card", secrets=("LLM-SECRET-KEY-1",))
    fake = FakeModel()
    fake.server.config.port = llm_port
    async with fake:
        cid = await open_chat(ctx, order)
        turn = await customer_says(ctx, cid, "客服几点上班啊")
        assert turn.outcome == "answered" and turn.replies == [fake.reply]
        sent = str(fake.requests)
        assert "客服几点上班啊" in sent and ARTICLE in sent
        assert order.order_no not in sent and "13800138000" not in sent and "LLM-SECRET" not in sent
        # A rewording that invents a number or a link is not used.
        fake.reply = "客服 24 小时在线，详情见 https://evil.example"
        turn = await customer_says(ctx, cid, "人工客服什么时候在")
        assert turn.replies == [ARTICLE]
        # Order actions never go to the model.
        turn = await customer_says(ctx, cid, "卡密没收到")
        assert turn.outcome == "codes_resent" and len(fake.requests) == 2


async def test_a_dead_model_changes_nothing(ctx):
    await add_article(ctx)  # nothing listens on llm_port
    cid = await open_chat(ctx)
    turn = await customer_says(ctx, cid, "客服几点上班")
    assert turn.outcome == "answered" and turn.replies == [ARTICLE]
