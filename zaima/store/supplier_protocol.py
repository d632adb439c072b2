"""The supplier wire protocol spoken by the HTTP adapter and the built-in demo supplier.

Requests and callbacks are JSON, signed with HMAC-SHA256 over the sorted `k=v` pairs (nested
values as compact sorted JSON, `sign` excluded) under the shared secret. See docs/suppliers.md.
"""

from __future__ import annotations

import hashlib
import hmac
import json

SUPPLIER_STATES = ("accepted", "processing", "unconfirmed", "succeeded", "failed")


def _value(v) -> str:
    if isinstance(v, dict | list):
        return json.dumps(v, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return str(v)


def canonical(params: dict) -> str:
    return "&".join(f"{k}={_value(params[k])}" for k in sorted(params) if k != "sign" and params[k] is not None)


def sign(params: dict, secret: str) -> str:
    return hmac.new(secret.encode(), canonical(params).encode("utf-8"), hashlib.sha256).hexdigest()


def verify(params: dict, secret: str) -> bool:
    given = str(params.get("sign") or "")
    if not given or not given.isascii():  # a hex digest is ASCII; compare_digest refuses other text
        return False
    try:
        expected = sign(params, secret)
    except UnicodeEncodeError:  # a value no supplier could have signed (an unpaired surrogate)
        return False
    return hmac.compare_digest(given, expected)
