"""Storefront pages through the in-process ASGI client, on SQLite and PostgreSQL: what is rendered,
what is kept on an error, and that a card key appears nowhere but on its owner's order page."""

from __future__ import annotations

import re

from sqlalchemy import func, select

from tests.store.helpers import add_stock, make_order, make_product, notify_params
from zaima.core.ids import display_order_no
from zaima.core.signing import order_access_token
from zaima.db import unit_of_work
from zaima.models import Order
from zaima.store import orders, payments

RECHARGE_FIELDS = [
    {"name": "uid", "label": "游戏 UID", "label_en": "Game UID", "pattern": r"[1-9]\d{8}", "hint": "9 位数字，在游戏左下角"},
    {"name": "server", "label": "服务器", "options": ["天空岛", "世界树"]},
]
SECRET = "SECRET-KEY-7Q3X-9DMH"


def token(settings, order_no: str) -> str:
    return order_access_token(settings.secret_key, order_no)


async def delivered_order(ctx, secret: str = SECRET, kind: str = "card_key", sku: str = "card-1",
                          contact: str = "buyer@example.com"):
    product = await make_product(ctx, sku=sku, kind=kind, usage_instructions="第一步\n第二步")
    await add_stock(ctx, product, [secret])
    order = await make_order(ctx, product, contact=contact)
    assert await payments.handle_notify(ctx, notify_params(order)) == "accepted"
    return product, order


async def order_count(ctx) -> int:
    async with unit_of_work(ctx.sessions) as session:
        return await session.scalar(select(func.count()).select_from(Order))


def error_block(html: str, field: str) -> str:
    match = re.search(rf'<p class="field-error" id="err-{field}" role="alert">(.*?)</p>', html)
    return match.group(1) if match else ""


async def test_home_lists_products_with_kind_price_and_stock_state(client, ctx):
    stocked = await make_product(ctx, sku="card-1", price_fen=4850)
    await add_stock(ctx, stocked, ["K-1", "K-2"])
    await make_product(ctx, sku="empty-1", kind="license", price_fen=1990)
    await make_product(ctx, sku="sold-out", kind="account", allow_backorder=False)
    await make_product(ctx, sku="ys-60", kind="recharge", input_fields=RECHARGE_FIELDS)
    response = await client.get("/")
    assert response.status_code == 200
    html = response.text
    assert '<html lang="zh-CN">' in html
    assert "¥48.50" in html and "有货 2" in html
    assert "缺货（可预订，补货自动发货）" in html
    assert ">缺货<" in html
    for label in ("卡密", "激活码", "账号", "直充"):
        assert label in html
    assert 'href="/lookup"' in html and "订单查询" in html
    assert "K-1" not in html


async def test_product_page_renders_recharge_inputs(client, ctx):
    await make_product(ctx, sku="ys-60", kind="recharge", input_fields=RECHARGE_FIELDS, min_quantity=1,
                       max_quantity=5)
    response = await client.get("/p/ys-60")
    assert response.status_code == 200
    html = response.text
    assert '<label for="in_uid">游戏 UID <span class="req">*</span></label>' in html
    assert 'name="in_uid"' in html and r'pattern="[1-9]\d{8}"' in html
    assert "9 位数字，在游戏左下角" in html
    assert '<select id="in_server" name="in_server"' in html
    assert '<option value="天空岛">天空岛</option>' in html and '<option value="世界树">世界树</option>' in html
    assert 'min="1"' in html and 'max="5"' in html
    for pay_type in ("支付宝", "微信支付", "QQ钱包"):
        assert pay_type in html
    assert 'action="/p/ys-60/buy"' in html


async def test_unknown_product_is_a_404_page(client):
    response = await client.get("/p/no-such-thing")
    assert response.status_code == 404
    assert "没有找到这个页面" in response.text


async def test_buy_with_a_bad_contact_shows_the_error_by_the_field_and_keeps_the_input(client, ctx):
    await make_product(ctx, sku="ys-60", kind="recharge", input_fields=RECHARGE_FIELDS)
    response = await client.post("/p/ys-60/buy", data={
        "quantity": "2", "contact": "not-a-contact", "query_password": "secret-pw", "pay_type": "wxpay",
        "in_uid": "123456789", "in_server": "世界树",
    })
    assert response.status_code == 422
    html = response.text
    assert error_block(html, "contact") == "请填写正确的邮箱或 11 位手机号，用于查询订单和接收通知"
    assert 'value="not-a-contact"' in html
    assert 'value="123456789"' in html
    assert '<option value="世界树" selected>' in html
    assert re.search(r'value="wxpay"\s+checked', html)
    assert re.search(r'id="quantity"[^>]*value="2"', html)
    assert "secret-pw" not in html  # a password is never echoed back
    assert await order_count(ctx) == 0


async def test_buy_with_a_bad_recharge_input_points_at_that_input(client, ctx):
    await make_product(ctx, sku="ys-60", kind="recharge", input_fields=RECHARGE_FIELDS)
    response = await client.post("/p/ys-60/buy", data={
        "quantity": "1", "contact": "buyer@example.com", "pay_type": "alipay", "in_uid": "12", "in_server": "天空岛",
    })
    assert response.status_code == 422
    assert error_block(response.text, "uid").startswith("游戏 UID格式不正确")
    assert 'value="buyer@example.com"' in response.text


async def test_buy_in_english_shows_the_english_message(client, ctx):
    await make_product(ctx, sku="card-1")
    response = await client.post("/p/card-1/buy?lang=en", data={"quantity": "99", "contact": "buyer@example.com"})
    assert response.status_code == 422
    assert error_block(response.text, "quantity") == "quantity must be between 1 and 10"


async def test_buy_places_the_order_sets_the_cookie_and_hands_off_to_payment(client, ctx, settings):
    product = await make_product(ctx, sku="card-1", price_fen=600)
    await add_stock(ctx, product, ["K-1", "K-2"])
    response = await client.post("/p/card-1/buy", data={
        "quantity": "2", "contact": "13800138000", "pay_type": "qqpay"})
    assert response.status_code == 303
    order_no = response.headers["location"].rsplit("/", 1)[1]
    assert response.headers["location"] == f"/pay/{order_no}"
    assert client.cookies.get(f"zo_{order_no}") == token(settings, order_no)

    page = await client.get(f"/pay/{order_no}")
    assert page.status_code == 200
    assert "¥12.00" in page.text and "QQ钱包" in page.text and display_order_no(order_no) in page.text
    assert "前往支付" in page.text and "我已付款" in page.text
    assert f"{settings.epay_gateway.rstrip('/')}/submit.php?" in page.text
    assert 'data-remaining="900"' in page.text  # the clock is frozen: 15 minutes to go
    assert page.headers["cache-control"] == "no-store"


async def test_pay_page_of_a_paid_order_goes_to_the_order_page(client, ctx, settings):
    _, order = await delivered_order(ctx)
    response = await client.get(f"/pay/{order.order_no}?t={token(settings, order.order_no)}")
    assert response.status_code == 303
    assert response.headers["location"] == f"/orders/{order.order_no}"


async def test_order_page_without_a_token_redirects_to_lookup(client, ctx, settings):
    _, order = await delivered_order(ctx)
    for url in (f"/orders/{order.order_no}", f"/orders/{order.order_no}?t=forged-token",
                f"/pay/{order.order_no}"):
        response = await client.get(url)
        assert response.status_code == 303, url
        assert response.headers["location"] == f"/lookup?order_no={order.order_no}&verify=1"
    # An order that does not exist looks exactly the same.
    missing = await client.get("/orders/ZZZZZZZZZZZZ?t=" + token(settings, "ZZZZZZZZZZZZ"))
    assert missing.status_code == 303
    assert missing.headers["location"] == "/lookup?order_no=ZZZZZZZZZZZZ&verify=1"
    lookup = await client.get(missing.headers["location"])
    assert 'value="ZZZZ-ZZZZ-ZZZZ"' in lookup.text
    assert "这个订单链接没有带上有效的查看凭证" in lookup.text  # it says why it asks
    assert "这个订单链接" not in (await client.get("/lookup")).text


async def test_a_non_owner_never_sees_the_key(client, ctx, settings):
    product, order = await delivered_order(ctx)
    other = await make_order(ctx, product, contact="other@example.com")
    # The visitor owns a different order: that cookie opens nothing else.
    client.cookies.set(f"zo_{other.order_no}", token(settings, other.order_no))
    client.cookies.set(f"zo_{order.order_no}", token(settings, other.order_no))
    visits = [
        client.get(f"/orders/{order.order_no}"),
        client.get(f"/orders/{order.order_no}?t={token(settings, other.order_no)}"),
        client.get(f"/pay/{order.order_no}"),
        client.get(f"/lookup?order_no={order.order_no}"),
        client.post("/lookup", data={"order_no": order.order_no, "by": "contact", "contact": "other@example.com"}),
        client.get(f"/support?order={order.order_no}"),
        client.get("/"),
        client.get(f"/p/{product.sku}"),
        client.get(f"/orders/{other.order_no}"),
    ]
    for visit in visits:
        response = await visit
        assert SECRET not in response.text
        assert SECRET not in response.headers.get("location", "")

    # The owner, with the link from checkout, sees it, and the cookie keeps it open afterwards.
    client.cookies.clear()
    owner = await client.get(f"/orders/{order.order_no}?t={token(settings, order.order_no)}")
    assert owner.status_code == 200 and SECRET in owner.text
    assert owner.headers["cache-control"] == "no-store"
    again = await client.get(f"/orders/{order.order_no}")
    assert again.status_code == 200 and SECRET in again.text


async def test_order_page_shows_status_timeline_instructions_and_contact_button(client, ctx, settings):
    _, order = await delivered_order(ctx)
    html = (await client.get(f"/orders/{order.order_no}?t={token(settings, order.order_no)}")).text
    assert '<h1 class="status-text" data-status-text>已发货</h1>' in html
    assert display_order_no(order.order_no) in html
    assert "已收到付款" in html and "订单已创建" in html and "北京时间" in html
    assert '<p class="instructions">第一步\n第二步</p>' in html
    assert f'href="/support?order={order.order_no}"' in html and "联系客服" in html
    assert "data-live" not in html  # nothing left to wait for: no polling


async def test_account_keys_show_account_and_password_separately(client, ctx, settings):
    _, order = await delivered_order(ctx, secret="tx12345678----pa55word", kind="account", sku="acct-1")
    html = (await client.get(f"/orders/{order.order_no}?t={token(settings, order.order_no)}")).text
    assert re.search(r'<span class="key-label">账号</span>\s*<code class="key-value"[^>]*>tx12345678</code>', html)
    assert re.search(r'<span class="key-label">密码</span>\s*<code class="key-value"[^>]*>pa55word</code>', html)
    assert "----" not in html


async def test_awaiting_stock_order_explains_what_happens_next_and_keeps_polling(client, ctx, settings):
    product = await make_product(ctx, sku="wyy-vip")
    order = await make_order(ctx, product)
    await payments.handle_notify(ctx, notify_params(order))
    html = (await client.get(f"/orders/{order.order_no}?t={token(settings, order.order_no)}")).text
    assert "已付款，等待补货" in html
    assert "补货后系统会自动发货" in html and "申请退款" in html
    assert 'data-live="1"' in html


async def test_lookup_with_the_right_contact_opens_the_order(client, ctx, settings):
    _, order = await delivered_order(ctx, contact="13800138000")
    wrong = await client.post("/lookup", data={"order_no": order.order_no, "by": "contact", "contact": "13900000000"})
    unknown = await client.post("/lookup", data={"order_no": "ZZZZ-ZZZZ-ZZZZ", "by": "contact",
                                                 "contact": "13800138000"})
    for response in (wrong, unknown):
        assert response.status_code == 404
        assert orders.LookupFailed.message_zh in response.text
    right = await client.post("/lookup", data={"order_no": display_order_no(order.order_no).lower(), "by": "contact",
                                               "contact": "+86 138 0013 8000"})
    assert right.status_code == 303
    assert right.headers["location"] == f"/orders/{order.order_no}"
    assert client.cookies.get(f"zo_{order.order_no}") == token(settings, order.order_no)
    assert SECRET in (await client.get(right.headers["location"])).text


async def test_lookup_by_query_password(client, ctx):
    product = await make_product(ctx, sku="card-1")
    order = await make_order(ctx, product, query_password="pass-1234")
    wrong = await client.post("/lookup", data={"order_no": order.order_no, "by": "password", "query_password": "nope",
                                               "contact": "buyer@example.com"})
    assert wrong.status_code == 404  # the contact typed in the hidden tab is not used
    right = await client.post("/lookup", data={"order_no": order.order_no, "by": "password",
                                               "query_password": "pass-1234"})
    assert right.status_code == 303


async def test_support_page_shows_the_order_number_to_quote(client):
    html = (await client.get("/support?order=k7q3-9xdm-2pht")).text
    assert "K7Q3-9XDM-2PHT" in html and "请附上这个订单号" in html
    assert "客服时间" in html and "support@zaima.example" in html
    plain = (await client.get("/support?order=<script>")).text
    assert "<script>" not in plain and "您的订单号" not in plain


async def test_language_switch_is_remembered_in_a_cookie(client, ctx):
    await make_product(ctx, sku="card-1")
    english = await client.get("/?lang=en")
    assert '<html lang="en">' in english.text and "My order" in english.text
    assert client.cookies.get("zaima_lang") == "en"
    assert '<html lang="en">' in (await client.get("/p/card-1")).text
    back = await client.get("/?lang=zh-CN")
    assert '<html lang="zh-CN">' in back.text and "订单查询" in back.text


async def test_everything_the_store_typed_is_escaped(client, ctx):
    await make_product(ctx, sku="card-1", description='<script>alert("x")</script>')
    for url in ("/", "/p/card-1"):
        html = (await client.get(url)).text
        assert '<script>alert("x")</script>' not in html
        assert "&lt;script&gt;" in html


async def test_buy_with_a_nonsense_quantity_names_the_product_limits(client, ctx):
    await make_product(ctx, sku="card-1", max_quantity=5)
    for quantity in ("0", "abc", "5000"):
        response = await client.post("/p/card-1/buy", data={"quantity": quantity, "contact": "buyer@example.com"})
        assert response.status_code == 422, quantity
        assert error_block(response.text, "quantity") in ("购买数量需在 1–5 之间", "请填写正确的购买数量")


async def test_policy_page_shows_the_store_settings(client, ctx):
    from zaima.db import unit_of_work
    from zaima.store.policy import save_store_after_sales

    r = await client.get("/policy")
    assert r.status_code == 200 and "24 小时内反馈卡密无效" in r.text and "30 分钟" in r.text
    async with unit_of_work(ctx.sessions) as session:
        await save_store_after_sales(session, {"replacement_window_hours": 48, "replaceable": True})
    r = await client.get("/policy")
    assert "48 小时内反馈卡密无效" in r.text
    assert "After-sales policy" in (await client.get("/policy?lang=en")).text


async def test_service_hours_on_the_pages_come_from_the_service_settings(client, ctx):
    from zaima.service.calendar import save_service_hours
    from zaima.web.pages import forget_service_facts

    forget_service_facts()
    assert "每天 09:00–23:00（北京时间）" in (await client.get("/support")).text
    async with unit_of_work(ctx.sessions) as session:
        await save_service_hours(session, {"weekly": {d: [["10:00", "12:00"], ["13:00", "02:00"]] for d in
                                                      ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}})
    forget_service_facts()  # what the admin API does after a save; other nodes catch up within seconds
    html = (await client.get("/support")).text
    assert "每天 10:00–12:00, 13:00–02:00（北京时间）" in html and "30 分钟内回复" in html
    assert "Every day 10:00–12:00, 13:00–02:00 (Beijing time)" in (await client.get("/?lang=en")).text
