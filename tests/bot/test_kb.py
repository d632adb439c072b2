"""The knowledge base: retrieval quality on the evaluation set, the `zaima kb rank` command, articles
in the database with `answer()`, the demo's knowledge base, and migration 0003."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from tests.bot.kb_eval.evaluate import HERE as EVAL_DIR
from tests.bot.kb_eval.evaluate import evaluate, load
from tests.store.helpers import make_product
from zaima.bot import demo_kb, kb, knowledge
from zaima.bot.kb_cli import kb_app
from zaima.core.errors import NotFound, ValidationFailed
from zaima.db import unit_of_work
from zaima.models import KbArticle, OfficialContact

# --- retrieval (no database) ----------------------------------------------------------------------


def test_default_ranker_finds_the_right_article_in_the_top_three_for_85_percent_of_questions():
    result = evaluate(lambda articles: kb.Ranker(articles))
    assert result["r3"] >= 0.85, result["misses"]
    assert result["mrr"] >= 0.8


def test_off_topic_questions_score_below_the_answer_threshold():
    ranker = kb.Ranker(load("articles.jsonl"))
    for query in load("queries.jsonl"):
        if query["relevant"] is None:
            top = ranker.rank(query["text"], 1)
            assert not top or top[0][1] < kb.DEFAULT_THRESHOLD, query


def test_text_is_normalised_before_matching():
    assert kb.normalize("ＳＴＥＡＭ充值卡") == "steam充值卡"  # full width, upper case
    assert kb.normalize("帳號被封鎖了") == "账号被封锁了"  # traditional → simplified
    assert kb.normalize("冲值没到帐") == "充值没到账"  # frequent typos
    assert kb.normalize("能tk吗") == "能退款吗"  # pinyin initials, as a whole token
    assert kb.normalize("stk tk2") == "stk tk2"  # … only as a whole token


def test_a_typo_and_traditional_characters_still_find_the_article():
    ranker = kb.Ranker([
        {"id": "recharge", "title": "直充多久到账", "questions": ["充值多久能到"], "answer": "一般 10 分钟内。"},
        {"id": "refund", "title": "退款规则", "questions": ["什么情况可以退款"], "answer": "未发货可退。"},
    ])
    assert ranker.rank("冲值多久到帐", 1)[0][0] == "recharge"
    assert ranker.rank("退款規則是什麼", 1)[0][0] == "refund"
    assert ranker.rank("tk", 1)[0][0] == "refund"


def test_ids_come_back_as_given_and_unmatched_articles_are_left_out():
    ranker = kb.Ranker([
        {"id": 7, "title": "卡密怎么兑换", "questions": [], "answer": ""},
        {"id": [1, "x"], "title": "退款规则", "questions": ["能退款吗"], "answer": "未发货可退"},
        {"id": None, "title": "客服时间", "questions": ["几点上班"]},
    ])
    assert [i for i, _ in ranker.rank("退款", 5)] == [[1, "x"]]
    assert ranker.rank("卡密兑换", 5)[0][0] == 7
    assert ranker.rank("客服几点上班", 5)[0][0] is None
    assert ranker.rank("", 5) == [] and ranker.rank("！！？", 5) == []
    assert ranker.rank("退款", 0) == []
    assert all(0 < score <= 1 for _, score in ranker.rank("退款 卡密 客服", 5))


def test_identical_articles_rank_in_the_order_given():
    article = {"title": "退款规则", "questions": ["能退款吗"], "answer": ""}
    ranker = kb.Ranker([{"id": "b", **article}, {"id": "a", **article}])
    assert [i for i, _ in ranker.rank("退款", 2)] == ["b", "a"]


def test_an_empty_knowledge_base_ranks_nothing():
    assert kb.Ranker([]).rank("退款", 3) == []


def test_unknown_options_are_refused():
    with pytest.raises(ValueError):
        kb.Ranker([], method="lsi")
    with pytest.raises(ValueError):
        kb.Ranker([{"id": 1, "title": "x"}], tokens="trigrams")


# --- zaima kb rank --------------------------------------------------------------------------------

runner = CliRunner()


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _rank(tmp_path, kb_lines, query_lines, *args):
    kb_file = _write(tmp_path / "kb.jsonl", kb_lines)
    queries = _write(tmp_path / "q.jsonl", query_lines)
    return runner.invoke(kb_app, ["rank", "--kb", str(kb_file), "--queries", str(queries), *args])


ARTICLES = [
    json.dumps({"id": 1, "title": "退款规则", "questions": ["什么情况可以退款"], "answer": "未发货的订单可以退款。"},
               ensure_ascii=False),
    json.dumps({"id": "hours", "title": "客服工作时间", "questions": ["客服几点上班"], "answer": "每天 09:00–24:00。"},
               ensure_ascii=False),
    json.dumps({"id": 2.5, "title": "直充多久到账", "questions": ["充值多久到"], "answer": "一般 10 分钟。"},
               ensure_ascii=False),
    json.dumps({"id": {"k": [1]}, "title": "卡密怎么兑换", "questions": ["卡密在哪里用"], "answer": "商城里兑换。",
                "tags": ["ignored"]}, ensure_ascii=False),
]


def test_rank_prints_one_line_per_query_with_ids_as_given(tmp_path):
    result = _rank(tmp_path, ARTICLES, [
        '{"id": "q1", "text": "我想退款"}', "", '{"id": 2, "text": "客服啥时候上班"}',
        '{"id": null, "text": "冲值多久到帐"}', '{"id": [3], "text": "卡密兑换"}', '{"id": 5, "text": "今天天气"}',
    ], "--top", "2")
    assert result.exit_code == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["id"] for line in lines] == ["q1", 2, None, [3], 5]
    assert lines[0]["ranked"][0] == 1
    assert lines[1]["ranked"][0] == "hours"
    assert lines[2]["ranked"][0] == 2.5
    assert lines[3]["ranked"][0] == {"k": [1]}
    assert lines[4]["ranked"] == []  # nothing in common: nothing listed
    assert all(len(line["ranked"]) <= 2 for line in lines)


def test_rank_runs_on_the_evaluation_files(tmp_path):
    result = runner.invoke(kb_app, ["rank", "--kb", str(EVAL_DIR / "articles.jsonl"), "--queries",
                                    str(EVAL_DIR / "queries.jsonl"), "--top", "3"])
    assert result.exit_code == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == len(load("queries.jsonl")) and lines[0]["id"] == "q01"
    assert lines[0]["ranked"][0] == "redeem-game-voucher"


@pytest.mark.parametrize("which,bad_line,reason", [
    ("kb", '{"id": 9, "title": "x", "questions": [', "invalid JSON"),
    ("kb", '[1, 2]', "JSON object"),
    ("kb", '{"title": "无 id"}', '"id"'),
    ("kb", '{"id": 9, "title": 5}', '"title"'),
    ("kb", '{"id": 9, "title": "x", "questions": "不是列表"}', '"questions"'),
    ("kb", '{"id": 9, "title": "x", "questions": ["ok", 3]}', '"questions"'),
    ("kb", '{"id": 9, "title": "x", "answer": ["a"]}', '"answer"'),
    ("kb", '{"id": 1, "title": "重复的 id"}', "duplicate id 1"),
    ("queries", '{"id": "q9"}', '"text"'),
    ("queries", '{"text": "没有 id"}', '"id"'),
    ("queries", '"just a string"', "JSON object"),
    ("queries", '{"id": "q9", "text": "x"} trailing', "invalid JSON"),
])
def test_a_malformed_line_is_reported_with_file_and_line_and_nothing_is_printed(tmp_path, which, bad_line, reason):
    queries = ['{"id": "q1", "text": "退款"}', '{"id": "q2", "text": "客服"}']
    articles = list(ARTICLES)
    if which == "kb":
        articles.insert(2, bad_line)  # line 3
    else:
        queries.insert(2, bad_line)
    result = _rank(tmp_path, articles, queries)
    assert result.exit_code == 2
    assert result.stdout == ""
    name = "kb.jsonl" if which == "kb" else "q.jsonl"
    assert f"{name}:3:" in result.stderr and reason in result.stderr


def test_invalid_utf8_and_missing_files_are_errors_too(tmp_path):
    kb_file = _write(tmp_path / "kb.jsonl", ARTICLES)
    queries = tmp_path / "q.jsonl"
    queries.write_bytes(b'{"id": 1, "text": "ok"}\n{"id": 2, "text": "\xff\xfe"}\n')
    result = runner.invoke(kb_app, ["rank", "--kb", str(kb_file), "--queries", str(queries)])
    assert (result.exit_code, result.stdout) == (2, "") and "q.jsonl:2:" in result.stderr
    result = runner.invoke(kb_app, ["rank", "--kb", str(tmp_path / "nope.jsonl"), "--queries", str(queries)])
    assert (result.exit_code, result.stdout) == (2, "") and "nope.jsonl" in result.stderr


def test_a_byte_order_mark_and_blank_lines_are_accepted(tmp_path):
    kb_file = tmp_path / "kb.jsonl"
    kb_file.write_bytes(b"\xef\xbb\xbf" + ("\n".join(ARTICLES) + "\n\n  \n").encode())
    queries = _write(tmp_path / "q.jsonl", ['{"id": 1, "text": "退款"}'])
    result = runner.invoke(kb_app, ["rank", "--kb", str(kb_file), "--queries", str(queries)])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["ranked"][0] == 1


def test_top_must_be_positive(tmp_path):
    result = _rank(tmp_path, ARTICLES, ['{"id": 1, "text": "退款"}'], "--top", "0")
    assert result.exit_code == 2 and result.stdout == ""


# --- articles in the database -----------------------------------------------------------------------


async def _create(ctx, **values):
    values = {"title": "退款规则", "questions": ["什么情况可以退款"], "answer": "未发货的订单可以退款。", **values}
    async with unit_of_work(ctx.sessions) as session:
        return await knowledge.create_article(session, ctx.clock, **values)


async def _answer(ctx, question, **kwargs):
    async with unit_of_work(ctx.sessions) as session:
        return await knowledge.answer(session, question, **kwargs)


async def test_articles_are_validated_and_cleaned(ctx):
    await make_product(ctx, "wzry-60")
    article = await _create(ctx, title="  退款   规则 ", questions=[" 能退吗 ", "能退吗", "怎么退款"],
                            answer="  第一行\r\n第二行  ", tags=["退款", "退款"], intents=["refund", "policy_question"],
                            product_skus=["wzry-60"])
    assert (article.title, article.questions, article.answer) == ("退款 规则", ["能退吗", "怎么退款"], "第一行\n第二行")
    assert (article.tags, article.intents, article.product_skus) == (["退款"], ["refund", "policy_question"], ["wzry-60"])
    assert article.active is True


@pytest.mark.parametrize("values,field,zh", [
    ({"title": ""}, "title", "标题需为 1–100 个字"),
    ({"title": "x" * 101}, "title", "标题需为 1–100 个字"),
    ({"questions": []}, "questions", "至少填写一个问题"),
    ({"questions": ["  "]}, "questions", "问题需为"),
    ({"questions": "能退吗"}, "questions", "问题必须是列表"),
    ({"answer": ""}, "answer", "答案需为 1–4000 个字"),
    ({"answer": "x" * 4001}, "answer", "答案需为 1–4000 个字"),
    ({"answer": "bad\x00"}, "answer", "控制字符"),
    ({"intents": ["refund", "refunds"]}, "intents", "未知的意图：refunds"),
    ({"product_skus": ["no-such-sku"]}, "product_skus", "商品不存在：no-such-sku"),
])
async def test_invalid_articles_are_refused_with_a_clear_message(ctx, values, field, zh):
    with pytest.raises(ValidationFailed) as err:
        await _create(ctx, **values)
    assert err.value.details["field"] == field and zh in err.value.message_zh and err.value.message_en
    async with unit_of_work(ctx.sessions) as session:
        assert await knowledge.list_articles(session) == []


async def test_update_delete_and_list(ctx):
    first = await _create(ctx)
    second = await _create(ctx, title="客服时间", questions=["客服几点上班"], answer="每天 09:00–24:00。",
                           intents=["policy_question"])
    async with unit_of_work(ctx.sessions) as session:
        updated = await knowledge.update_article(session, ctx.clock, first.id, answer="新的答案", active=False)
        assert (updated.title, updated.answer, updated.active) == ("退款规则", "新的答案", False)
        with pytest.raises(ValidationFailed):
            await knowledge.update_article(session, ctx.clock, first.id, intents=["nope"])
    async with unit_of_work(ctx.sessions) as session:
        assert [a.id for a in await knowledge.list_articles(session, active=True)] == [second.id]
        assert [a.id for a in await knowledge.list_articles(session, intent="policy_question")] == [second.id]
        await knowledge.delete_article(session, second.id)
    async with unit_of_work(ctx.sessions) as session:
        assert [a.id for a in await knowledge.list_articles(session)] == [first.id]
        with pytest.raises(NotFound):
            await knowledge.get_article(session, second.id)
        with pytest.raises(NotFound):
            await knowledge.delete_article(session, second.id)


async def test_answer_finds_the_article_and_says_nothing_for_nonsense(ctx):
    await _create(ctx)
    await _create(ctx, title="客服工作时间", questions=["客服几点上班", "晚上有人吗"], answer="每天 09:00–24:00（北京时间）。")
    hit = await _answer(ctx, "客服啥时候上班啊")
    assert hit.title == "客服工作时间" and hit.answer.startswith("每天") and 0 < hit.score <= 1
    assert await _answer(ctx, "今天天气怎么样") is None
    assert await _answer(ctx, "   ") is None


async def test_answer_on_an_empty_knowledge_base_is_none(ctx):
    assert await _answer(ctx, "退款") is None


async def test_answer_prefers_articles_for_the_customers_product_and_intent(ctx):
    await make_product(ctx, "wzry-60")
    await make_product(ctx, "steam-50")
    game = await _create(ctx, title="点券卡密怎么兑换", questions=["卡密怎么兑换"], answer="游戏商城里兑换。",
                         product_skus=["wzry-60"], intents=["usage_howto"])
    steam = await _create(ctx, title="充值卡密怎么兑换", questions=["卡密怎么兑换"], answer="Steam 客户端兑换。",
                          product_skus=["steam-50"], intents=["usage_howto"])
    assert (await _answer(ctx, "卡密怎么兑换", product_sku="wzry-60")).article_id == game.id
    assert (await _answer(ctx, "卡密怎么兑换", product_sku="steam-50")).article_id == steam.id
    rules = await _create(ctx, title="卡密规则", questions=["卡密可以退吗"], answer="发货后不退。", intents=["refund"])
    howto = await _create(ctx, title="卡密用法", questions=["卡密可以用吗"], answer="可以用。", intents=["usage_howto"])
    assert (await _answer(ctx, "卡密可以吗", intent="refund")).article_id == rules.id
    assert (await _answer(ctx, "卡密可以吗", intent="usage_howto")).article_id == howto.id


async def test_answer_sees_every_change_even_within_the_same_clock_tick(ctx):
    article = await _create(ctx, title="客服时间", questions=["客服几点上班"], answer="每天 09:00 上班。")
    assert (await _answer(ctx, "客服几点上班")).answer == "每天 09:00 上班。"  # the index is built and cached
    async with unit_of_work(ctx.sessions) as session:
        await knowledge.update_article(session, ctx.clock, article.id, answer="每天 10:00 上班。")
    assert (await _answer(ctx, "客服几点上班")).answer == "每天 10:00 上班。"
    async with unit_of_work(ctx.sessions) as session:
        await knowledge.update_article(session, ctx.clock, article.id, active=False)
    assert await _answer(ctx, "客服几点上班") is None
    async with unit_of_work(ctx.sessions) as session:
        await knowledge.delete_article(session, article.id)
    replacement = await _create(ctx, title="客服时间", questions=["客服几点上班"], answer="全天在线。")
    assert (await _answer(ctx, "客服几点上班")).article_id == replacement.id


async def test_a_change_made_by_another_process_is_seen(ctx, clock, monkeypatch):
    # The index is re-validated at most once per RECHECK_SECONDS; here: every time.
    monkeypatch.setattr(knowledge, "RECHECK_SECONDS", 0.0)
    article = await _create(ctx, title="客服时间", questions=["客服几点上班"], answer="每天 09:00 上班。")
    assert (await _answer(ctx, "客服几点上班")).answer == "每天 09:00 上班。"
    clock.advance(seconds=1)
    # Another process edits the row directly: no local notification, only the database changes.
    async with unit_of_work(ctx.sessions) as session:
        row = await session.get(KbArticle, article.id)
        row.answer, row.updated_at = "每天 10:00 上班。", clock.now()
    assert (await _answer(ctx, "客服几点上班")).answer == "每天 10:00 上班。"


# --- the demo's knowledge base ----------------------------------------------------------------------


async def test_demo_knowledge_base_seeds_once_and_answers_customers(ctx):
    from zaima.demo.seed import PRODUCTS
    from zaima.store import catalog

    async with unit_of_work(ctx.sessions) as session:
        for values in PRODUCTS:
            values = dict(values)
            await catalog.create_product(session, ctx.clock, values.pop("sku"), **values)
    async with unit_of_work(ctx.sessions) as session:
        first = await demo_kb.seed_kb(session, ctx.clock, base_url="http://shop.example:8000/")
    assert first["articles"] >= 20 and first["contacts"] == 4
    async with unit_of_work(ctx.sessions) as session:
        assert await demo_kb.seed_kb(session, ctx.clock, base_url="http://shop.example:8000") == {
            "articles": 0, "contacts": 0}
        count = len(await knowledge.list_articles(session))
        official = {(c.kind, c.normalized) for c in await session.scalars(select(OfficialContact))}
    assert count == first["articles"]
    assert official == {("email", "support@zaima.example"), ("phone", "4000000000"), ("qq", "800000000"),
                        ("url", "shop.example:8000")}
    # Every demo product has its instructions, linked to it.
    async with unit_of_work(ctx.sessions) as session:
        for values in PRODUCTS:
            assert await knowledge.list_articles(session, product_sku=values["sku"]), values["sku"]
    hit = await _answer(ctx, "王者点券卡密在哪输入", product_sku="wzry-60", intent="usage_howto")
    assert "点券卡兑换" in hit.answer
    assert "09:00–24:00" in (await _answer(ctx, "客服几点上班", intent="policy_question")).answer
    assert "/lookup" in (await _answer(ctx, "订单在哪查")).answer
    assert "验证码" in (await _answer(ctx, "有人加我QQ说是客服让我转账")).answer
    assert "30 分钟" in (await _answer(ctx, "直充多久到账")).answer


async def test_demo_knowledge_base_seeds_on_an_empty_store(ctx):
    async with unit_of_work(ctx.sessions) as session:
        result = await demo_kb.seed_kb(session, ctx.clock)
    assert result["articles"] == len(demo_kb.store_articles("")) and result["contacts"] == 4
