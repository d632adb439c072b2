"""The demo store: products of all four kinds, stock, staff, and orders in every state.

Idempotent: a second run keeps everything that exists and only reports it again. Orders are made
through the real services and the real payment protocol (signed notifies from the demo gateway's
books), so what the demo shows is what production does.
"""

from __future__ import annotations

import secrets
import string
from datetime import timedelta

from sqlalchemy import select

from zaima.bot.demo_kb import seed_kb
from zaima.config import Settings
from zaima.context import AppContext, build_context
from zaima.core.audit import Actor
from zaima.core.clock import FrozenClock
from zaima.core.money import format_yuan
from zaima.core.signing import order_access_token
from zaima.db import unit_of_work
from zaima.migrate import upgrade
from zaima.models import DemoGatewayTrade, StaffUser, StoreSetting
from zaima.staff import create_staff
from zaima.store import catalog, epay, orders, payments, refunds, stock

DEMO_MARK = "demo_seed"
OPERATOR = ("admin", "zaima-demo-2026")
AGENT = ("agent", "zaima-agent-2026")
AGENT2 = ("agent2", "zaima-agent2-2026")
SUPERVISOR = ("supervisor", "zaima-super-2026")
# Service settings, applied once (an operator's later changes are kept): a lunch break, an evening period that
# runs past midnight, the 2026 National Day holiday and its 调休 working days, and an early close on 31 Dec.
DEMO_SERVICE_MARK = "demo_service_seed"
DEMO_SERVICE_HOURS = {
    "timezone": "Asia/Shanghai",
    "weekly": {day: [["09:00", "12:00"], ["13:00", "02:00"]]
               for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")},
    "holidays": [f"2026-10-0{d}" for d in range(1, 8)],
    "workdays": {"2026-09-20": "mon", "2026-10-10": "mon"},
    "special": {"2026-12-31": [["09:00", "18:00"]]},
}
# username -> (max_concurrent, skills, languages)
DEMO_ROUTING = {AGENT[0]: (3, [], ["zh"]), AGENT2[0]: (5, ["recharge"], ["zh", "en"]),
                SUPERVISOR[0]: (2, [], ["zh", "en"])}
# Canned responses agents pick by typing "/" in the console.
CANNED = [
    ("hello", "问候", "您好，我是在线客服，请问有什么可以帮您？麻烦提供一下订单号，我马上为您查看。"),
    ("wait", "请稍等", "好的，正在为您查询，请稍等 1–2 分钟。"),
    ("reissue", "已补发", "已为您补发，请刷新订单页面查看新的卡密。给您带来不便非常抱歉！"),
    ("refund", "退款说明", "已为您提交退款，原路退回，一般 1–3 个工作日到账，请留意支付宝 / 微信的退款通知。"),
    ("recharge", "直充处理中", "您的直充订单正在由供应商处理，一般 10 分钟内到账；到账后游戏内重新登录即可看到。"),
    ("bye", "结束语", "还有其他问题随时找我们。祝您游戏愉快！"),
]

PRODUCTS = [
    dict(sku="wzry-60", kind="card_key", name="王者荣耀 60 点券卡密", name_en="Honor of Kings 60 vouchers",
         price_fen=600, sort_order=1, description="官方点券卡密，付款后自动发货。",
         usage_instructions="1. 打开王者荣耀，进入「商城」→「充值」；\n2. 选择「点券卡兑换」，粘贴卡密；\n"
                            "3. 点击兑换，点券立即到账。卡密仅可使用一次，请勿泄露。"),
    dict(sku="steam-50", kind="card_key", name="Steam 钱包充值卡 ¥50", name_en="Steam Wallet card ¥50",
         price_fen=4850, sort_order=2, description="国区 Steam 钱包充值码。",
         usage_instructions="1. 登录 Steam 客户端，点击右上角用户名 →「账户明细」；\n"
                            "2. 选择「为您的 Steam 钱包充值」→「兑换 Steam 充值卡」；\n3. 输入充值码并确认。"),
    dict(sku="ys-60", kind="recharge", name="原神 60 创世结晶直充", name_en="Genshin Impact 60 Genesis Crystals",
         price_fen=600, sort_order=3, description="填写 UID 与服务器，直充到账，一般 10 分钟内。",
         usage_instructions="充值成功后重新登录游戏即可在背包查看创世结晶；如仍看不到，请联系客服。",
         input_fields=[{"name": "uid", "label": "游戏 UID", "label_en": "Game UID", "pattern": r"[1-9]\d{8}",
                        "hint": "9 位数字，在游戏左下角"},
                       {"name": "server", "label": "服务器", "label_en": "Server", "options": ["天空岛", "世界树"]}],
         supplier_sku="YS-60"),
    dict(sku="hpjy-60", kind="recharge", name="和平精英 60 点券直充", name_en="Game for Peace 60 vouchers",
         price_fen=600, sort_order=4, auto_refund=False, description="填写 QQ 号直充，失败由客服人工处理。",
         usage_instructions="充值成功后重新登录游戏即可查看点券。",
         input_fields=[{"name": "qq", "label": "QQ 号", "label_en": "QQ number", "pattern": r"[1-9]\d{4,10}",
                        "hint": "5–11 位数字"}],
         supplier_sku="HPJY-60"),
    dict(sku="win11-pro", kind="license", name="Windows 11 专业版激活码", name_en="Windows 11 Pro licence key",
         price_fen=1990, sort_order=5, replacement_window_hours=72, description="零售版激活码，一机一码。",
         usage_instructions="1. 打开「设置」→「系统」→「激活」；\n2. 点击「更改产品密钥」，输入 25 位激活码；\n"
                            "3. 联网后自动激活。提示「已被使用」请在 72 小时内联系客服更换。"),
    dict(sku="txsp-month", kind="account", name="腾讯视频 VIP 月卡账号", name_en="Tencent Video VIP account (1 month)",
         price_fen=1500, sort_order=6, replaceable=False, description="成品账号，含账号与密码。",
         usage_instructions="使用发货的账号和密码登录腾讯视频 App；请勿修改密码和绑定手机，否则会被回收。"),
    dict(sku="wyy-vip", kind="card_key", name="网易云音乐黑胶 VIP 月卡兑换码", name_en="NetEase Cloud Music VIP code",
         price_fen=1200, sort_order=7, description="补货中，下单后补货即自动发货，也可随时申请退款。",
         usage_instructions="打开网易云音乐 →「我的」→「会员中心」→「兑换码」，输入兑换码。"),
]

STOCK = {"wzry-60": 30, "steam-50": 20, "win11-pro": 15, "txsp-month": 10, "wyy-vip": 0}


def _random_key(sku: str) -> str:
    alphabet = string.ascii_uppercase + string.digits
    if sku == "win11-pro":
        return "-".join("".join(secrets.choice(alphabet) for _ in range(5)) for _ in range(5))
    if sku == "txsp-month":
        return f"tx{secrets.randbelow(10**8):08d}----{secrets.token_urlsafe(9)}"
    if sku == "steam-50":
        return "-".join("".join(secrets.choice(alphabet) for _ in range(5)) for _ in range(3))
    return "".join(secrets.choice(alphabet) for _ in range(16))


async def _ensure_catalog(ctx: AppContext) -> None:
    async with unit_of_work(ctx.sessions) as session:
        for values in PRODUCTS:
            values = dict(values)
            sku = values.pop("sku")
            if await _exists(session, sku):
                continue
            product = await catalog.create_product(session, ctx.clock, sku, **values)
            if STOCK.get(sku):
                lines = [_random_key(sku) for _ in range(STOCK[sku])]
                await stock.import_keys(session, ctx.box, ctx.clock, product, lines, source="demo", actor="demo")
        for username, password, role, name in ((*OPERATOR, "admin", "店主"), (*AGENT, "agent", "客服小美"),
                                               (*AGENT2, "agent", "客服阿杰")):
            if not await session.scalar(select(StaffUser.id).where(StaffUser.username == username)):
                await create_staff(session, ctx.clock, username, password, role, name)
        if not await session.scalar(select(StaffUser.id).where(StaffUser.role == "supervisor")):
            await create_staff(session, ctx.clock, *SUPERVISOR, "supervisor", "主管老王")
        from zaima.conversations import canned
        from zaima.models import CannedResponse

        for shortcut, title, body in CANNED:
            if not await session.scalar(select(CannedResponse.id).where(CannedResponse.shortcut == shortcut)):
                await canned.create_canned(session, ctx.clock, ctx.settings, shortcut, title, body)


async def _ensure_service(ctx: AppContext) -> None:
    """Service hours and the demo agents' routing settings, once: a re-run keeps what the operator changed."""
    from zaima.service.calendar import SERVICE_HOURS_KEY, save_service_hours

    async with unit_of_work(ctx.sessions) as session:
        if await session.get(StoreSetting, DEMO_SERVICE_MARK) is not None:
            return
        if await session.get(StoreSetting, SERVICE_HOURS_KEY) is None:
            await save_service_hours(session, DEMO_SERVICE_HOURS)
        for username, (capacity, skills, languages) in DEMO_ROUTING.items():
            user = await session.scalar(select(StaffUser).where(StaffUser.username == username))
            if user is not None:
                user.max_concurrent, user.skills, user.languages = capacity, list(skills), list(languages)
        session.add(StoreSetting(key=DEMO_SERVICE_MARK, value={"applied": True}))


async def _exists(session, sku: str) -> bool:
    from zaima.models import Product

    return await session.scalar(select(Product.id).where(Product.sku == sku)) is not None


async def _order(ctx: AppContext, sku: str, contact: str, inputs: dict | None = None, quantity: int = 1) -> str:
    async with unit_of_work(ctx.sessions) as session:
        product = await catalog.get_product(session, sku)
        order = await orders.create_order(session, ctx, product, quantity, contact, "8888", inputs)
        # The buyer opened the pay link: the gateway now knows the trade.
        session.add(DemoGatewayTrade(
            trade_no=f"DEMO{secrets.token_hex(6)}", pid=ctx.settings.epay_pid, out_trade_no=order.order_no,
            pay_type=order.pay_type, name=product.name, money=format_yuan(order.amount_fen),
            notify_url=f"{ctx.settings.base_url}/pay/epay/notify", return_url="", status=0,
            created_at=ctx.clock.now()))
        return order.order_no


async def _gateway_pays(ctx: AppContext, order_no: str, notify: bool = True) -> None:
    async with unit_of_work(ctx.sessions) as session:
        trade = await session.scalar(select(DemoGatewayTrade).where(DemoGatewayTrade.out_trade_no == order_no))
        trade.status, trade.paid_at = 1, ctx.clock.now()
        params = epay.signed({"pid": trade.pid, "trade_no": trade.trade_no, "out_trade_no": order_no,
                              "type": trade.pay_type, "name": trade.name, "money": trade.money,
                              "trade_status": "TRADE_SUCCESS"}, ctx.settings.epay_key)
    if notify:
        await payments.handle_notify(ctx, params, "127.0.0.1")


async def _seed_orders(ctx: AppContext) -> dict[str, str]:
    made: dict[str, str] = {}
    made["已发货 delivered"] = no = await _order(ctx, "wzry-60", "demo@example.com", quantity=2)
    await _gateway_pays(ctx, no)
    made["已发货（激活码） delivered licence"] = no = await _order(ctx, "win11-pro", "13800138000")
    await _gateway_pays(ctx, no)
    made["等待补货 awaiting stock"] = no = await _order(ctx, "wyy-vip", "13800138001")
    await _gateway_pays(ctx, no)
    made["已退款 refunded"] = no = await _order(ctx, "wyy-vip", "refund@example.com")
    await _gateway_pays(ctx, no)

    async def refund(session):
        order = await orders.get_order(session, no)
        await refunds.refund_undelivered(session, ctx, order, actor=Actor("agent", "admin"),
                                         reason="缺货，顾客申请退款", idempotency_key=f"demo-refund-{no}")

    await ctx.transact(refund)
    made["直充成功 recharge succeeded"] = no = await _order(ctx, "ys-60", "13800138002",
                                                           {"uid": "123456789", "server": "天空岛"})
    await _gateway_pays(ctx, no)
    made["直充处理中 recharge processing"] = no = await _order(ctx, "ys-60", "13800138003",
                                                             {"uid": "123459999", "server": "天空岛"})
    await _gateway_pays(ctx, no)
    made["直充失败 recharge failed (auto refund)"] = no = await _order(ctx, "ys-60", "13800138004",
                                                                     {"uid": "123450000", "server": "世界树"})
    await _gateway_pays(ctx, no)
    made["直充失败 recharge failed (to staff)"] = no = await _order(ctx, "hpjy-60", "13800138005",
                                                                  {"qq": "1234560000"})
    await _gateway_pays(ctx, no)
    made["已付款但回调丢失 paid, notify lost"] = no = await _order(ctx, "steam-50", "lost@example.com")
    await _gateway_pays(ctx, no, notify=False)
    made["待付款 unpaid"] = await _order(ctx, "txsp-month", "13800138006")
    # An order opened two hours ago and never paid: the worker closes it on start.
    real_clock = ctx.clock
    ctx.clock = FrozenClock(real_clock.now() - timedelta(hours=2))
    made["已关闭 expired"] = await _order(ctx, "steam-50", "13800138007")
    ctx.clock = real_clock
    return made


async def seed_demo(settings: Settings) -> dict:
    ctx = build_context(settings)
    try:
        await upgrade(ctx.engine)
        await _ensure_catalog(ctx)
        await _ensure_service(ctx)
        async with unit_of_work(ctx.sessions) as session:
            await seed_kb(session, ctx.clock, base_url=settings.base_url)
        async with unit_of_work(ctx.sessions) as session:
            mark = await session.get(StoreSetting, DEMO_MARK)
            seeded = dict(mark.value) if mark else None
        if seeded is None:
            seeded = await _seed_orders(ctx)
            async with unit_of_work(ctx.sessions) as session:
                session.add(StoreSetting(key=DEMO_MARK, value=seeded))
        base = settings.base_url
        links = [
            (label, f"{base}/orders/{no}?t={order_access_token(settings.secret_key, no)}")
            for label, no in seeded.items()
        ]
        async with unit_of_work(ctx.sessions) as session:
            has_supervisor = await session.scalar(select(StaffUser.id).where(
                StaffUser.username == SUPERVISOR[0], StaffUser.role == "supervisor")) is not None
        return {"operator": OPERATOR[0], "password": OPERATOR[1], "agent": AGENT[0], "agent_password": AGENT[1],
                "agent2": AGENT2[0], "agent2_password": AGENT2[1],
                "supervisor": SUPERVISOR[0] if has_supervisor else None, "supervisor_password": SUPERVISOR[1],
                "orders": links}
    finally:
        await ctx.close()
