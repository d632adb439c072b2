"""Canned responses: validated, unique by shortcut, found by prefix."""

from __future__ import annotations

import pytest

from zaima.conversations import canned
from zaima.core.errors import Conflict, NotFound, ValidationFailed
from zaima.db import unit_of_work


async def _create(ctx, shortcut, title="标题", body="内容"):
    async with unit_of_work(ctx.sessions) as session:
        return await canned.create_canned(session, ctx.clock, ctx.settings, shortcut, title, body)


async def _search(ctx, prefix):
    async with unit_of_work(ctx.sessions) as session:
        return [c.shortcut for c in await canned.search_canned(session, prefix)]


async def test_shortcuts_are_normalised_and_unique(ctx):
    created = await _create(ctx, " /Refund ", "退款说明", "  已为您原路退款，1–3 个工作日到账。 ")
    assert (created.shortcut, created.title, created.body) == ("refund", "退款说明", "已为您原路退款，1–3 个工作日到账。")
    with pytest.raises(Conflict) as err:
        await _create(ctx, "REFUND")
    assert err.value.message_zh == "快捷短语 /refund 已存在"


@pytest.mark.parametrize("shortcut,title,body", [
    ("", "t", "b"), ("has space", "t", "b"), ("x" * 33, "t", "b"), ("ok", "", "b"), ("ok", "t" * 101, "b"),
    ("ok", "t", ""), ("ok", "t", "bad\x00body"),
])
async def test_invalid_canned_responses_are_refused(ctx, shortcut, title, body):
    with pytest.raises(ValidationFailed):
        await _create(ctx, shortcut, title, body)
    assert await _search(ctx, "") == []


async def test_search_by_prefix_treats_wildcards_literally(ctx):
    for shortcut in ("refund", "resend", "recharge", "退款", "re_x", "hello"):
        await _create(ctx, shortcut)
    assert await _search(ctx, "re") == ["re_x", "recharge", "refund", "resend"]
    assert await _search(ctx, "/REF") == ["refund"]
    assert await _search(ctx, "退") == ["退款"]
    assert await _search(ctx, "re_") == ["re_x"]  # "_" is not a LIKE wildcard here
    assert await _search(ctx, "%") == []
    assert len(await _search(ctx, "")) == 6


async def test_update_and_delete(ctx):
    first = await _create(ctx, "hi")
    second = await _create(ctx, "bye")
    async with unit_of_work(ctx.sessions) as session:
        updated = await canned.update_canned(session, ctx.clock, ctx.settings, first.id, shortcut="hello",
                                             body="您好，请问有什么可以帮您？")
        assert (updated.shortcut, updated.title, updated.body) == ("hello", "标题", "您好，请问有什么可以帮您？")
    async with unit_of_work(ctx.sessions) as session:
        with pytest.raises(Conflict):
            await canned.update_canned(session, ctx.clock, ctx.settings, second.id, shortcut="hello")
    async with unit_of_work(ctx.sessions) as session:
        await canned.delete_canned(session, second.id)
    assert await _search(ctx, "") == ["hello"]
    async with unit_of_work(ctx.sessions) as session:
        with pytest.raises(NotFound):
            await canned.get_canned(session, second.id)
