"""The operator's settings: one JSON value per key in `store_settings`, read and replaced whole."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from zaima.models import StoreSetting


async def read_setting(session: AsyncSession, key: str) -> dict | None:
    row = await session.get(StoreSetting, key)
    return row.value if row else None


async def write_setting(session: AsyncSession, key: str, value: dict) -> None:
    row = await session.get(StoreSetting, key)
    if row is None:
        session.add(StoreSetting(key=key, value=value))
    else:
        row.value = value  # a new object: the JSON column only notices assignment
    await session.flush()
