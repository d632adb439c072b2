"""What the bot says, in plain zh-CN. Every text is a function of live facts, never a promise the
store's data does not back."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from zaima.core.ids import display_order_no
from zaima.core.money import format_yuan
from zaima.store.views import STATUS_TEXT

SHANGHAI = ZoneInfo("Asia/Shanghai")


def bj(when: datetime | None) -> str:
    return when.astimezone(SHANGHAI).strftime("%m月%d日 %H:%M") if when else "—"


def order_line(facts) -> str:
    order = facts.order
    return (f"订单 {display_order_no(order.order_no)}（{facts.product.name} × {order.quantity}，"
            f"¥{format_yuan(order.amount_fen)}）")


GREETING = "您好，我是在线客服小在 🙂 请直接说您遇到的问题；订单相关的问题请附上订单号。"
THANKS = "不客气！还有问题随时找我。祝您使用愉快～"
OTHER = "抱歉，我没太理解您的意思。可以换个说法，或直接说明订单遇到的问题（例如：没收到卡密、卡密无效、申请退款）。"
OTHER_TWICE = "我可能帮不上这个忙。需要的话回复「转人工」，马上为您转接人工客服。"
ASK_VERIFICATION = ("为保护您的订单安全，请提供订单号和下单时填写的手机号或邮箱（或订单查询密码），"
                    "例如：订单号 K7Q3-9XDM-2PHT 手机 13800000000。也可以从订单页面点「联系客服」直接咨询。")
VERIFY_FAILED = "订单号和联系方式对不上，请核对后再发一次（联系方式是下单时填写的手机号或邮箱）。"
ASK_CONTACT = "请把对方的 QQ 号、微信号、电话、邮箱或网址发给我，我帮您核实是不是本店官方。"
HANDOFF = "已为您转接人工客服，工单号 {ticket}。客服会尽快回复，请不要关闭页面；离开后再打开也能看到回复。"
HANDOFF_COMPLAINT = ("非常抱歉给您带来不好的体验。已为您优先转接人工客服（工单号 {ticket}），"
                     "我们会认真处理您的问题。")
HANDOFF_ACCOUNT = "账号问题需要人工核实，已为您转接人工客服（工单号 {ticket}），客服会结合订单信息处理。"


def status_explained(facts) -> str:
    order = facts.order
    text = STATUS_TEXT.get(order.status, (order.status,))[0]
    parts = [f"{order_line(facts)}当前状态：{text}。"]
    if order.status in ("pending_payment", "expired"):
        parts.append("我们还没有收到这笔订单的付款。如果还没付款，请在订单页点击「去支付」；"
                     "如果已经付款，请回复「我已付款」，我马上向支付平台核实。")
    elif order.status == "awaiting_stock":
        parts.append("付款已收到，商品暂时缺货，补货后会自动发货；也可以申请退款。")
    elif order.status == "delivering" and facts.recharge:
        parts.append(recharge_progress(facts))
    elif order.status == "delivered":
        parts.append(f"已于 {bj(order.delivered_at)} 发货，内容在订单页面可以随时查看。")
    elif order.status in ("refunded", "partially_refunded"):
        parts.append(refunded_text(facts))
    elif order.status == "delivery_failed":
        parts.append("充值没有成功，款项会原路退回。")
    return "".join(parts)


def recharge_progress(facts) -> str:
    minutes = int(facts.minutes_since_payment or 0)
    return (f"直充已提交供应商处理（已付款 {minutes} 分钟），一般 10 分钟内到账，最长不超过 30 分钟。"
            "到账后请重新登录游戏查看。")


def recharge_done(facts) -> str:
    r = facts.recharge
    ref = f"，供应商单号 {r.supplier_order_no}" if r and r.supplier_order_no else ""
    return (f"{order_line(facts)}已于 {bj(facts.order.delivered_at)} 充值成功{ref}。"
            "如果游戏里还没看到，请退出重新登录后查看；仍有问题请回复「转人工」。")


def refunded_text(facts) -> str:
    amount = format_yuan(facts.order.refunded_fen)
    return f"这笔订单已于 {bj(facts.refunded_at)} 退款 ¥{amount}，原路退回，一般 1–3 个工作日到账。"


def codes_resent(facts, link: str, masked: list[str]) -> str:
    lines = "、".join(masked)
    return (f"{order_line(facts)}已于 {bj(facts.order.delivered_at)} 发货（{lines}）。"
            f"完整内容请在订单页面查看：{link}\n请勿把卡密发给任何人，包括自称客服的人。")


def redelivered(facts, link: str, recovered: bool) -> str:
    why = "已向支付平台核实到您的付款，" if recovered else "现在有货了，"
    if facts.kind == "recharge":
        return f"{why}已为您提交充值，一般 10 分钟内到账。{order_line(facts)}进度可在订单页面查看：{link}"
    return f"{why}已为您发货。{order_line(facts)}请在订单页面查看：{link}"


def refund_offered(facts) -> str:
    return (f"{order_line(facts)}付款已收到，但商品暂时缺货。您可以选择：\n"
            "1. 继续等待，补货后自动发货；\n2. 退款，原路退回。\n需要退款请回复「退款」。")


def refunded_now(facts, manual: bool) -> str:
    amount = format_yuan(facts.order.refunded_fen)
    how = "退款已提交，将由工作人员原路退回" if manual else "已原路退回，一般 1–3 个工作日到账"
    return f"已为您办理退款：{order_line(facts)}退款 ¥{amount}，{how}。"


def refund_policy(facts) -> str:
    return (f"{order_line(facts)}已经发货，卡密类商品一经发出无法由系统自动退款。"
            "如果卡密有问题（无效、已被使用），请告诉我，我会按售后规则处理；也可以回复「转人工」。")


def key_hint(secret: str) -> str:
    """A key as the customer can recognise it on the order page, masked as the console masks it (first two and
    last two characters): the chat transcript is read by staff, and the new key is unused. For an account
    (`user----password`) only the account part is hinted, never the password."""
    code = secret.split("----")[0].split(",")[0]
    return f"{code[:2]}…{code[-2:]}" if len(code) > 6 else "*" * len(code)


def replaced(facts, link: str, which: tuple[int, str, str] | None = None) -> str:
    """`which`: for an order with several keys, (the voided key's place in the order, it masked, the new key
    masked), so the customer can see it was the key they meant."""
    if which is None:
        return (f"抱歉给您带来麻烦！已将有问题的卡密作废，并为您补发了一个新的卡密。请在订单页面查看：{link}\n"
                "如新卡密仍有问题，请回复「转人工」。")
    n, old, new = which
    return (f"抱歉给您带来麻烦！已将第 {n} 张卡密（{old}）作废，并补发了新卡密（{new}），请在订单页面查看：{link}\n"
            "如果无效的是另一张，请回复「第几张」或卡密的末 4 位，也可以回复「转人工」由客服核实。")


def invalid_handoff(reason: str, ticket: str) -> str:
    return f"{reason}已将该卡密标记为异常并转接人工客服核实（工单号 {ticket}），请稍候。"


def recharge_urgent(facts, ticket: str) -> str:
    r = facts.recharge
    ref = r.supplier_order_no or r.request_id if r else "—"
    minutes = int(facts.minutes_since_payment or 0)
    return (f"您的直充已付款 {minutes} 分钟仍未到账，已为您加急转接人工客服（工单号 {ticket}），"
            f"客服会联系供应商核实（充值单号 {ref}）。")


def contact_verified(items: list[tuple[str, str, str | None]]) -> str:
    listed = "、".join(f"{kind} {value}（{label}）" if label else f"{kind} {value}" for kind, value, label in items)
    return f"经核实，{listed} 是本店官方联系方式，可以放心联系。"


def contact_flagged(values: list[str]) -> str:
    listed = "、".join(values)
    return (f"⚠️ {listed} 不是本店的官方联系方式，很可能是骗子！本店客服不会主动加您 QQ / 微信，"
            "不会索要验证码，也不会要求您转账「解冻」「退款」。请不要付款或提供任何信息。")
