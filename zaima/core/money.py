"""Money is integer fen (分). Conversions to and from yuan strings go through Decimal, never float."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_YUAN = re.compile(r"^\d{1,9}(\.\d{1,2})?$")


class MoneyFormatError(ValueError):
    pass


def parse_yuan(text: str) -> int:
    """'12.3' -> 1230. Rejects negatives, more than two decimals, exponents and garbage."""
    text = str(text).strip()
    if not _YUAN.match(text):
        raise MoneyFormatError(f"not an amount in yuan: {text!r}")
    try:
        value = Decimal(text)
    except InvalidOperation as exc:  # pragma: no cover - the regex already guards
        raise MoneyFormatError(f"not an amount in yuan: {text!r}") from exc
    return int(value * 100)


def format_yuan(fen: int) -> str:
    """1230 -> '12.30' (the form epay signs)."""
    sign = "-" if fen < 0 else ""
    fen = abs(int(fen))
    return f"{sign}{fen // 100}.{fen % 100:02d}"


def yuan_label(fen: int) -> str:
    return "¥" + format_yuan(fen)
