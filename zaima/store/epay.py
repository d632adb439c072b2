"""易支付 (epay) V1: signing, the pay link, notify verification, and the merchant API client.

Signing rule: drop `sign`, `sign_type` and empty values; sort the keys by ASCII; join as
`k=v&k2=v2` without URL-encoding; append the merchant key directly; lowercase hex MD5.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import urlencode

import httpx

from zaima.core.http import PooledClient

PAY_TYPES = {"alipay": "支付宝", "wxpay": "微信支付", "qqpay": "QQ钱包"}


def signing_string(params: dict[str, object]) -> str:
    items = sorted(
        (str(k), str(v))
        for k, v in params.items()
        if k not in ("sign", "sign_type") and v is not None and str(v) != ""
    )
    return "&".join(f"{k}={v}" for k, v in items)


def sign(params: dict[str, object], key: str) -> str:
    return hashlib.md5((signing_string(params) + key).encode("utf-8")).hexdigest()


def verify(params: dict[str, object], key: str) -> bool:
    given = str(params.get("sign") or "").lower()
    # Compare bytes: compare_digest raises TypeError on a str with non-ASCII characters (a forged sign).
    return bool(given) and hmac.compare_digest(given.encode("utf-8"), sign(params, key).encode("ascii"))


def signed(params: dict[str, object], key: str) -> dict[str, str]:
    out = {k: str(v) for k, v in params.items() if v is not None}
    out["sign"] = sign(out, key)
    out["sign_type"] = "MD5"
    return out


def pay_url(gateway: str, pid: str, key: str, *, out_trade_no: str, money: str, name: str,
            pay_type: str, notify_url: str, return_url: str) -> str:
    params = signed(
        {
            "pid": pid,
            "type": pay_type,
            "out_trade_no": out_trade_no,
            "notify_url": notify_url,
            "return_url": return_url,
            "name": name,
            "money": money,
        },
        key,
    )
    return gateway.rstrip("/") + "/submit.php?" + urlencode(params)


class EpayError(Exception):
    """The gateway could not be reached or answered with something we cannot use."""


@dataclass
class TradeStatus:
    paid: bool
    trade_no: str
    money: str
    pay_type: str
    raw: dict


class EpayClient:
    """Merchant API (`api.php`): active order query and refund."""

    def __init__(self, gateway: str, pid: str, key: str, timeout: float = 10.0,
                 transport: httpx.AsyncBaseTransport | None = None):
        self.api = gateway.rstrip("/") + "/api.php"
        self.pid = pid
        self.key = key
        self.http = PooledClient(timeout, transport)

    async def _call(self, method: str, params: dict) -> dict:
        try:
            client = self.http.get()
            if method == "GET":
                response = await client.get(self.api, params=params)
            else:
                response = await client.post(self.api, data=params)
            return response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise EpayError(f"epay api unreachable or invalid answer: {exc.__class__.__name__}") from exc

    async def query(self, out_trade_no: str) -> TradeStatus | None:
        """None when the gateway does not know the trade (never paid, never opened)."""
        body = await self._call(
            "GET", {"act": "order", "pid": self.pid, "key": self.key, "out_trade_no": out_trade_no}
        )
        if str(body.get("code")) != "1":
            return None
        if str(body.get("out_trade_no", "")) != out_trade_no:
            raise EpayError("epay query answered for another order")
        return TradeStatus(
            paid=str(body.get("status")) == "1",
            trade_no=str(body.get("trade_no", "")),
            money=str(body.get("money", "")),
            pay_type=str(body.get("type", "")),
            raw=body,
        )

    async def refund(self, out_trade_no: str, money: str) -> tuple[bool, str]:
        body = await self._call(
            "POST",
            {"act": "refund", "pid": self.pid, "key": self.key, "out_trade_no": out_trade_no, "money": money},
        )
        return str(body.get("code")) == "1", str(body.get("msg", ""))
