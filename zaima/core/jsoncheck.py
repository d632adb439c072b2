"""What JSON from outside may not carry, whatever the endpoint: checked once where JSON comes in (HTTP
bodies in `zaima.web.json_guard`, socket frames in `zaima.web.socket_base`), so no model or column has to.

- A lone UTF-16 surrogate (`"\\ud800"` without its pair): `json` decodes it into a `str` that cannot be
  encoded as UTF-8, so it fails later, when the database or the response encodes it; worse, a JSON column
  stores it escaped and every later read of that row fails.
- An integer outside the signed 64-bit range: no id, count or amount of ours is that large, and the
  database refuses to bind it.
- Nesting deeper than Python's parser allows (it raises RecursionError, not a JSON error).

And the other side of the same coin: `storable_text`, for text from another system (a gateway, a
supplier) that must be kept whatever it holds.
"""

from __future__ import annotations

import json
import re

MAX_INT = 2**63 - 1
# Cheap tests on the raw text first; the full walk runs only when one of them matches.
_SUSPECT_TEXT = re.compile(r"\\u[dD][89a-fA-F]|\d{19}")
_SUSPECT_BYTES = re.compile(rb"\\u[dD][89a-fA-F]|\d{19}")
_DEEP = 400  # opening brackets before the text is parsed to check its depth

PROBLEMS = {
    "surrogate": ("含有无法识别的字符（不成对的 Unicode 代理项），请检查输入内容",
                  "contains an unpaired Unicode surrogate, which is not a character"),
    "int_range": ("数字超出范围", "a number is out of range"),
    "too_deep": ("嵌套层级过深", "nested too deeply"),
}


def _is_clean_text(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def problem_in(value) -> str | None:
    """'surrogate', 'int_range' or None, for a decoded JSON value (walked without recursion)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not _is_clean_text(item):
                return "surrogate"
        elif isinstance(item, bool) or item is None or isinstance(item, float):
            continue
        elif isinstance(item, int):
            if not -MAX_INT - 1 <= item <= MAX_INT:
                return "int_range"
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def problem_in_raw(raw: str | bytes) -> str | None:
    """The problem of a raw JSON document, or None (also None when it is not valid JSON at all: that is
    for the caller's parser to say)."""
    is_bytes = isinstance(raw, bytes)
    if is_bytes and raw:
        encoding = json.detect_encoding(raw)  # what json.loads will read it as: UTF-16/32 hide from a byte scan
        if encoding != "utf-8":
            try:
                raw, is_bytes = raw.decode(encoding, "surrogatepass"), False
            except UnicodeDecodeError:
                return None  # not JSON: the parser will say so
    suspect = (_SUSPECT_BYTES if is_bytes else _SUSPECT_TEXT).search(raw) is not None
    if not suspect:
        brackets = raw.count(b"[" if is_bytes else "[") + raw.count(b"{" if is_bytes else "{")
        if brackets < _DEEP:
            return None
    try:
        value = json.loads(raw)
    except RecursionError:
        return "too_deep"
    except ValueError:
        return None
    return problem_in(value)


def storable_text(value, limit: int) -> str:
    """Text another system sent us (a gateway's trade number, a supplier's message), made storable as it
    is: NUL written as the visible `\\x00` (PostgreSQL text cannot hold it), an unpaired surrogate as `?`,
    cut to the column's `limit`. For values we must keep whatever they hold, where refusing would lose a
    real payment or recharge result."""
    text = "" if value is None else str(value)
    if not _is_clean_text(text):
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text.replace("\x00", "\\x00")[:limit]
