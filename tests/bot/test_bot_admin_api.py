"""The operator API for the knowledge base and the official contacts: staff read, admins write, and
errors come in the app's shape with zh-CN and English messages."""

from __future__ import annotations

import httpx
import pytest

from tests.store.helpers import make_product
from zaima.app import create_app
from zaima.bot.admin_api import router
from zaima.db import unit_of_work
from zaima.staff import create_staff

ADMIN = ("boss", "boss-password-1")
AGENT = ("xiaomei", "agent-password-1")
KB = "/api/v1/admin/kb/articles"
CONTACTS = "/api/v1/admin/contacts"


@pytest.fixture
async def api(settings, ctx):
    """The app with the bot admin router (mounted here until create_app includes it)."""
    app = create_app(settings, ctx=ctx, migrate=False)
    if not any(getattr(route, "path", "") == KB for route in app.routes):
        app.include_router(router)
    async with unit_of_work(ctx.sessions) as session:
        await create_staff(session, ctx.clock, *ADMIN, role="admin")
        await create_staff(session, ctx.clock, *AGENT, role="agent")
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://zaima.test") as client:
        yield client


ARTICLE = {"title": "客服工作时间", "questions": ["客服几点上班", "晚上有人吗"], "answer": "每天 09:00–24:00（北京时间）。",
           "tags": ["客服"], "intents": ["policy_question"]}


async def test_article_lifecycle(api, ctx):
    await make_product(ctx, "wzry-60")
    created = await api.post(KB, json=ARTICLE, auth=ADMIN)
    assert created.status_code == 201, created.text
    article = created.json()
    assert {k: article[k] for k in ARTICLE} == ARTICLE
    assert article["active"] is True and article["product_skus"] == [] and article["id"]
    url = f"{KB}/{article['id']}"

    assert (await api.get(url, auth=AGENT)).json() == article
    listed = await api.get(KB, auth=AGENT)
    assert listed.status_code == 200 and listed.json() == {"articles": [article]}

    replaced = await api.put(url, json={"title": "点券卡密怎么兑换", "questions": ["点券卡密在哪兑换"],
                                        "answer": "商城 → 充值 → 点券卡兑换。", "product_skus": ["wzry-60"],
                                        "intents": ["usage_howto"]}, auth=ADMIN)
    assert replaced.status_code == 200, replaced.text
    body = replaced.json()
    assert (body["title"], body["tags"], body["product_skus"], body["intents"]) == (
        "点券卡密怎么兑换", [], ["wzry-60"], ["usage_howto"])  # PUT replaces: the tags left out are gone
    assert [a["id"] for a in (await api.get(KB, params={"product_sku": "wzry-60"}, auth=AGENT)).json()["articles"]] \
        == [article["id"]]
    assert (await api.get(KB, params={"intent": "policy_question"}, auth=AGENT)).json()["articles"] == []

    tried = await api.post("/api/v1/admin/kb/answer", json={"question": "王者点券卡密在哪兑换", "product_sku": "wzry-60"},
                           auth=AGENT)
    assert tried.json()["hit"]["article_id"] == article["id"]
    assert (await api.post("/api/v1/admin/kb/answer", json={"question": "今天天气怎么样"}, auth=AGENT)).json() == {
        "hit": None}

    deleted = await api.delete(url, auth=ADMIN)
    assert deleted.status_code == 204 and deleted.content == b""
    missing = await api.get(url, auth=AGENT)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert (await api.delete(url, auth=ADMIN)).status_code == 404
    assert (await api.put(url, json=ARTICLE, auth=ADMIN)).status_code == 404


async def test_only_admins_write_and_only_staff_read(api):
    assert (await api.get(KB)).status_code == 401
    assert (await api.get(KB, auth=(ADMIN[0], "wrong-password"))).status_code == 401
    denied = await api.post(KB, json=ARTICLE, auth=AGENT)
    assert denied.status_code == 403 and denied.json()["error"]["message"] == "此操作需要管理员权限"
    article = (await api.post(KB, json=ARTICLE, auth=ADMIN)).json()
    assert (await api.put(f"{KB}/{article['id']}", json=ARTICLE, auth=AGENT)).status_code == 403
    assert (await api.delete(f"{KB}/{article['id']}", auth=AGENT)).status_code == 403
    assert (await api.get(CONTACTS)).status_code == 401
    assert (await api.post(CONTACTS, json={"kind": "qq", "value": "800000000"}, auth=AGENT)).status_code == 403


@pytest.mark.parametrize("change,field,message", [
    ({"title": ""}, "title", "标题需为 1–100 个字（当前 0 个）"),
    ({"questions": []}, "questions", "至少填写一个问题（顾客会怎么问）"),
    ({"answer": "x" * 4001}, "answer", "答案需为 1–4000 个字（当前 4001 个）"),
    ({"intents": ["refunds"]}, "intents", "未知的意图：refunds"),
    ({"product_skus": ["nope"]}, "product_skus", "商品不存在：nope"),
])
async def test_invalid_articles_get_the_app_error_shape(api, change, field, message):
    response = await api.post(KB, json={**ARTICLE, **change}, auth=ADMIN)
    assert response.status_code == 422
    error = response.json()["error"]
    assert (error["code"], error["message"], error["details"]["field"]) == ("invalid_input", message, field)
    assert error["message_en"]
    assert (await api.get(KB, auth=ADMIN)).json() == {"articles": []}


async def test_a_body_of_the_wrong_shape_is_refused_in_chinese_first(api):
    response = await api.post(KB, json={"title": "x", "questions": "能退吗"}, auth=ADMIN)
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith("请求内容有误")


async def test_contacts_lifecycle(api):
    created = await api.post(CONTACTS, json={"kind": "phone", "value": "400-000-0000", "label": "客服电话"}, auth=ADMIN)
    assert created.status_code == 201, created.text
    contact = created.json()
    assert {k: contact[k] for k in ("kind", "value", "normalized", "label")} == {
        "kind": "phone", "value": "400-000-0000", "normalized": "4000000000", "label": "客服电话"}
    await api.post(CONTACTS, json={"kind": "url", "value": "https://www.shop.com/"}, auth=ADMIN)

    duplicate = await api.post(CONTACTS, json={"kind": "phone", "value": "+86 400 000 0000"}, auth=ADMIN)
    assert duplicate.status_code == 409
    assert duplicate.json()["error"]["message"] == "电话 400-000-0000 已登记"

    listed = (await api.get(CONTACTS, auth=AGENT)).json()["contacts"]
    assert [(c["kind"], c["normalized"]) for c in listed] == [("phone", "4000000000"), ("url", "shop.com")]
    assert [c["kind"] for c in (await api.get(CONTACTS, params={"kind": "url"}, auth=AGENT)).json()["contacts"]] \
        == ["url"]

    checked = await api.get(f"{CONTACTS}/check", params={"kind": "url", "value": "shop.com/kf"}, auth=AGENT)
    assert checked.json() == {"official": True, "kind": "url", "value": "shop.com/kf", "normalized": "shop.com/kf",
                              "label": ""}
    flagged = await api.get(f"{CONTACTS}/check", params={"kind": "url", "value": "shop.com.evil.top"}, auth=AGENT)
    assert flagged.json()["official"] is False

    assert (await api.delete(f"{CONTACTS}/{contact['id']}", auth=ADMIN)).status_code == 204
    assert (await api.delete(f"{CONTACTS}/{contact['id']}", auth=ADMIN)).status_code == 404
    assert [c["kind"] for c in (await api.get(CONTACTS, auth=AGENT)).json()["contacts"]] == ["url"]


@pytest.mark.parametrize("body,message", [
    ({"kind": "phone", "value": "call me"}, "电话号码只能包含数字、空格、短横线和 +86 区号，例如 400-000-0000"),
    ({"kind": "qq", "value": "08000"}, "QQ 号应为 5–12 位数字，且不以 0 开头"),
    ({"kind": "email", "value": "support"}, "邮箱格式不正确，例如 support@example.com"),
    ({"kind": "url", "value": "http://shop.com@evil.top"}, "网址中不能有「@」前的用户名：这是仿冒网站的常见手法"),
    ({"kind": "fax", "value": "010-8888-8888"}, "联系方式类型应为 phone、qq、wechat、email 或 url"),
])
async def test_malformed_contacts_are_refused_with_a_clear_message(api, body, message):
    response = await api.post(CONTACTS, json=body, auth=ADMIN)
    assert response.status_code == 422
    assert response.json()["error"]["message"] == message and response.json()["error"]["message_en"]
    assert (await api.get(CONTACTS, auth=ADMIN)).json() == {"contacts": []}
