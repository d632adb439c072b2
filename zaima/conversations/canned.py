"""Canned responses (快捷回复): prepared replies an agent picks by typing "/" and a shortcut prefix."""

from __future__ import annotations

import re
import unicodedata

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from zaima.conversations.text import clean_text
from zaima.core.errors import Conflict, NotFound, ValidationFailed
from zaima.models import CannedResponse

# Lowercase letters, digits, _ and -, or Chinese characters (e.g. "refund", "退款").
SHORTCUT = re.compile(r"^[a-z0-9_\-\u4e00-\u9fff]{1,32}$")
TITLE_MAX = 100


def normalize_shortcut(text: str | None) -> str:
    value = unicodedata.normalize("NFKC", text or "").strip().lstrip("/").lower()
    if not SHORTCUT.match(value):
        raise ValidationFailed("快捷短语需为 1–32 个字母、数字、下划线、连字符或汉字",
                               "a shortcut is 1–32 letters, digits, _, - or Chinese characters", field="shortcut")
    return value


def _title(text: str | None) -> str:
    value = " ".join((text or "").split())
    if not value or len(value) > TITLE_MAX or not value.isprintable():
        raise ValidationFailed(f"标题需为 1–{TITLE_MAX} 个字", f"the title must be 1–{TITLE_MAX} characters",
                               field="title")
    return value


async def _check_free(session: AsyncSession, shortcut: str, own_id: int | None = None) -> None:
    taken = await session.scalar(select(CannedResponse.id).where(CannedResponse.shortcut == shortcut))
    if taken is not None and taken != own_id:
        raise Conflict(f"快捷短语 /{shortcut} 已存在", f"the shortcut /{shortcut} already exists", field="shortcut")


async def create_canned(session: AsyncSession, clock, settings, shortcut: str, title: str, body: str) -> CannedResponse:
    value = normalize_shortcut(shortcut)
    canned = CannedResponse(shortcut=value, title=_title(title),
                            body=clean_text(body, settings.message_max_chars), created_at=clock.now(),
                            updated_at=clock.now())
    await _check_free(session, value)
    session.add(canned)
    await session.flush()  # a concurrent twin fails on the unique shortcut; transact() retries into Conflict
    return canned


async def get_canned(session: AsyncSession, canned_id: int) -> CannedResponse:
    canned = await session.get(CannedResponse, canned_id) if isinstance(canned_id, int) else None
    if canned is None:
        raise NotFound("未找到该快捷回复", "canned response not found")
    return canned


async def update_canned(session: AsyncSession, clock, settings, canned_id: int, *, shortcut: str | None = None,
                        title: str | None = None, body: str | None = None) -> CannedResponse:
    canned = await get_canned(session, canned_id)
    if shortcut is not None:
        value = normalize_shortcut(shortcut)
        await _check_free(session, value, canned.id)
        canned.shortcut = value
    if title is not None:
        canned.title = _title(title)
    if body is not None:
        canned.body = clean_text(body, settings.message_max_chars)
    canned.updated_at = clock.now()
    await session.flush()
    return canned


async def delete_canned(session: AsyncSession, canned_id: int) -> None:
    await session.delete(await get_canned(session, canned_id))
    await session.flush()


async def list_canned(session: AsyncSession) -> list[CannedResponse]:
    return list(await session.scalars(select(CannedResponse).order_by(CannedResponse.shortcut)))


async def search_canned(session: AsyncSession, prefix: str, limit: int = 10) -> list[CannedResponse]:
    """Responses whose shortcut starts with what the agent typed after "/" (empty: the first few)."""
    value = unicodedata.normalize("NFKC", prefix or "").strip().lstrip("/").lower()
    query = select(CannedResponse)
    if value:
        query = query.where(CannedResponse.shortcut.startswith(value, autoescape=True))
    rows = await session.scalars(query.order_by(CannedResponse.shortcut).limit(max(1, min(limit, 50))))
    return list(rows)
