"""Small HMAC helpers: order access tokens and signed, expiring tokens with an audience."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def order_access_token(secret: str, order_no: str) -> str:
    """Proof of ownership of one order: given to the buyer at checkout and after a lookup."""
    mac = hmac.digest(secret.encode(), f"order-access:{order_no}".encode(), "sha256")  # one call into OpenSSL
    return _b64(mac[:18])


def check_order_access_token(secret: str, order_no: str, token: str | None) -> bool:
    if not token or not isinstance(token, str) or not token.isascii():  # ours are base64url: ASCII
        return False
    return hmac.compare_digest(order_access_token(secret, order_no), token)


# --- signed, expiring tokens with an audience -----------------------------------------------------------------
#
# Format: base64url(JSON {"aud", "exp", "p"}) "." base64url(HMAC-SHA256). The MAC key is derived per
# audience from the secret, so a token minted for one audience ("customer") cannot verify for another
# ("staff") even if its body were edited: the audience is checked twice, by key and by field.

TOKEN_MAX_LENGTH = 4096


def _audience_key(secret: str, audience: str) -> bytes:
    return hmac.new(secret.encode(), f"zaima-token:{audience}".encode(), hashlib.sha256).digest()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_token(secret: str, audience: str, payload: dict, expires_at: int) -> str:
    """A URL-safe token carrying `payload` for `audience`, valid until `expires_at` (unix seconds)."""
    if not secret or not audience:
        raise ValueError("a token needs a secret and an audience")
    body = json.dumps({"aud": audience, "exp": int(expires_at), "p": payload}, separators=(",", ":"),
                      sort_keys=True, ensure_ascii=False).encode()
    encoded = _b64(body)
    mac = hmac.new(_audience_key(secret, audience), encoded.encode(), hashlib.sha256).digest()
    return f"{encoded}.{_b64(mac)}"


def verify_token(secret: str, audience: str, token: str | None, now: int) -> dict | None:
    """The payload if `token` is intact, meant for `audience` and not expired at `now` (unix seconds);
    None otherwise. The signature is compared in constant time before anything is parsed."""
    if not secret or not token or not isinstance(token, str) or len(token) > TOKEN_MAX_LENGTH or not token.isascii():
        return None
    encoded, dot, mac_text = token.partition(".")
    if not dot or not encoded or not mac_text:
        return None
    expected = _b64(hmac.new(_audience_key(secret, audience), encoded.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(expected.encode(), mac_text.encode()):
        return None
    try:
        body = json.loads(_unb64(encoded))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(body, dict) or body.get("aud") != audience:
        return None
    exp, payload = body.get("exp"), body.get("p")
    if not isinstance(exp, int) or isinstance(exp, bool) or now >= exp or not isinstance(payload, dict):
        return None
    return payload
