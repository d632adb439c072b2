"""Checks on text people type: what a message or canned response body may contain."""

from __future__ import annotations

import unicodedata

from zaima.core.errors import ValidationFailed

ALLOWED_CONTROLS = {"\n", "\t"}


def clean_text(text: str | None, max_chars: int, *, allow_empty: bool = False, field: str = "body") -> str:
    """Text with unified newlines and outer whitespace stripped, or a clear error.

    NUL and other control characters (Unicode category Cc, except newline and tab) are refused rather
    than silently dropped: they never come from a keyboard, and they break logs, terminals and exports.
    """
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise ValidationFailed("消息内容必须是文本", "the message must be text", field=field)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    # Checked before stripping: str.strip() would quietly eat some controls (\x1c-\x1f, \x85) at the ends.
    if any(unicodedata.category(ch) == "Cc" and ch not in ALLOWED_CONTROLS for ch in text):
        raise ValidationFailed("消息包含不可见的控制字符，请删除后重新发送",
                               "the message contains control characters; remove them and send again",
                               field=field)
    text = text.strip()
    if len(text) > max_chars:
        raise ValidationFailed(f"消息不能超过 {max_chars} 个字（当前 {len(text)} 个）",
                               f"a message can be at most {max_chars} characters (this one has {len(text)})",
                               field=field, max_chars=max_chars)
    if not text and not allow_empty:
        raise ValidationFailed("消息不能为空", "the message is empty", field=field)
    return text
