"""Importing card keys: all-or-nothing on malformed lines, duplicates skipped and reported by line,
`key,password` and `account----password` pairs; through the service, the admin upload and the CLI."""

import asyncio

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from tests.store.helpers import add_stock, make_order, make_product, notify_params
from zaima.cli import app as cli_app
from zaima.core.errors import ValidationFailed
from zaima.db import unit_of_work
from zaima.models import CardKey, ImportBatch, Order
from zaima.staff import create_staff
from zaima.store import payments, stock
from zaima.store.stock import ImportRejected

ADMIN = ("ops-admin", "admin-password-1")
AGENT = ("agent-wang", "agent-password-1")

TOO_LONG = "K" * 501
BAD_FILE = [
    "GOOD-0001",            # 1
    "BAD\x07BELL",          # 2 control character
    "abc,",                 # 3 empty password
    "a,b,c",                # 4 three fields
    TOO_LONG,               # 5 too long
    "acc----pwd",           # 6 fine
    "",                     # 7 blank: skipped
    "# a comment",          # 8 skipped
    "two words",            # 9 a space inside a single key
    ",pwd",                 # 10 empty card number
]
BAD_LINES = {2: "包含控制字符", 3: "卡号或密码为空", 4: "应为“卡号,密码”两段，实际有 3 段", 5: "超过 500 个字符",
             9: "卡密中间有空格；卡号和密码请用英文逗号或 ---- 分隔", 10: "卡号或密码为空"}


async def stored_secrets(ctx, product) -> list[str]:
    async with unit_of_work(ctx.sessions) as session:
        rows = await session.scalars(select(CardKey).where(CardKey.product_id == product.id).order_by(CardKey.id))
        return [stock.reveal(ctx.box, k) for k in rows]


async def batch_count(ctx) -> int:
    async with unit_of_work(ctx.sessions) as session:
        return await session.scalar(select(func.count()).select_from(ImportBatch))


async def make_staff(ctx):
    async with unit_of_work(ctx.sessions) as session:
        await create_staff(session, ctx.clock, ADMIN[0], ADMIN[1], role="admin")
        await create_staff(session, ctx.clock, AGENT[0], AGENT[1], role="agent")


# --- the service ----------------------------------------------------------------------------------------------


async def test_a_file_with_bad_lines_is_rejected_with_line_numbers_and_nothing_is_imported(ctx):
    product = await make_product(ctx)
    with pytest.raises(ImportRejected) as err:
        await add_stock(ctx, product, BAD_FILE)
    assert dict(err.value.errors) == BAD_LINES
    assert err.value.message_zh.startswith("导入文件有 6 行格式错误，未导入任何卡密：第 2 行：包含控制字符；第 3 行：")
    assert err.value.details["lines"][0] == {"line": 2, "reason": "包含控制字符"}
    assert await stored_secrets(ctx, product) == []
    assert await batch_count(ctx) == 0


async def test_duplicates_in_the_file_and_in_stock_are_skipped_and_reported_by_line(ctx):
    product = await make_product(ctx)
    await add_stock(ctx, product, ["DUP-A", "k9----p9"])
    result = await add_stock(ctx, product, [
        "DUP-A",             # 1 already in stock
        "NEW-1",             # 2
        "NEW-1",             # 3 twice in this file
        "k1,p1",             # 4 pair with a comma
        "k1----p1",          # 5 the same pair written the other way
        "acc----pwd",        # 6
        "  NEW-2  \r",       # 7 surrounding whitespace and a CR are not part of the key
        "k9 , p9",           # 8 already in stock as k9----p9
        "user\tpass",        # 9 tab-separated pair
    ])
    assert result.duplicates == [1, 3, 5, 8]
    assert result.imported == 5
    assert await stored_secrets(ctx, product) == ["DUP-A", "k9----p9", "NEW-1", "k1----p1", "acc----pwd", "NEW-2",
                                                  "user----pass"]
    async with unit_of_work(ctx.sessions) as session:
        batch = await session.get(ImportBatch, result.batch_id)
        assert (batch.imported, batch.duplicates) == (5, 4)


async def test_the_same_key_may_be_stocked_under_two_products(ctx):
    first, second = await make_product(ctx, sku="p-a"), await make_product(ctx, sku="p-b")
    await add_stock(ctx, first, ["SHARED-1"])
    result = await add_stock(ctx, second, ["SHARED-1"])
    assert (result.imported, result.duplicates) == (1, [])


async def test_a_utf8_bom_and_crlf_line_endings_are_not_part_of_the_first_key(ctx):
    product = await make_product(ctx)
    result = await add_stock(ctx, product, ["\ufeffBOM-1\r\n", "BOM-2\r\n"])
    assert result.imported == 2
    assert await stored_secrets(ctx, product) == ["BOM-1", "BOM-2"]


async def test_recharge_products_have_no_key_stock(ctx):
    product = await make_product(ctx, kind="recharge")
    with pytest.raises(ValidationFailed) as err:
        await add_stock(ctx, product, ["X-1"])
    assert err.value.message_zh == "直充商品没有卡密库存"


def test_a_key_file_is_split_only_at_real_line_breaks():
    # \x1c, \x0c and U+2028 are line boundaries to str.splitlines() but not to a text editor.
    assert stock.split_lines("a\r\nb\rc\nAAA\x1cBBB\x0cC\u2028D\n") == ["a", "b", "c", "AAA\x1cBBB\x0cC\u2028D", ""]
    report = stock.parse_key_lines(stock.split_lines("GOOD-1\nAAA\x1cBBB\nGOOD-2\nX\u2028Y\n"))
    assert report.errors == [(2, "包含控制字符"), (4, "卡密中间有空格；卡号和密码请用英文逗号或 ---- 分隔")]


# --- the admin upload -----------------------------------------------------------------------------------------


async def test_admin_upload_rejects_a_bad_file_with_line_numbers_and_imports_nothing(ctx, client):
    await make_product(ctx, sku="up-1")
    await make_staff(ctx)
    reply = await client.post("/api/v1/admin/products/up-1/keys", auth=ADMIN,
                              files={"file": ("keys.txt", "\n".join(BAD_FILE).encode(), "text/plain")})
    assert reply.status_code == 422
    error = reply.json()["error"]
    assert error["code"] == "import_malformed"
    assert "未导入任何卡密" in error["message"] and "第 4 行：应为“卡号,密码”两段，实际有 3 段" in error["message"]
    assert {d["line"]: d["reason"] for d in error["details"]["lines"]} == BAD_LINES
    listed = await client.get("/api/v1/admin/products/up-1/keys", auth=ADMIN)
    assert listed.json() == {"counts": {}, "keys": []}
    assert await batch_count(ctx) == 0


async def test_admin_upload_imports_pairs_reports_duplicates_and_delivers_waiting_orders(ctx, client):
    product = await make_product(ctx, sku="up-2")
    await make_staff(ctx)
    waiting = await make_order(ctx, product)
    assert await payments.handle_notify(ctx, notify_params(waiting)) == "accepted"
    content = "卡号1,密码1\r\nacc----pwd\r\n卡号1----密码1\r\n\r\nSOLO-KEY\r\n".encode()
    reply = await client.post("/api/v1/admin/products/up-2/keys", auth=ADMIN,
                              files={"file": ("新卡密.txt", content, "text/plain")})
    assert reply.status_code == 201, reply.text
    assert reply.json() == {"batch_id": reply.json()["batch_id"], "imported": 3, "duplicates": 1,
                            "duplicate_lines": [3], "backorders_delivered": 1}
    assert await stored_secrets(ctx, product) == ["卡号1----密码1", "acc----pwd", "SOLO-KEY"]
    async with unit_of_work(ctx.sessions) as session:
        assert (await session.get(Order, waiting.id)).status == "delivered"
        assert (await session.get(ImportBatch, reply.json()["batch_id"])).source == "新卡密.txt"


async def test_admin_upload_needs_an_admin_or_supervisor(ctx, client):
    product = await make_product(ctx, sku="up-3")
    await make_staff(ctx)
    files = {"file": ("k.txt", b"ROLE-1\n", "text/plain")}
    assert (await client.post("/api/v1/admin/products/up-3/keys", files=files)).status_code == 401
    refused = await client.post("/api/v1/admin/products/up-3/keys", auth=AGENT, files=files)
    assert refused.status_code == 403
    assert refused.json()["error"]["message"] == "此操作需要管理员权限"
    assert await stored_secrets(ctx, product) == []


async def test_admin_upload_reports_a_file_separator_character_as_a_bad_line(ctx, client):
    product = await make_product(ctx, sku="up-4")
    await make_staff(ctx)
    reply = await client.post("/api/v1/admin/products/up-4/keys", auth=ADMIN,
                              files={"file": ("k.txt", b"GOOD-1\nAAA\x1cBBB\nGOOD-2\n", "text/plain")})
    assert reply.status_code == 422
    assert {d["line"]: d["reason"] for d in reply.json()["error"]["details"]["lines"]} == {2: "包含控制字符"}
    assert await stored_secrets(ctx, product) == []


# --- the CLI --------------------------------------------------------------------------------------------------


def cli_env(settings) -> dict[str, str]:
    return {
        "ZAIMA_ENV": "test",
        "ZAIMA_DATABASE_URL": settings.database_url,
        "ZAIMA_VAR_DIR": str(settings.var_dir),
        "ZAIMA_SECRET_KEY": settings.secret_key,
        "ZAIMA_CARD_KEY_ENCRYPTION_KEY": settings.card_key_encryption_key,
    }


async def run_cli(settings, *args: str):
    # The CLI runs its own event loop (asyncio.run), so it gets a thread of its own.
    return await asyncio.to_thread(CliRunner().invoke, cli_app, list(args), env=cli_env(settings))


async def test_cli_import_reports_duplicates_by_line_and_delivers_waiting_orders(ctx, settings, tmp_path):
    product = await make_product(ctx, sku="cli-1")
    await add_stock(ctx, product, ["OLD-1"])
    waiting = [await make_order(ctx, product, contact=f"w{i}@example.com") for i in range(2)]
    for i, order in enumerate(waiting):
        assert await payments.handle_notify(ctx, notify_params(order, trade_no=f"W{i}")) == "accepted"
    path = tmp_path / "keys.txt"
    path.write_text("OLD-1\nCLI-1\nuser,pass\nCLI-1\nacc----pwd\n", encoding="utf-8")

    result = await run_cli(settings, "keys", "import", str(path), "--product", "cli-1")

    assert result.exit_code == 0, result.output
    assert "已导入 3 条" in result.output
    assert "跳过重复 2 条 / skipped duplicates, lines: 1, 4" in result.output
    assert "已为 1 个等待补货的订单发货" in result.output
    assert await stored_secrets(ctx, product) == ["OLD-1", "CLI-1", "user----pass", "acc----pwd"]
    async with unit_of_work(ctx.sessions) as session:
        statuses = sorted([(await session.get(Order, o.id)).status for o in waiting])
    assert statuses == ["delivered", "delivered"]


async def test_cli_import_of_a_bad_file_exits_non_zero_lists_the_lines_and_imports_nothing(ctx, settings, tmp_path):
    product = await make_product(ctx, sku="cli-2")
    path = tmp_path / "bad.txt"
    path.write_text("\n".join(BAD_FILE) + "\n", encoding="utf-8")

    result = await run_cli(settings, "keys", "import", str(path), "--product", "cli-2")

    assert result.exit_code == 1
    assert "未导入任何卡密" in result.output
    for line, reason in BAD_LINES.items():
        assert f"第 {line} 行 line {line}: {reason}" in result.output
    assert await stored_secrets(ctx, product) == []
    assert await batch_count(ctx) == 0


async def test_cli_import_for_an_unknown_product_says_so(ctx, settings, tmp_path):
    path = tmp_path / "keys.txt"
    path.write_text("X-1\n", encoding="utf-8")
    result = await run_cli(settings, "keys", "import", str(path), "--product", "nope")
    assert result.exit_code == 1
    assert "商品不存在或已下架" in result.output
