"""Staff accounts (operators and agents) and their authentication."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from zaima.core.errors import Conflict, ValidationFailed
from zaima.core.passwords import hash_password, verify_password
from zaima.models import StaffUser

ROLES = ("agent", "supervisor", "admin")


async def create_staff(session: AsyncSession, clock, username: str, password: str, role: str = "agent",
                       display_name: str | None = None) -> StaffUser:
    if role not in ROLES:
        raise ValidationFailed("角色必须是 agent、supervisor 或 admin", "role must be agent, supervisor or admin")
    if len(password) < 8:
        raise ValidationFailed("密码至少 8 位", "password must be at least 8 characters")
    if await session.scalar(select(StaffUser.id).where(StaffUser.username == username)):
        raise Conflict(f"用户名 {username} 已存在", f"username {username} exists")
    user = StaffUser(username=username, display_name=display_name or username, password_hash=hash_password(password),
                     role=role, active=True, created_at=clock.now())
    session.add(user)
    await session.flush()
    return user


async def authenticate(session: AsyncSession, username: str, password: str) -> StaffUser | None:
    # A name no account can have (too long for the column, control characters such as NUL that PostgreSQL
    # refuses in a query) is simply a wrong login; the hash check still runs, so timing says nothing.
    possible = isinstance(username, str) and len(username) <= 64 and username.isprintable()
    user = await session.scalar(select(StaffUser).where(StaffUser.username == username)) if possible else None
    ok = verify_password(user.password_hash if user else None, password)
    return user if ok and user is not None and user.active else None
