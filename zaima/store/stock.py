"""Card-key stock: import, encrypted storage, and allocation that never sells one key twice.

Allocation is compare-and-set: candidate rows are picked (with `FOR UPDATE SKIP LOCKED` on
PostgreSQL so concurrent buyers take different rows) and then moved with a conditional UPDATE
whose `status` guard and affected-row count decide who got what. A row that another transaction
moved first is simply not ours; we pick again.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from zaima import sql
from zaima.core.crypto import SecretBox
from zaima.core.errors import ValidationFailed
from zaima.models import CardKey, ImportBatch, Product

MAX_LINE_CHARS = 500
PAIR_SEPARATORS = ("----", "\t", ",")


def key_context(product_id: int) -> str:
    return f"card_key:{product_id}"


@dataclass
class ParsedLine:
    line_no: int
    secret: str


@dataclass
class ParseReport:
    keys: list[ParsedLine] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line number, zh-CN reason)


_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def split_lines(text: str) -> list[str]:
    """Lines as an editor numbers them. Not `str.splitlines()`, which also breaks at \\x0b, \\x0c,
    \\x1c-\\x1e, \\x85 and U+2028/U+2029: a stray control character would vanish unreported and
    shift every line number after it."""
    return _LINE_BREAK.split(text)


def parse_key_lines(lines: Iterable[str]) -> ParseReport:
    """One key per line, or a `key,password` / `account----password` / tab-separated pair.

    Blank lines and lines starting with `#` are skipped. Pairs are stored as `first----second`.
    """
    report = ParseReport()
    for line_no, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n").strip()
        if line_no == 1:
            line = line.lstrip("\ufeff")
        if not line or line.startswith("#"):
            continue
        if "\ufffd" in line:
            report.errors.append((line_no, "包含无法识别的字符（文件编码应为 UTF-8）"))
            continue
        if any(unicodedata.category(ch) == "Cc" and ch != "\t" for ch in line):
            report.errors.append((line_no, "包含控制字符"))
            continue
        if len(line) > MAX_LINE_CHARS:
            report.errors.append((line_no, f"超过 {MAX_LINE_CHARS} 个字符"))
            continue
        parts = None
        for sep in PAIR_SEPARATORS:
            if sep in line:
                parts = [p.strip() for p in line.split(sep)]
                break
        if parts is None:
            if any(ch.isspace() for ch in line):
                report.errors.append((line_no, "卡密中间有空格；卡号和密码请用英文逗号或 ---- 分隔"))
                continue
            report.keys.append(ParsedLine(line_no, line))
            continue
        if len(parts) != 2:
            report.errors.append((line_no, f"应为“卡号,密码”两段，实际有 {len(parts)} 段"))
        elif not parts[0] or not parts[1]:
            report.errors.append((line_no, "卡号或密码为空"))
        else:
            report.keys.append(ParsedLine(line_no, f"{parts[0]}----{parts[1]}"))
    return report


@dataclass
class ImportResult:
    batch_id: int | None
    imported: int
    duplicates: list[int]  # line numbers skipped as duplicates (in the file or already in stock)
    errors: list[tuple[int, str]]


class ImportRejected(ValidationFailed):
    code = "import_malformed"

    def __init__(self, errors: list[tuple[int, str]]):
        shown = "；".join(f"第 {n} 行：{why}" for n, why in errors[:20])
        more = f"（另有 {len(errors) - 20} 行）" if len(errors) > 20 else ""
        super().__init__(
            f"导入文件有 {len(errors)} 行格式错误，未导入任何卡密：{shown}{more}",
            f"{len(errors)} malformed line(s); nothing was imported",
            lines=[{"line": n, "reason": why} for n, why in errors],
        )
        self.errors = errors


async def import_keys(session: AsyncSession, box: SecretBox, clock, product: Product, lines: Iterable[str],
                      source: str = "", actor: str = "",
                      progress: Callable[[int, int], None] | None = None) -> ImportResult:
    """Validate the whole file first; if any line is malformed, nothing is imported."""
    if not product.is_stocked:
        raise ValidationFailed("直充商品没有卡密库存", "recharge products have no key stock")
    report = parse_key_lines(lines)
    if report.errors:
        raise ImportRejected(report.errors)
    now = clock.now()
    existing = set(await session.scalars(select(CardKey.fingerprint).where(CardKey.product_id == product.id)))
    batch = ImportBatch(product_id=product.id, source=source[:200], actor=actor, created_at=now)
    session.add(batch)
    await session.flush()
    duplicates: list[int] = []
    rows: list[dict] = []
    context = key_context(product.id)
    total = len(report.keys)
    for i, parsed in enumerate(report.keys, start=1):
        fp = box.fingerprint(parsed.secret)
        if fp in existing:
            duplicates.append(parsed.line_no)
        else:
            existing.add(fp)
            rows.append(
                dict(product_id=product.id, batch_id=batch.id, ciphertext=box.encrypt(parsed.secret, context),
                     key_id=box.key_id, fingerprint=fp, status="available", status_reason="", created_at=now)
            )
        if progress and (i % 500 == 0 or i == total):
            progress(i, total)
    for start in range(0, len(rows), 1000):
        await session.execute(CardKey.__table__.insert(), rows[start : start + 1000])
    batch.imported = len(rows)
    batch.duplicates = len(duplicates)
    await session.flush()
    return ImportResult(batch.id, len(rows), duplicates, [])


_STAMPED = {"reserved": "reserved_at", "sold": "sold_at"}  # the time column each taken state records


def _take_statements(new_status: str) -> dict[str, sql.Prepared]:
    stamp = {_STAMPED[new_status]: bindparam("at")}
    available = (CardKey.product_id == bindparam("for_product")) & (CardKey.status == "available")
    # SQLite: one statement moves up to :need available keys (SQLite runs one writer at a time, and
    # evaluates the inner SELECT once).
    candidates = select(CardKey.id).where(available).order_by(CardKey.id).limit(bindparam("need"))
    on_sqlite = (update(CardKey).where(CardKey.id.in_(candidates.scalar_subquery()), CardKey.status == "available")
                 .values(status=new_status, order_id=bindparam("for_order"), **stamp))
    # PostgreSQL: one statement picks candidates, skipping keys other transactions are taking, and takes
    # them. The pick is a MATERIALIZED CTE: evaluated once (a LIMIT … FOR UPDATE SKIP LOCKED inside the
    # UPDATE's IN could be evaluated more than once), and the keys it locked are ours to move.
    picked = (select(CardKey.id).where(available).order_by(CardKey.id).limit(bindparam("need"))
              .with_for_update(skip_locked=True).cte("picked").prefix_with("MATERIALIZED"))
    on_postgresql = (update(CardKey).where(CardKey.id == picked.c.id, CardKey.status == "available")
                     .values(status=new_status, order_id=bindparam("for_order"), **stamp))
    return sql.per_dialect(sqlite=on_sqlite, postgresql=on_postgresql)


_TAKE = {status: _take_statements(status) for status in _STAMPED}


async def _take(session: AsyncSession, product_id: int, order_id: int, need: int, new_status: str, now) -> int:
    """Move up to `need` available keys to `new_status` for `order_id`; returns how many we got.

    Compare-and-set: the UPDATE's `status = 'available'` guard and its row count decide who got a key."""
    got = 0
    while got < need:  # PostgreSQL may skip keys another transaction holds and later lets go: ask again
        taken = await sql.execute(session, _TAKE[new_status], for_product=product_id, for_order=order_id,
                                  need=need - got, at=now)
        got += taken
        if not taken or session.bind.dialect.name != "postgresql":
            break
    return got


async def reserve_keys(session: AsyncSession, product_id: int, order_id: int, quantity: int, now) -> int:
    """Reserve up to `quantity` keys for a new order; returns how many were reserved.

    Where it may (`sql.may_assume`), the reservation is queued with the checkout's other writes on the
    assumption that the stock covers the order, as it nearly always does: the whole checkout is then one
    statement. Stock that comes up short undoes that statement, and the checkout runs again in a session,
    which takes the keys here and learns how many it got."""
    if sql.may_assume(session):
        await sql.defer(session, _TAKE["reserved"], expect=quantity, assumed=True, for_product=product_id,
                        for_order=order_id, need=quantity, at=now)
        return quantity
    return await _take(session, product_id, order_id, quantity, "reserved", now)


_SELL_RESERVED = sql.Prepared(update(CardKey).where(CardKey.order_id == bindparam("for_order"),
                                                    CardKey.status == "reserved")
                              .values(status="sold", sold_at=bindparam("at")))


async def sell_keys(session: AsyncSession, product_id: int, order_id: int, quantity: int, now) -> int:
    """Sell the order's own reservations first, then take more from available stock. Where it may
    (`sql.may_assume`), the sale of the reservations is queued on the assumption that they cover the order
    (a payment before expiry): a miss reruns the unit in a session, which takes the path below."""
    if sql.may_assume(session):
        await sql.defer(session, _SELL_RESERVED, expect=quantity, assumed=True, for_order=order_id, at=now)
        return quantity
    sold = min(await sql.execute(session, _SELL_RESERVED, for_order=order_id, at=now), quantity)
    if sold < quantity:
        sold += await _take(session, product_id, order_id, quantity - sold, "sold", now)
    return sold


async def release_reservations(session: AsyncSession, order_id: int) -> int:
    result = await session.execute(
        update(CardKey)
        .where(CardKey.order_id == order_id, CardKey.status == "reserved")
        .values(status="available", order_id=None, reserved_at=None)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount


async def available_count(session: AsyncSession, product_id: int) -> int:
    return await session.scalar(
        select(func.count()).select_from(CardKey).where(CardKey.product_id == product_id,
                                                         CardKey.status == "available")
    ) or 0


CardKeyRow = sql.row_type(CardKey)


@functools.cache
def _keys_of_order(statuses: tuple[str, ...]) -> sql.Prepared:
    return sql.Prepared(select(*CardKey.__table__.columns)
                        .where(CardKey.order_id == bindparam("for_order"), or_(*(CardKey.status == s for s in statuses)))
                        .order_by(CardKey.id))


async def keys_of_order(session: AsyncSession, order_id: int, statuses=("sold",)) -> list[CardKeyRow]:
    """The order's keys in these states, as rows (read-only; keys change state only through the guarded
    UPDATEs here and in `aftersales`)."""
    if not statuses:
        return []  # (an empty OR would match keys in every state)
    return [CardKeyRow.of(r) for r in await sql.fetch(session, _keys_of_order(tuple(statuses)), for_order=order_id)]


def reveal(box: SecretBox, key: CardKey | CardKeyRow) -> str:
    return box.decrypt(key.ciphertext, key_context(key.product_id))


async def reveal_order_keys(session: AsyncSession, box: SecretBox, clock, order, actor) -> list[dict]:
    """An order's keys in plaintext for staff. Every reveal is written to the order's audit log, with
    who did it and (for an agent in the console) from which conversation."""
    from zaima.store import timeline

    keys = await keys_of_order(session, order.id, ("sold", "quarantined"))
    await timeline.record(session, order, "keys_revealed", actor, clock.now(), key_ids=[k.id for k in keys])
    return [{"id": k.id, "status": k.status, "secret": reveal(box, k)} for k in keys]
