"""The official contact registry (官方联系方式) and the check behind "is this QQ really yours?".

Contacts are compared after normalisation, never by similarity (bot contract, rule 9): `lanshan_kami` is
not `lanshan-kami`, and `shop.com.evil.top` is not `shop.com`. What normalisation removes, per kind:

- phone: spaces, dashes, dots and brackets; the country code +86 / 0086 (and a bare 86 before an
  11-digit mobile). After an explicit country code a landline gets its trunk 0 back, so
  "+86 10 8888 8888" is "01088888888". "400-000-0000" is "4000000000". Other country codes stay ("+852…").
- qq: spaces; 5–12 digits, no leading 0.
- wechat: letter case (WeChat ids are case-insensitive: search finds `Zaima_KF` by `zaima_kf`), so ids
  are stored lower-case; `_` and `-` stay distinct. An all-digit value is a phone number (WeChat finds
  accounts by phone) and is normalised like one.
- email: letter case (of the local part too: every mainstream provider ignores it) and "mailto:".
  Dots and +tags are kept: "a.b@x" is not "ab@x".
- url: the scheme (http = https), "www.", a default port (80, 443), the trailing slash, the fragment,
  letter case of the host (IDN hosts compare in punycode, so a look-alike Cyrillic "о" never matches),
  and needless percent-encoding. The path keeps its case (short links are case-sensitive: t.cn/AbC is
  not t.cn/abc) and the query stays. A URL with a user name before "@" (http://shop.com@evil.top)
  is refused: that is a phishing trick, not an address.

Which URLs a registered one vouches for: a registered host without a path ("shop.com") vouches for every
page on exactly that host and port ("shop.com/kf", "https://www.shop.com/orders?id=1") — it is the
store's own site — but not for a subdomain ("kf.shop.com", which may be anyone's) nor a longer host
("shop.com.evil.top"). A registered path ("weibo.com/zaima") vouches for itself and what is below it
("weibo.com/zaima/123", "weibo.com/zaima?tab=1"), never for a sibling ("weibo.com/zaima-kf") nor the
rest of the host. A registered query ("item.taobao.com/item.htm?id=1") vouches for that exact URL only.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from zaima.core.errors import Conflict, NotFound, ValidationFailed
from zaima.models import OfficialContact
from zaima.models.bot import CONTACT_KINDS

VALUE_MAX = 300
LABEL_MAX = 100
KIND_NAMES = {"phone": ("电话", "phone"), "qq": ("QQ", "QQ"), "wechat": ("微信", "WeChat"),
              "email": ("邮箱", "e-mail"), "url": ("网址", "URL")}

_PHONE_SEPARATORS = re.compile(r"[\s\-\u2010-\u2015\u2212.()/]")
_MOBILE = re.compile(r"1[3-9]\d{9}")
_NATIONAL_SPECIAL = re.compile(r"[48]00\d{7}")  # 400 / 800 service numbers
_QQ = re.compile(r"[1-9]\d{4,11}")
_WECHAT = re.compile(r"[a-z][a-z0-9_-]{5,19}")
_EMAIL_LOCAL = re.compile(r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_HOST_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.\-]*://", re.IGNORECASE)
_IDEOGRAPHIC_DOTS = re.compile("[\u3002\uff0e\uff61]")  # 。．｡ : browsers read them as "."
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


@dataclass(frozen=True)
class ContactCheck:
    official: bool
    kind: str
    value: str  # as the customer gave it
    normalized: str
    label: str | None  # the registry's label when official


def _invalid(kind: str, zh: str, en: str) -> ValidationFailed:
    return ValidationFailed(zh, en, field="value", kind=kind)


def _text(value: str | None) -> str:
    return unicodedata.normalize("NFKC", value or "").strip()


def _phone(value: str) -> str:
    text = _PHONE_SEPARATORS.sub("", _text(value))
    if text.lower().startswith("tel:"):
        text = text[4:]
    explicit = False
    if text.startswith("+86") or text.startswith("0086"):
        text, explicit = text[3:] if text.startswith("+") else text[4:], True
    elif text.startswith("+"):
        if re.fullmatch(r"\+[1-9]\d{6,14}", text):
            return text  # another country: kept with its code (E.164)
        raise _invalid("phone", "电话号码格式不正确，例如 400-000-0000 或 +86 138 0013 8000",
                       "invalid phone number, e.g. 400-000-0000 or +86 138 0013 8000")
    elif text.startswith("86") and len(text) == 13 and _MOBILE.fullmatch(text[2:]):
        text = text[2:]
    if not re.fullmatch(r"\d{5,12}", text):
        raise _invalid("phone", "电话号码只能包含数字、空格、短横线和 +86 区号，例如 400-000-0000",
                       "a phone number is digits with optional spaces, dashes and +86, e.g. 400-000-0000")
    if explicit and not text.startswith("0") and not _MOBILE.fullmatch(text) and not _NATIONAL_SPECIAL.fullmatch(text):
        text = "0" + text  # +86 10 8888 8888 is dialled 010 8888 8888 at home
    return text


def _qq(value: str) -> str:
    text = re.sub(r"\s", "", _text(value))
    if not _QQ.fullmatch(text):
        raise _invalid("qq", "QQ 号应为 5–12 位数字，且不以 0 开头", "a QQ number is 5–12 digits, not starting with 0")
    return text


def _wechat(value: str) -> str:
    text = _text(value).lower()
    bad = ("微信号应为 6–20 位字母、数字、下划线或减号并以字母开头，或绑定的手机号",
           "a WeChat id is 6–20 letters, digits, _ or -, starting with a letter, or its phone number")
    if re.fullmatch(r"[\d\s+\-()]+", text):
        try:
            return _phone(text)
        except ValidationFailed:
            raise _invalid("wechat", *bad) from None
    if not _WECHAT.fullmatch(text):
        raise _invalid("wechat", *bad)
    return text


def _idna_host(host: str, kind: str) -> str:
    host = _IDEOGRAPHIC_DOTS.sub(".", host).lower().rstrip(".")
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    try:
        ascii_host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError as exc:
        raise _invalid(kind, "域名格式不正确", "invalid domain name") from exc
    labels = ascii_host.split(".")
    if len(ascii_host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise _invalid(kind, "域名格式不正确", "invalid domain name")
    return ascii_host


def _email(value: str) -> str:
    text = _text(value)
    if text.lower().startswith("mailto:"):
        text = text[7:]
    local, at, domain = text.lower().rpartition("@")
    if not at or not _EMAIL_LOCAL.fullmatch(local) or len(local) > 64:
        raise _invalid("email", "邮箱格式不正确，例如 support@example.com", "invalid e-mail address, e.g. support@example.com")
    domain = _idna_host(domain, "email")
    if "." not in domain:
        raise _invalid("email", "邮箱格式不正确，例如 support@example.com", "invalid e-mail address, e.g. support@example.com")
    return f"{local}@{domain}"


def _url(value: str) -> str:
    text = _IDEOGRAPHIC_DOTS.sub(".", _text(value))
    bad = ("网址格式不正确，例如 https://shop.example.com", "invalid URL, e.g. https://shop.example.com")
    if not text or any(ch.isspace() for ch in text):
        raise _invalid("url", *bad)
    if text.startswith("//"):
        text = "http:" + text
    elif not _SCHEME.match(text):
        text = "http://" + text
    try:
        parts = urlsplit(text)
    except ValueError as exc:  # e.g. an unclosed "[" of an IPv6 address
        raise _invalid("url", *bad) from exc
    if parts.scheme.lower() not in ("http", "https"):
        raise _invalid("url", "只支持 http / https 网址", "only http and https URLs are supported")
    if "@" in parts.netloc:
        raise _invalid("url", "网址中不能有「@」前的用户名：这是仿冒网站的常见手法",
                       "a URL must not carry a user name before \"@\": a common phishing trick")
    try:
        port = parts.port
    except ValueError as exc:
        raise _invalid("url", *bad) from exc
    if not parts.hostname:
        raise _invalid("url", *bad)
    host = _idna_host(parts.hostname, "url")
    if "." not in host and host != "localhost" and ":" not in host:
        raise _invalid("url", *bad)
    if host.startswith("www."):
        host = host[4:]
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port not in (80, 443):
        netloc += f":{port}"
    path = quote(unquote(parts.path), safe=_PATH_SAFE).rstrip("/")
    return netloc + path + (f"?{parts.query}" if parts.query else "")


_NORMALIZERS = {"phone": _phone, "qq": _qq, "wechat": _wechat, "email": _email, "url": _url}


def _kind(kind: str) -> str:
    if kind not in CONTACT_KINDS:
        raise ValidationFailed("联系方式类型应为 phone、qq、wechat、email 或 url",
                               "the kind must be phone, qq, wechat, email or url", field="kind")
    return kind


def normalize_contact(kind: str, value: str) -> str:
    """The form two contacts of one kind are compared in; ValidationFailed (zh/en) if malformed."""
    if value is None or not isinstance(value, str) or len(value) > VALUE_MAX:
        raise _invalid(kind, f"联系方式需为 1–{VALUE_MAX} 个字符", f"a contact is 1–{VALUE_MAX} characters")
    return _NORMALIZERS[_kind(kind)](value)


def url_covers(registered: str, candidate: str) -> bool:
    """Whether a registered (normalised) URL vouches for a candidate (normalised) one; see the module doc."""
    if candidate == registered:
        return True
    if "?" in registered:
        return False
    return candidate.startswith(registered + "/") or candidate.startswith(registered + "?")


# --- the registry ---------------------------------------------------------------------------------

def _label(text: str | None) -> str:
    value = " ".join((text or "").split())
    if not value.isprintable():
        raise ValidationFailed("备注含有控制字符，请删除后重试", "the label holds a control character", field="label")
    if len(value) > LABEL_MAX:
        raise ValidationFailed(f"备注最多 {LABEL_MAX} 个字", f"the label is at most {LABEL_MAX} characters",
                               field="label")
    return value


async def add_contact(session: AsyncSession, clock, kind: str, value: str, label: str = "") -> OfficialContact:
    normalized = normalize_contact(kind, value)
    existing = await session.scalar(select(OfficialContact).where(OfficialContact.kind == kind,
                                                                  OfficialContact.normalized == normalized))
    if existing is not None:
        zh, en = KIND_NAMES[kind]
        raise Conflict(f"{zh} {existing.value} 已登记", f"the {en} {existing.value} is already registered",
                       field="value", id=existing.id)
    contact = OfficialContact(kind=kind, value=_text(value), normalized=normalized, label=_label(label),
                              created_at=clock.now())
    session.add(contact)
    await session.flush()  # a concurrent twin fails on (kind, normalized); transact() retries into Conflict
    return contact


async def list_contacts(session: AsyncSession, kind: str | None = None) -> list[OfficialContact]:
    query = select(OfficialContact).order_by(OfficialContact.kind, OfficialContact.id)
    if kind is not None:
        query = query.where(OfficialContact.kind == _kind(kind))
    return list(await session.scalars(query))


async def get_contact(session: AsyncSession, contact_id: int) -> OfficialContact:
    contact = await session.get(OfficialContact, contact_id)
    if contact is None:
        raise NotFound("未找到该联系方式", "contact not found")
    return contact


async def delete_contact(session: AsyncSession, contact_id: int) -> None:
    await session.delete(await get_contact(session, contact_id))
    await session.flush()


async def check(session: AsyncSession, kind: str, value: str) -> ContactCheck:
    """Whether a contact a customer was given is the store's. Malformed or unknown: not official."""
    _kind(kind)
    try:
        normalized = normalize_contact(kind, value)
    except ValidationFailed:
        return ContactCheck(False, kind, value, _text(value).lower(), None)
    if kind != "url":
        row = await session.scalar(select(OfficialContact).where(OfficialContact.kind == kind,
                                                                 OfficialContact.normalized == normalized))
        return ContactCheck(row is not None, kind, value, normalized, row.label if row else None)
    covering = [row for row in await list_contacts(session, "url") if url_covers(row.normalized, normalized)]
    if not covering:
        return ContactCheck(False, kind, value, normalized, None)
    best = max(covering, key=lambda row: len(row.normalized))  # the most specific registration
    return ContactCheck(True, kind, value, normalized, best.label)


def contact_view(contact: OfficialContact) -> dict:
    return {"id": contact.id, "kind": contact.kind, "value": contact.value, "normalized": contact.normalized,
            "label": contact.label, "created_at": contact.created_at.isoformat()}
