"""Ids and amounts pasted into a customer's message: order numbers, phones, QQ and WeChat ids, e-mails, URLs,
amounts.

Extraction runs on the raw text after NFKC only (full-width ＫＱ１２３ → KQ123), so ids keep the spelling the
customer typed: ``lanshan_kami`` is not ``lanshan-kami``, ``shop.com.evil.top`` stays whole. Contacts are
compared with the store's registry elsewhere, after their own normalisation, never by similarity.

Order of extraction, each kind masking what it took so nothing is read twice: URLs with a scheme,
e-mails, URLs without a scheme, WeChat ids (after a WeChat keyword), order numbers, QQ numbers (after a QQ
keyword), phones, amounts. So a phone is never also a QQ, an order number never a phone, and the digits of
``123456@qq.com`` are not a QQ.

Canonical forms: order numbers as ``zaima.core.ids.normalize_order_no`` gives them; phones as 11 digits
(separators, +86/0086/86 dropped); QQ as digits; WeChat ids, e-mails and URLs as typed (trailing
punctuation trimmed); amounts as integer fen (Decimal, never float).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

from zaima.core.ids import normalize_order_no

MASK = "\x00"

_TLDS = (
    "com|net|org|cn|top|xyz|cc|vip|shop|store|site|club|info|io|me|co|tv|app|link|online|fun|ltd|icu|wang|"
    "ink|kim|pw|tk|ml|ga|cf|gq|live|pro|biz|work|tech|cloud|asia|mobi|name|hk|tw|us|uk|ru|in|jp|kr|de|la|"
    "ws|so|im|gg|cx|su|one|best|run|plus|world|today|life|space|website|market|games|game|zone|red|ren|"
    "xin|love|email|team|group|chat|pub|bid|win|vin|cyou|buzz|monster|rest|bar|lol|dev|ai|xn--[a-z0-9]+"
)
# Characters that may continue a URL: ASCII only, so a URL typed right before Chinese text stops there.
_URL_TAIL = r"[A-Za-z0-9\-._~:/?#@!$&*+,;=%]"
_URL_SCHEME = re.compile(rf"(?i)(?<![A-Za-z0-9])(?:https?|ftp)://[A-Za-z0-9\-._~%]+(?::\d+)?(?:/{_URL_TAIL}*)?")
_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9][A-Za-z0-9._%+\-]*@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
_URL_BARE = re.compile(
    rf"(?i)(?<![A-Za-z0-9\-_.@/])(?:[a-z0-9](?:[a-z0-9\-]*[a-z0-9])?\.)+(?:{_TLDS})(?![A-Za-z0-9\-_])"
    rf"(?::\d{{1,5}})?(?:/{_URL_TAIL}*)?"
)
_URL_TRAILING = ".,;:!?)]}'\"~"

# WeChat: a keyword, an optional 号/号码/id and separator, then an id (letter first, 6-20 of [A-Za-z0-9_-]).
_WECHAT = re.compile(
    r"(?i)(?:微信|威信|薇信|微心|v信|(?<![A-Za-z])(?:vx|wx|weixin|wechat|v)(?![A-Za-z]))"
    r"\s*(?:号码|号|id|帐号|账号)?\s*(?:是|为|[:=])?\s*"
    r"([A-Za-z][A-Za-z0-9_\-]{5,19})(?![A-Za-z0-9_\-])"
)
_WXID = re.compile(r"(?<![A-Za-z0-9_\-])(wxid_[A-Za-z0-9]{4,30})(?![A-Za-z0-9_\-])")

# Order numbers: 12 characters, optionally as three groups of four joined by "-" or spaces.
_ORDER = re.compile(
    r"(?<![A-Za-z0-9_\-])([A-Za-z0-9]{4}([\-\s]?)[A-Za-z0-9]{4}([\-\s]?)[A-Za-z0-9]{4})(?![A-Za-z0-9_\-])"
)
_DIGIT_GROUP_BEFORE = re.compile(r"(?a)\d[\s\-]$")
_DIGIT_GROUP_AFTER = re.compile(r"(?a)^[\s\-]\d")
_CANONICAL_LETTERS = re.compile(r"^[ABCDEFGHJKMNPQRSTVWXYZ]+$")

# QQ: a keyword, an optional 号/号码/群 and separator, then 5-11 digits.
_QQ = re.compile(
    r"(?ai)(?:(?<![A-Za-z])qq|扣扣|企鹅|(?<![A-Za-z])q(?=\s*(?:号|[:=]|\s*\d)))"
    r"\s*(?:号码|号|群号?|账号|帐号)?\s*(?:是|为|[:=])?\s*"
    r"([1-9]\d{4,10})(?!\d)"
)

# Mainland mobiles: 1[3-9] and 9 more digits, separators allowed, optional +86 / 0086 / 86.
_PHONE = re.compile(r"(?a)(?<![0-9A-Za-z])(?:(?:\+|00)?86[\s\-]?)?(1[3-9]\d(?:[\s\-]?\d){8})(?!\d)")

# ASCII digits only ((?a)): NFKC already turned full-width digits into ASCII ones.
# Amounts: ¥30 / RMB 30 / 30元 / 30块(钱) / 30.5rmb; Chinese numerals before 元/块 (三十块, 一百五十元).
_NUM = r"\d{1,9}(?:\.\d{1,2})?"
_AMOUNT = re.compile(
    rf"(?ai)(?:¥|rmb|cny|人民币)\s*({_NUM})(?![\d.])"
    rf"|(?<![\d.])({_NUM})\s*(?:元|块|圆|rmb|cny|yuan)"
    # a bare number right after a money verb: 付了30.5 / 扣款 12 / 金额:9.90
    rf"|(?:付了|付款|支付了?|扣了|扣款|扣费|花了|金额|价格|价钱|退了|多付了?|少付了?|转了)我?\s*[:是为]?\s*"
    rf"({_NUM})(?![\d.])"
)
_CN_AMOUNT = re.compile(r"([零一二两三四五六七八九十百千万]+)\s*(?:元|块)")
_CN_DIGITS = {"零": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_CN_UNITS = {"十": 10, "百": 100, "千": 1000}


@dataclass
class Slots:
    order_nos: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    qqs: list[str] = field(default_factory=list)
    wechats: list[str] = field(default_factory=list)
    emails: list[str] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    amounts_fen: list[int] = field(default_factory=list)

    def contacts(self) -> list[tuple[str, str]]:
        """(kind, value) for every contact, kinds as in the store's official contacts registry."""
        return [
            *(("phone", v) for v in self.phones),
            *(("qq", v) for v in self.qqs),
            *(("wechat", v) for v in self.wechats),
            *(("email", v) for v in self.emails),
            *(("url", v) for v in self.urls),
        ]

    def __bool__(self) -> bool:
        return bool(self.order_nos or self.amounts_fen or self.contacts())


def _add(values: list, value) -> None:
    if value not in values:
        values.append(value)


def _mask(text: str, start: int, end: int) -> str:
    return text[:start] + MASK * (end - start) + text[end:]


def _take(pattern: re.Pattern[str], text: str, group: int = 0) -> tuple[str, list[re.Match[str]]]:
    matches = list(pattern.finditer(text))
    for m in reversed(matches):
        text = _mask(text, m.start(group), m.end(group))
    return text, matches


def _trim_url(url: str) -> str:
    """Sentence punctuation typed right after a URL is not part of it."""
    return url.rstrip(_URL_TRAILING)


def _is_order_no(raw: str, sep: str = "") -> str | None:
    """The canonical order number when `raw` (12 characters, maybe grouped) plausibly is one."""
    canonical = normalize_order_no(raw)
    if canonical is None:
        return None
    compact = re.sub(r"[\-\s]", "", raw)
    has_alpha = any(c.isalpha() for c in compact)
    if not has_alpha:
        # 12 digits only: a real order number almost never is (p ≈ 1e-6), other numbers often are;
        # accepted only when grouped 4-4-4
        return canonical if sep else None
    if any(c.isdigit() for c in compact):
        return canonical
    # letters only: an English word (VERIFICATION → VER1F1CAT10N) must not pass, so no O/I/L forgiveness,
    # and either one upper-case run or grouped with dashes (words with spaces are just words)
    if not _CANONICAL_LETTERS.match(compact.upper()) or " " in raw:
        return None
    return canonical if (compact.isupper() or "-" in sep) else None


def _cn_number(text: str) -> int | None:
    """三十 → 30, 一百五十 → 150, 两千 → 2000, 五 → 5, 一万 → 10000; None for digit strings like 一五."""
    total, section, digit = 0, 0, None
    for ch in text:
        if ch in _CN_DIGITS:
            if digit is not None:
                return None
            digit = _CN_DIGITS[ch]
        elif ch in _CN_UNITS:
            section += (1 if digit is None else digit) * _CN_UNITS[ch]
            digit = None
        else:  # 万
            total += (section + (digit or 0)) * 10000
            section, digit = 0, None
    return total + section + (digit or 0)


def _fen(yuan: str) -> int:
    return int((Decimal(yuan) * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def extract_slots(text: str) -> Slots:
    """Every id and amount in `text` (see the module docstring), in order of appearance per kind."""
    slots = Slots()
    if not text:
        return slots
    work = unicodedata.normalize("NFKC", text).replace(MASK, " ")

    work, found = _take(_URL_SCHEME, work)
    for m in found:
        _add(slots.urls, _trim_url(m.group(0)))
    work, found = _take(_EMAIL, work)
    for m in found:
        _add(slots.emails, m.group(0).rstrip(_URL_TRAILING))
    work, found = _take(_URL_BARE, work)
    for m in found:
        _add(slots.urls, _trim_url(m.group(0)))

    wechats: list[re.Match[str]] = []
    for pattern in (_WXID, _WECHAT):
        for m in pattern.finditer(work):
            value = m.group(1)
            if pattern is _WECHAT and value.isupper() and _is_order_no(value):
                continue  # "wx K7Q39XDM2PHT": an order number typed after the word WeChat, not an id
            wechats.append(m)
            work = _mask(work, m.start(1), m.end(1))
    for m in sorted(wechats, key=lambda m: m.start()):
        _add(slots.wechats, m.group(1))

    orders: list[re.Match[str]] = []
    for m in _ORDER.finditer(work):
        raw, sep = m.group(1), m.group(2) + m.group(3)
        if not any(c.isalpha() for c in raw):
            # a 4-4-4 digit run inside a longer one (bank card 6222 0212 3456 7890) is not an order number
            if _DIGIT_GROUP_BEFORE.search(work[: m.start(1)]) or _DIGIT_GROUP_AFTER.match(work[m.end(1):]):
                continue
        canonical = _is_order_no(raw, sep)
        if canonical is not None:
            orders.append(m)
            _add(slots.order_nos, canonical)
    for m in reversed(orders):
        work = _mask(work, m.start(1), m.end(1))

    work, found = _take(_QQ, work, group=1)
    for m in found:
        _add(slots.qqs, m.group(1))

    work, found = _take(_PHONE, work)
    for m in found:
        _add(slots.phones, re.sub(r"[\s\-]", "", m.group(1)))

    amounts = [(m.start(), _fen(m.group(1) or m.group(2) or m.group(3))) for m in _AMOUNT.finditer(work)]
    for m in _CN_AMOUNT.finditer(work):
        value = _cn_number(m.group(1))
        if value:
            amounts.append((m.start(), value * 100))
    for _, fen in sorted(amounts):
        _add(slots.amounts_fen, fen)
    return slots
