"""zaima.bot.slots: ids and amounts pasted into customer messages (no database)."""

from __future__ import annotations

import pytest

from zaima.bot.slots import Slots, extract_slots


def test_order_numbers() -> None:
    assert extract_slots("我的订单K7Q3-9XDM-2PHT还没到").order_nos == ["K7Q39XDM2PHT"]
    assert extract_slots("k7q39xdm2pht 卡密呢").order_nos == ["K7Q39XDM2PHT"]
    assert extract_slots("订单号 K7Q3 9XDM 2PHT 麻烦查下").order_nos == ["K7Q39XDM2PHT"]
    assert extract_slots("订单号：Ｋ７Ｑ３－９ＸＤＭ－２ＰＨＴ").order_nos == ["K7Q39XDM2PHT"]  # full-width IME input
    assert extract_slots("单号K7Q39XDM2PHT和H4NW-9P2R-X6CE").order_nos == ["K7Q39XDM2PHT", "H4NW9P2RX6CE"]
    # O and I typed for 0 and 1 (zaima.core.ids.normalize_order_no)
    assert extract_slots("K7Q3-9XDM-2PHO").order_nos == ["K7Q39XDM2PH0"]
    # twice the same order is one order
    assert extract_slots("K7Q39XDM2PHT 就是 k7q3-9xdm-2pht").order_nos == ["K7Q39XDM2PHT"]


@pytest.mark.parametrize(
    "text",
    [
        "VERIFICATION code",  # an English word is not an order number even though O/I/L read as 0/1
        "what have been",
        "WHAT HAVE BEEN",
        "123456789012",  # twelve bare digits: something else (a real order number has letters)
        "卡号 6222 0212 3456 7890",  # a bank card in groups of four
        "K7Q39XDM2PHTX",  # thirteen characters
        "K7Q39XDM2PHU",  # U is not in the alphabet
        "微信lanshankami1",  # a WeChat id that happens to read as an order number
    ],
)
def test_not_order_numbers(text: str) -> None:
    assert extract_slots(text).order_nos == []


def test_phones() -> None:
    assert extract_slots("手机13812345678").phones == ["13812345678"]
    assert extract_slots("电话+86 138-1234-5678").phones == ["13812345678"]
    assert extract_slots("+8613812345678").phones == ["13812345678"]
    assert extract_slots("0086 13812345678").phones == ["13812345678"]
    assert extract_slots("138 1234 5678 打我电话").phones == ["13812345678"]
    assert extract_slots("１３８１２３４５６７８").phones == ["13812345678"]
    # not phones: 12 digits, a landline, a number starting 12
    assert extract_slots("138123456789").phones == []
    assert extract_slots("12812345678").phones == []


def test_order_number_is_not_a_phone() -> None:
    slots = extract_slots("订单13K8-1234-5678")
    assert slots.order_nos == ["13K812345678"]
    assert slots.phones == []


def test_qq() -> None:
    assert extract_slots("QQ:800012345 是你们客服吗").qqs == ["800012345"]
    assert extract_slots("qq号 12345").qqs == ["12345"]
    assert extract_slots("扣扣 1029384756").qqs == ["1029384756"]
    assert extract_slots("加我企鹅 12345678").qqs == ["12345678"]
    assert extract_slots("加Q 800012345").qqs == ["800012345"]
    assert extract_slots("ＱＱ８０００１２３４５").qqs == ["800012345"]
    assert extract_slots("QQ群 654321987").qqs == ["654321987"]


def test_phone_is_not_a_qq() -> None:
    slots = extract_slots("我QQ是123456789 电话13812345678")
    assert slots.qqs == ["123456789"]
    assert slots.phones == ["13812345678"]
    slots = extract_slots("有人加我qq 说是客服 手机号13912345678")
    assert slots.qqs == []
    assert slots.phones == ["13912345678"]
    # a bare number with no QQ keyword is not a QQ
    assert extract_slots("800012345 是你们的吗").qqs == []
    # the digits of a QQ mailbox are not a QQ number
    slots = extract_slots("邮箱 123456789@qq.com")
    assert slots.qqs == []
    assert slots.emails == ["123456789@qq.com"]


def test_wechat_ids_kept_as_typed() -> None:
    assert extract_slots("加我微信lanshan_kami").wechats == ["lanshan_kami"]
    assert extract_slots("vx: lanshan-kami").wechats == ["lanshan-kami"]
    assert extract_slots("wx lanshan_kami 是你们的吗").wechats == ["lanshan_kami"]
    assert extract_slots("微信号是 LanShan_Kami").wechats == ["LanShan_Kami"]
    assert extract_slots("威信：kami_service01").wechats == ["kami_service01"]
    assert extract_slots("weixin kefu-8899x").wechats == ["kefu-8899x"]
    assert extract_slots("wxid_abcd1234 加我").wechats == ["wxid_abcd1234"]
    # lanshan_kami is not lanshan-kami: nothing is rewritten
    assert extract_slots("微信 lanshan_kami").wechats != ["lanshan-kami"]


def test_not_wechat_ids() -> None:
    assert extract_slots("微信支付失败了").wechats == []
    assert extract_slots("用wx付了 K7Q3-9XDM-2PHT").wechats == []
    assert extract_slots("lanshan_kami").wechats == []  # no WeChat keyword
    assert extract_slots("微信 abc").wechats == []  # too short
    assert extract_slots("微信 1lanshan").wechats == []  # must start with a letter
    # an order number typed after the word WeChat stays an order number
    slots = extract_slots("wx K7Q39XDM2PHT")
    assert slots.wechats == []
    assert slots.order_nos == ["K7Q39XDM2PHT"]


def test_emails() -> None:
    assert extract_slots("客服邮箱kefu@shop-mail.top是真的吗").emails == ["kefu@shop-mail.top"]
    assert extract_slots("邮箱 Li.Ming+shop@QQ.com。").emails == ["Li.Ming+shop@QQ.com"]
    assert extract_slots("发到abc＠163．com").emails == ["abc@163.com"]
    slots = extract_slots("kf@shop.com.evil.top")
    assert slots.emails == ["kf@shop.com.evil.top"]
    assert slots.urls == []


def test_urls_as_typed() -> None:
    assert extract_slots("www.shop.com/kf").urls == ["www.shop.com/kf"]
    assert extract_slots("shop-kefu.top 是官网吗").urls == ["shop-kefu.top"]
    assert extract_slots("https://shop-kefu.top/a?b=1。").urls == ["https://shop-kefu.top/a?b=1"]
    assert extract_slots("点这个http://kami-login.cc登录").urls == ["http://kami-login.cc"]
    assert extract_slots("HTTPS://Shop.com/KF/").urls == ["HTTPS://Shop.com/KF/"]
    # shop.com.evil.top is one host, not shop.com
    assert extract_slots("shop.com.evil.top 这个网站是你们的吗").urls == ["shop.com.evil.top"]
    assert extract_slots("网址是shop.com.evil.top/kefu，对吗").urls == ["shop.com.evil.top/kefu"]


def test_not_urls() -> None:
    assert extract_slots("付了30.5元").urls == []
    assert extract_slots("截图.png 发你了").urls == []
    assert extract_slots("版本v1.2.3").urls == []


@pytest.mark.parametrize(
    ("text", "fen"),
    [
        ("付了¥30 还没到", [3000]),
        ("￥ 30.5", [3050]),
        ("30元的卡", [3000]),
        ("50块钱的话费", [5000]),
        ("付了30.5", [3050]),
        ("金额:9.90", [990]),
        ("99.99元", [9999]),
        ("三十块", [3000]),
        ("一百五十元", [15000]),
        ("两千块", [200000]),
        ("RMB 12", [1200]),
        ("扣了我60 订单才30元", [6000, 3000]),
        ("等了30分钟", []),  # a number is not money without a money word
        ("订单K7Q3-9XDM-2PHT 手机13812345678", []),  # ids are not amounts
    ],
)
def test_amounts_in_fen(text: str, fen: list[int]) -> None:
    amounts = extract_slots(text).amounts_fen
    assert amounts == fen
    assert all(type(a) is int for a in amounts)


def test_everything_at_once() -> None:
    slots = extract_slots(
        "在吗 我的单号是K7Q3-9XDM-2PHT，付了¥30，电话138 1234 5678，有人加我QQ 800012345 和微信 lanshan_kami "
        "说是客服，还发了 shop.com.evil.top/kf 和 kf@shop.com.evil.top"
    )
    assert slots.order_nos == ["K7Q39XDM2PHT"]
    assert slots.phones == ["13812345678"]
    assert slots.qqs == ["800012345"]
    assert slots.wechats == ["lanshan_kami"]
    assert slots.urls == ["shop.com.evil.top/kf"]
    assert slots.emails == ["kf@shop.com.evil.top"]
    assert slots.amounts_fen == [3000]
    assert slots.contacts() == [
        ("phone", "13812345678"),
        ("qq", "800012345"),
        ("wechat", "lanshan_kami"),
        ("email", "kf@shop.com.evil.top"),
        ("url", "shop.com.evil.top/kf"),
    ]


def test_empty() -> None:
    assert extract_slots("") == Slots()
    assert not extract_slots("你好 在吗")
    assert extract_slots("订单K7Q39XDM2PHT")
