"""Small HMAC helpers: order access tokens and signed, expiring values."""

from __future__ import annotations

import base64
import hashlib
import hmac


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def order_access_token(secret: str, order_no: str) -> str:
    """Proof of ownership of one order: given to the buyer at checkout and after a lookup."""
    mac = hmac.new(secret.encode(), f"order-access:{order_no}".encode(), hashlib.sha256).digest()
    return _b64(mac[:18])


def check_order_access_token(secret: str, order_no: str, token: str | None) -> bool:
    if not token:
        return False
    return hmac.compare_digest(order_access_token(secret, order_no), token)
