"""Money is integer fen (分). Conversions to and from yuan strings go through Decimal, never float."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_YUAN = re.compile(r"^[0-9]{1,9}(\.[0-9]{1,2})?$")  # ASCII digits only: `\d` also matches "１２"


class MoneyFormatError(ValueError):
    pass


def parse_yuan(text: str) -> int:
    """'12.3' -> 1230. Rejects negatives, more than two decimals, exponents and garbage."""
    if not isinstance(text, str):  # a float has already lost the exact amount
        raise MoneyFormatError(f"amount must be a string of yuan, not {type(text).__name__}")
    text = text.strip()
    if not _YUAN.match(text):
        raise MoneyFormatError(f"not an amount in yuan: {text!r}")
    try:
        value = Decimal(text)
    except InvalidOperation as exc:  # pragma: no cover - the regex already guards
        raise MoneyFormatError(f"not an amount in yuan: {text!r}") from exc
    return int(value * 100)


def format_yuan(fen: int) -> str:
    """1230 -> '12.30' (the form epay signs)."""
    if isinstance(fen, bool) or not isinstance(fen, int):  # int(12.999) would silently drop fen
        raise TypeError(f"amount must be integer fen, not {type(fen).__name__}")
    sign = "-" if fen < 0 else ""
    fen = abs(fen)
    return f"{sign}{fen // 100}.{fen % 100:02d}"


def yuan_label(fen: int) -> str:
    return "¥" + format_yuan(fen)
