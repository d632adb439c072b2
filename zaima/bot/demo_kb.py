"""The demo store's knowledge base and official contacts, in the customer's own words.

Idempotent: an article whose title exists and a contact already registered are left alone, so a second
run adds nothing (and an operator's edits survive). How to use each product is taken from the product
itself (its usage instructions), so the article and the product page never disagree.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from zaima.bot import contacts, knowledge
from zaima.core.errors import ValidationFailed
from zaima.models import KbArticle, Product

DEFAULT_BASE_URL = "http://127.0.0.1:8000"

# How customers ask for each demo product's instructions (zaima.demo.seed.PRODUCTS).
PRODUCT_QUESTIONS: dict[str, tuple[str, list[str]]] = {
    "wzry-60": ("王者荣耀点券卡密怎么兑换",
                ["王者荣耀点券卡密在哪里兑换", "王者点券卡怎么用", "点券卡密输到哪里", "买的点券怎么充进游戏"]),
    "steam-50": ("Steam 钱包充值卡怎么兑换",
                 ["Steam 充值码在哪里输入", "Steam 钱包卡怎么用", "steam 卡怎么充到余额"]),
    "ys-60": ("原神创世结晶直充怎么查看",
              ["原神直充到账了在哪看", "创世结晶充到哪里了", "原神直充要填什么", "原神 UID 在哪里看"]),
    "hpjy-60": ("和平精英点券直充怎么查看",
                ["和平精英点券充好了在哪看", "和平精英直充要填什么", "和平精英点券怎么到账"]),
    "win11-pro": ("Windows 11 激活码怎么激活",
                  ["Win11 专业版密钥怎么用", "激活码在哪里输入", "系统怎么激活", "Windows 产品密钥怎么填"]),
    "txsp-month": ("腾讯视频 VIP 账号怎么使用",
                   ["买的腾讯视频会员账号怎么登录", "视频会员账号可以改密码吗", "账号密码在哪里看"]),
    "wyy-vip": ("网易云音乐黑胶 VIP 兑换码怎么用",
                ["网易云会员兑换码在哪里用", "黑胶会员码怎么兑换", "音乐会员兑换码在哪输入"]),
}


def store_articles(base_url: str) -> list[dict]:
    """Store-wide articles; the rules follow the default after-sales policy (zaima.store.policy)."""
    return [
        dict(title="退款规则", intents=["refund", "policy_question"], tags=["退款", "售后"],
             questions=["什么情况可以退款", "已经发货的卡密能退吗", "买了不想要了能退吗", "退款政策是什么"],
             answer="· 付款后还没有发货（缺货、直充失败）的订单，可以全额退款，原路退回；缺货时也可以选择等待补货，补货后自动发货。\n"
                    "· 直充失败的订单系统会自动退款，不需要申请。\n"
                    "· 卡密、激活码、成品账号一经发货就无法退款（虚拟商品发出后无法收回）。"
                    "如果卡密本身有问题，请按「卡密无效」的方式申请更换。\n"
                    "· 退款原路退回到您的支付宝或微信，一般 1–3 个工作日到账。"),
        dict(title="退款多久到账", intents=["refund", "policy_question"], tags=["退款"],
             questions=["退款什么时候到账", "钱退到哪里了", "退款一直没收到"],
             answer="退款会原路退回到付款的支付宝或微信账户，一般 1–3 个工作日到账，请留意支付平台的退款通知。"
                    "超过 3 个工作日还没到账，请把订单号发给我们查询。"),
        dict(title="卡密无效或提示已使用", intents=["invalid_code", "policy_question"], tags=["卡密", "换货"],
             questions=["卡密提示已被使用", "激活码无效怎么办", "兑换码显示错误", "卡密用不了"],
             answer="请在发货后 24 小时内（部分商品如激活码为 72 小时，以商品页为准）把订单号和兑换失败的截图发给我们。"
                    "第一次反馈、核实无误后，会为您更换一张新的卡密；超过时限或不支持更换的商品（如成品账号）由人工客服处理。"),
        dict(title="客服工作时间", intents=["policy_question"], tags=["客服", "时间"],
             questions=["客服几点上班", "晚上有人吗", "周末客服在不在", "人工客服什么时候在线"],
             answer="人工客服每天 09:00–24:00（北京时间）在线，节假日照常。工作时间内一般 10 分钟内回复；"
                    "非工作时间的留言，次日 09:00 起按顺序处理。自动发货 24 小时不停。"),
        dict(title="付款后多久发货", intents=["policy_question", "order_status"], tags=["发货", "到账"],
             questions=["卡密什么时候发", "下单后多久能拿到", "是自动发货吗", "直充多久到账"],
             answer="卡密、激活码和成品账号都是付款后自动发货，几秒内就能在订单页看到。"
                    "直充一般 10 分钟内到账，高峰期最长 30 分钟；超过 30 分钟还没到账，我们会加急为您处理。"),
        dict(title="怎么查询订单", intents=["order_status", "usage_howto"], tags=["订单", "查询"],
             questions=["订单在哪里查", "怎么找回我的订单", "没登录能查订单吗", "付款后卡密在哪里看"],
             answer=f"打开订单查询页面 {base_url}/lookup ，输入订单号，再用下单时填写的邮箱/手机号或查询密码验证，"
                    "就能看到订单状态和卡密，不需要注册登录。"),
        dict(title="查询密码忘了怎么办", intents=["order_status", "policy_question"], tags=["订单", "查询密码"],
             questions=["忘记查询密码", "查询密码是什么", "订单密码找不到了"],
             answer="查询密码是下单时您自己设置的（选填）。忘了的话，在订单查询页选择「用联系方式」，"
                    "输入下单时填写的邮箱或手机号即可；都不记得请带上付款截图联系人工客服。"),
        dict(title="防骗提醒", intents=["contact_verify", "policy_question"], tags=["防骗", "安全"],
             questions=["有人自称客服加我", "有人让我转账退款", "对方要验证码是真的吗", "有人说退款要我扫码"],
             answer="我们绝不会主动加您的 QQ 或微信，绝不会索要短信验证码、支付密码，也不会让您转账、扫码或下载软件来“退款”。"
                    "遇到这种情况一律是骗子，请不要操作。不确定的号码或链接，可以直接发给我们核实。"),
        dict(title="官方联系方式", intents=["contact_verify", "policy_question"], tags=["客服", "联系"],
             questions=["你们的客服电话是多少", "怎么联系你们", "有官方 QQ 吗", "客服邮箱是什么"],
             answer=f"官方客服邮箱 support@zaima.example（全天可发，工作时间内处理）；客服电话 400-000-0000（仅工作时间接听）；"
                    f"QQ 客服 800000000（添加时请备注订单号）；官方网站 {base_url} 。除此之外的号码和链接都不是我们。"),
        dict(title="付款了订单还是未支付", intents=["payment_issue"], tags=["支付"],
             questions=["已扣款但订单显示待付款", "付款成功没跳转", "支付完了没反应", "钱扣了订单没变"],
             answer="可能是支付平台的通知延迟了。请在支付页点「我已付款」，系统会向支付平台查询，确认到账后自动发货。"
                    "仍未更新的话，把订单号和付款截图发给我们，核实后为您处理；订单关闭后才付的款也不会丢。"),
        dict(title="重复扣款怎么办", intents=["payment_issue"], tags=["支付", "退款"],
             questions=["付了两次钱", "被扣了两遍", "多付的钱怎么退"],
             answer="多付的那一笔会原路退回。请把两笔付款记录的截图和订单号发给我们，核实后 1–3 个工作日内退回。"),
        dict(title="支持哪些付款方式", intents=["payment_issue", "policy_question"], tags=["支付"],
             questions=["可以用微信付吗", "支付宝能付款吗", "能用信用卡吗"],
             answer="支持支付宝、微信支付和 QQ 钱包。"),
        dict(title="订单超时关闭", intents=["order_status", "policy_question"], tags=["订单", "支付"],
             questions=["订单怎么自动取消了", "没付款订单关闭了", "付款有时间限制吗"],
             answer="下单后 15 分钟内未付款，订单会自动关闭并释放库存，重新下单即可。如果订单关闭后才付的款，钱不会丢，"
                    "请把订单号发给我们处理。"),
        dict(title="商品缺货怎么办", intents=["not_received", "policy_question"], tags=["缺货", "补货"],
             questions=["显示补货中还能买吗", "付了钱但是没货了", "等待补货要多久"],
             answer="缺货时仍可下单，补货后系统按付款顺序自动发货；不想等的话可以随时申请退款，未发货的订单全额原路退回。"),
        dict(title="账号登不上或被封", intents=["account_issue"], tags=["账号"],
             questions=["买的号登录不了", "账号被冻结了怎么办", "提示账号异常无法登录", "账号密码不对"],
             answer="请先确认没有修改过密码、绑定手机或实名信息（修改后账号会被回收，无法售后）。"
                    "然后把订单号和登录提示的截图发给我们，人工客服核实后为您处理。"),
        dict(title="怎么联系人工客服", intents=["human"], tags=["人工"],
             questions=["怎么转人工", "我要找真人", "机器人解决不了"],
             answer="在聊天里发送「人工」即可转给人工客服；工作时间（每天 09:00–24:00）内一般 10 分钟内回复。"),
    ]


def official_contacts(base_url: str) -> list[tuple[str, str, str]]:
    """(kind, value, label), matching the support page (zaima.web.pages.SUPPORT_INFO)."""
    return [
        ("email", "support@zaima.example", "客服邮箱"),
        ("phone", "400-000-0000", "客服电话"),
        ("qq", "800000000", "QQ 客服"),
        ("url", base_url, "官方网站"),
    ]


async def seed_kb(session: AsyncSession, clock, base_url: str = DEFAULT_BASE_URL) -> dict[str, int]:
    """Create the demo articles and official contacts that are missing; returns how many were added."""
    base_url = base_url.rstrip("/")
    titles = set(await session.scalars(select(KbArticle.title)))
    products = {p.sku: p for p in await session.scalars(select(Product))}
    articles: list[dict] = []
    for sku, (title, questions) in PRODUCT_QUESTIONS.items():
        product = products.get(sku)
        if product is None or not product.usage_instructions:
            continue
        answer = f"{product.name}的使用方法：\n{product.usage_instructions}"
        if product.kind == "recharge":
            answer += "\n直充一般 10 分钟内到账，最长 30 分钟。"
        articles.append(dict(title=title, questions=questions, answer=answer, intents=["usage_howto"],
                             product_skus=[sku], tags=[product.name] if len(product.name) <= knowledge.TAG_MAX else []))
    articles += store_articles(base_url)
    added_articles = 0
    for values in articles:
        if values["title"] in titles:
            continue
        await knowledge.create_article(session, clock, **values)
        titles.add(values["title"])
        added_articles += 1
    added_contacts = 0
    for kind, value, label in official_contacts(base_url):
        if (await contacts.check(session, kind, value)).official:
            continue  # already registered (or covered: a registered site vouches for its pages)
        try:
            await contacts.add_contact(session, clock, kind, value, label)
        except ValidationFailed:  # e.g. an unusual base URL: the rest of the demo still seeds
            continue
        added_contacts += 1
    return {"articles": added_articles, "contacts": added_contacts}
