"""Order numbers: unguessable (60 random bits) yet easy to read aloud and type.

Crockford base32 without I, L, O, U; shown as three groups of four (K7Q3-9XDM-2PHT), stored
without dashes. Input is forgiving: case, spaces, dashes, and O/I/L typed for 0/1.
"""

from __future__ import annotations

import re
import secrets
import unicodedata

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ORDER_NO_LENGTH = 12
_TRANSLATE = str.maketrans({"O": "0", "I": "1", "L": "1"})
_CANONICAL = re.compile(rf"^[{ALPHABET}]{{{ORDER_NO_LENGTH}}}$")


def new_order_no() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(ORDER_NO_LENGTH))


def normalize_order_no(text: str) -> str | None:
    """Canonical form of what a customer typed, or None when it cannot be an order number."""
    # NFKC first: full-width input from a Chinese IME (Ｋ７Ｑ３－９ＸＤＭ) means the ASCII characters.
    cleaned = re.sub(r"[\s\-_—–·.]", "", unicodedata.normalize("NFKC", text or "")).upper().translate(_TRANSLATE)
    return cleaned if _CANONICAL.match(cleaned) else None


def display_order_no(order_no: str) -> str:
    return "-".join(order_no[i : i + 4] for i in range(0, len(order_no), 4))
