"""What a customer typed, in one canonical spelling, for the intent model (never for ids: see slots.py).

Steps, in order: NFKC (full-width letters, digits and punctuation become ASCII), emoji folded into a few
canonical ones (😡🤬💢 → 😡 …), Chinese punctuation to ASCII, lower case, traditional → simplified
(zhconv ``zh-cn``), one pass of typo / homophone / slang / pinyin-abbreviation replacement, then repeated
punctuation and whitespace collapsed.

Abbreviations are replaced only as whole Latin tokens, and never inside an e-mail address, a URL, a
dotted or dashed token (domains, versions, order numbers written K7Q3-9XDM-2PHT) or a WeChat id
(``rg_kf`` stays ``rg_kf``): the replacement pass matches those first and hands them back untouched.

Training and prediction both go through this function, so changing it changes the model's input: the
model cache key includes this file's source, so a change retrains.
"""

from __future__ import annotations

import re
import unicodedata

import zhconv

# Latin tokens (whole tokens only, after lower-casing) → what they stand for.
LATIN: dict[str, str] = {
    # pinyin initials customers type on phones
    "rg": "人工",
    "zrg": "转人工",
    "kf": "客服",
    "tk": "退款",
    "zfb": "支付宝",
    "wx": "微信",
    "vx": "微信",
    "v": "微信",
    "weixin": "微信",
    "km": "卡密",
    "jhm": "激活码",
    "dhm": "兑换码",
    "cdk": "激活码",
    "cdkey": "激活码",
    "ddh": "订单号",
    "dd": "订单",
    "cz": "充值",
    "xiexie": "谢谢",
    "xiexiele": "谢谢了",
    "xx": "谢谢",
    "sm": "什么",
    "zm": "怎么",
    "bzd": "不知道",
    "yhk": "银行卡",
    "tb": "淘宝",
    "pdd": "拼多多",
    # insults and swearing (complaint signal)
    "sb": "傻逼",
    "tmd": "他妈的",
    "nmd": "你妈的",
    "nnd": "奶奶的",
    "cnm": "操你妈",
    "nmsl": "你妈死了",
    "mlgb": "妈了个逼",
    "nb": "牛逼",
    # English and number slang
    "thx": "谢谢",
    "thanks": "谢谢",
    "thank": "谢谢",
    "thks": "谢谢",
    "tks": "谢谢",
    "ty": "谢谢",
    "3q": "谢谢",
    "3x": "谢谢",
    "88": "拜拜",
    "886": "拜拜",
    "8888": "拜拜",
    "hello": "你好",
    "hellow": "你好",
    "helo": "你好",
    "hallo": "你好",
    "halo": "你好",
    "hi": "你好",
    "hey": "你好",
    "refund": "退款",
    "pls": "请",
    "plz": "请",
    "please": "请",
    "asap": "尽快",
    "okk": "ok",
    "okok": "ok",
    "okay": "ok",
    # English content words of mixed-language messages, so "code 无效" and "卡密 invalid" meet the
    # Chinese training examples halfway (function words are left alone)
    "order": "订单",
    "orders": "订单",
    "status": "状态",
    "code": "卡密",
    "codes": "卡密",
    "key": "激活码",
    "license": "激活码",
    "invalid": "无效",
    "expired": "过期",
    "used": "已使用",
    "redeem": "兑换",
    "activate": "激活",
    "account": "账号",
    "login": "登录",
    "log": "登录",
    "password": "密码",
    "banned": "被封",
    "ban": "封号",
    "locked": "锁定",
    "paid": "付款",
    "pay": "付款",
    "payment": "支付",
    "charged": "扣款",
    "twice": "两次",
    "money": "钱",
    "receive": "收到",
    "received": "收到",
    "arrived": "到账",
    "human": "人工",
    "agent": "人工",
    "person": "真人",
    "scam": "骗子",
    "scammer": "骗子",
    "fraud": "诈骗",
    "complain": "投诉",
    "complaint": "投诉",
    "policy": "规则",
    "rules": "规则",
    "hours": "时间",
    "bye": "再见",
    "weather": "天气",
}

# Chinese typos and homophones (substrings) → the intended word.
CJK: dict[str, str] = {
    # 卡密
    "卡蜜": "卡密", "卡咪": "卡密", "卡秘": "卡密", "卡觅": "卡密", "卡幂": "卡密", "卡米": "卡密",
    "卡mi": "卡密", "咔密": "卡密",
    # 账
    "到帐": "到账", "帐号": "账号", "帐户": "账户", "转帐": "转账", "帐单": "账单", "到張": "到账",
    # 充值
    "冲值": "充值", "充直": "充值", "充植": "充值", "冲直": "充值", "充治": "充值", "冲了": "充了",
    "冲钱": "充钱", "冲不": "充不", "冲进": "充进", "直冲": "直充", "冲会员": "充会员", "冲点券": "充点券",
    "冲话费": "充话费", "冲q币": "充q币", "冲的": "充的", "冲错": "充错",
    # 退款 / 付款 / 扣款
    "退欵": "退款", "退歀": "退款", "推款": "退款", "腿款": "退款", "退kuan": "退款", "退宽": "退款",
    "付歀": "付款", "付欵": "付款", "扣歀": "扣款", "扣欵": "扣款",
    # 客服 / 人工
    "客夫": "客服", "课服": "客服", "客福": "客服", "刻服": "客服", "可服": "客服", "客腹": "客服",
    "人公": "人工", "仁工": "人工",
    # 码
    "激活妈": "激活码", "激活马": "激活码", "激活玛": "激活码", "兑换妈": "兑换码", "兑换马": "兑换码",
    "兑换玛": "兑换码", "密妈": "密码", "密马": "密码", "密玛": "密码", "秘码": "密码", "蜜码": "密码",
    # assorted
    "定单": "订单", "登陆": "登录", "投述": "投诉", "骗纸": "骗子", "骗几": "骗子", "辣鸡": "垃圾",
    "拉圾": "垃圾", "垃鸡": "垃圾", "被疯": "被封", "疯号": "封号", "点卷": "点券", "支付保": "支付宝",
    "威信": "微信", "薇信": "微信", "微心": "微信", "徽信": "微信", "v信": "微信", "扣扣": "qq", "企鹅": "qq",
    "蟹蟹": "谢谢", "感谢感谢": "谢谢", "酱紫": "这样子",
    "在么": "在吗", "在嘛": "在吗", "在马": "在吗", "在麽": "在吗", "zai吗": "在吗",
    # dialect and net slang
    "木有": "没有", "米有": "没有", "么有": "没有", "莫得": "没有", "冇": "没有",
    "肿么": "怎么", "怎莫": "怎么", "怎末": "怎么", "咋": "怎么",
    "神马": "什么", "啥": "什么", "俺": "我",
}

# Emoji and symbols folded to one canonical character per feeling; zero-width joiners, variation
# selectors and skin tones dropped; Chinese punctuation NFKC leaves alone mapped to ASCII.
_FOLD: dict[int, str | None] = {}
for _chars, _to in (
    ("😡🤬😠💢👿🖕👊😤🔪💩", "😡"),
    ("😭😢😥😞😔😩😫🥺😟☹😰😣😖💔", "😭"),
    ("👍👌✌🤝💯👏", "👍"),
    ("😊☺😄😁😃🙂😘🥰😍❤💕💖💗🌹💐🥳", "😊"),
    ("😂🤣", "😂"),
    ("🤔❓❔", "?"),
    ("❗‼❕", "!"),
    ("。", "."),
    ("、", ","),
    ("【〔［", "["),
    ("】〕］", "]"),
    ("《〈", "<"),
    ("》〉", ">"),
    ("“”„「」『』", '"'),
    ("‘’", "'"),
    ("·", " "),
):
    for _c in _chars:
        _FOLD[ord(_c)] = _to
for _c in "\ufe0f\ufe0e\u200d\u200b\u200c\u2060\ufeff":
    _FOLD[ord(_c)] = None
for _cp in range(0x1F3FB, 0x1F400):  # skin tone modifiers
    _FOLD[_cp] = None
del _chars, _to, _c, _cp

_URL_CHARS = r"[^\s\u3000-\u303f\u3400-\u9fff\uff00-\uffef\"'<>\[\]]"
# Spans handed back untouched: e-mails, URLs, dotted/dashed/underscored tokens (domains, versions,
# order numbers with dashes, WeChat ids), each with an optional path.
_PROTECTED = (
    rf"(?:https?://|www\.){_URL_CHARS}+"
    r"|[a-z0-9][a-z0-9._%+\-]*@[a-z0-9\-]+(?:\.[a-z0-9\-]+)+"
    rf"|[a-z0-9]+(?:[._\-][a-z0-9]+)+(?:/{_URL_CHARS}*)?"
)
_CJK_KEYS = sorted(CJK, key=len, reverse=True)
# The lookahead lets the engine skip, in one character-class test, every position where no
# alternative can start (most hanzi): three times faster on long messages.
_STARTS = "".join(sorted({k[0] for k in _CJK_KEYS if not k[0].isascii()}))
_PASS = re.compile(
    rf"(?=[a-z0-9{re.escape(_STARTS)}])"
    rf"(?:(?P<p>{_PROTECTED})"
    rf"|(?P<c>{'|'.join(map(re.escape, _CJK_KEYS))})"  # before tokens: some keys start with a letter (v信)
    r"|(?P<t>[a-z0-9]+))"
)


def _replace(m: re.Match[str]) -> str:
    token = m.group("t")
    if token is not None:
        replacement = LATIN.get(token)
        if replacement is not None:
            return replacement
        return "哈哈" if len(token) >= 3 and not token.strip("h") else token
    cjk = m.group("c")
    if cjk is not None:
        return CJK[cjk]
    return m.group(0)


_REPEATED_PUNCT = re.compile(r"([!?.,;~^*#=+|\\😡😭👍😊😂🙏])\1+")
_MIXED_QE = re.compile(r"[?!]{2,}")  # "?!?!" → "?!"
_REPEATED_CJK = re.compile(r"([\u4e00-\u9fff])\1\1+")  # 啊啊啊啊 → 啊啊, 快快快 → 快快
_SPACES = re.compile(r"\s+")


def _mixed(m: re.Match[str]) -> str:
    s = m.group(0)
    return "?!" if ("?" in s and "!" in s) else s[0]


def normalize(text: str) -> str:
    """The canonical spelling of a customer's message (see the module docstring)."""
    if not text:
        return ""
    text = unicodedata.normalize("NFKC", text).translate(_FOLD).lower()
    if not text.isascii():
        text = zhconv.convert(text, "zh-cn")
    text = _PASS.sub(_replace, text)
    text = _REPEATED_PUNCT.sub(r"\1", text)
    text = _MIXED_QE.sub(_mixed, text)
    text = _REPEATED_CJK.sub(r"\1\1", text)
    return _SPACES.sub(" ", text).strip()
