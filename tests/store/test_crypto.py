"""Card keys at rest: AES-GCM ciphertext bound to its product; plaintext never in the database or in a list."""

import os
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from sqlalchemy import select, text

from tests.store.helpers import add_stock, make_order, make_product, notify_params
from zaima.core.crypto import SecretBox
from zaima.core.signing import order_access_token
from zaima.db import Base, unit_of_work
from zaima.models import CardKey
from zaima.staff import create_staff
from zaima.store import payments
from zaima.store.stock import key_context, reveal

SECRETS = ["8Q3F-ZK2M-WX7P-4HJD", "steam-wallet----Pa55w0rd!", "充值卡密-一二三四五六-ABCD"]
AGENT = ("agent-li", "agent-password-1")


def substrings(secret: str, size: int = 4) -> set[bytes]:
    """Every `size`-byte window of the UTF-8 plaintext (for binary columns)."""
    raw = secret.encode("utf-8")
    return {raw[i:i + size] for i in range(len(raw) - size + 1)}


def fragments(secret: str, size: int = 4) -> set[str]:
    """Every `size`-character window of the plaintext (for text such as JSON answers)."""
    return {secret[i:i + size] for i in range(len(secret) - size + 1)}


async def stored_keys(ctx) -> list[CardKey]:
    async with unit_of_work(ctx.sessions) as session:
        return list(await session.scalars(select(CardKey).order_by(CardKey.id)))


async def test_ciphertext_holds_no_plaintext_and_decrypts_only_with_the_configured_key(ctx, settings):
    product = await make_product(ctx)
    await add_stock(ctx, product, SECRETS)
    rows = await stored_keys(ctx)
    assert len(rows) == 3
    box = SecretBox(settings.encryption_key_bytes)
    stranger = SecretBox(os.urandom(32))
    for row, secret in zip(rows, SECRETS, strict=True):
        blob = bytes(row.ciphertext)
        assert blob != secret.encode()
        for piece in substrings(secret):
            assert piece not in blob
        for piece in fragments(secret):
            assert piece not in row.fingerprint
        assert box.decrypt(blob, key_context(product.id)) == secret
        with pytest.raises(InvalidTag):
            stranger.decrypt(blob, key_context(product.id))
        # Bound to its product: the same blob copied onto another product's stock does not open.
        with pytest.raises(InvalidTag):
            box.decrypt(blob, key_context(product.id + 1))
        assert row.key_id == box.key_id != stranger.key_id


async def test_no_column_of_a_stored_key_contains_its_plaintext(ctx):
    product = await make_product(ctx)
    await add_stock(ctx, product, SECRETS)
    async with unit_of_work(ctx.sessions) as session:
        rows = (await session.execute(text("SELECT * FROM card_keys"))).all()
    assert len(rows) == 3
    for row in rows:
        dumped = b"".join(bytes(v) if isinstance(v, (bytes, memoryview)) else str(v).encode() for v in row)
        for secret in SECRETS:
            for piece in substrings(secret, 6):
                assert piece not in dumped


async def test_no_table_and_no_database_file_contains_a_plaintext_key(ctx, settings, client):
    """After import, sale, the buyer's view and a staff reveal, the plaintext is nowhere at rest."""
    product = await make_product(ctx)
    await add_stock(ctx, product, SECRETS)
    order = await make_order(ctx, product)
    assert await payments.handle_notify(ctx, notify_params(order)) == "accepted"
    async with unit_of_work(ctx.sessions) as session:
        await create_staff(session, ctx.clock, AGENT[0], AGENT[1], role="agent")
    revealed = await client.post(f"/api/v1/admin/orders/{order.order_no}/reveal-keys", auth=AGENT)
    assert revealed.json()["keys"][0]["secret"] == SECRETS[0]

    dumped = []
    async with unit_of_work(ctx.sessions) as session:
        for table in Base.metadata.sorted_tables:
            for row in (await session.execute(select(table))).all():
                dumped.extend(bytes(v) if isinstance(v, (bytes, memoryview)) else repr(v).encode() for v in row)
    everything = b"\x00".join(dumped)
    assert order.order_no.encode() in everything and bytes(ctx.box.key_id, "ascii") in everything  # scan saw rows
    for secret in SECRETS:
        assert secret.encode("utf-8") not in everything
        assert secret.encode("unicode_escape") not in everything  # JSON columns escape non-ASCII

    if settings.database_url.startswith("sqlite"):
        path = Path(settings.database_url.split("///", 1)[1])
        raw = b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())
        assert len(raw) > 0
        for secret in SECRETS:
            assert secret.encode("utf-8") not in raw


def test_the_same_secret_encrypts_differently_each_time_but_fingerprints_the_same():
    box = SecretBox(b"\x01" * 32)
    first, second = box.encrypt("SAME-KEY", "card_key:1"), box.encrypt("SAME-KEY", "card_key:1")
    assert first != second
    assert box.decrypt(first, "card_key:1") == box.decrypt(second, "card_key:1") == "SAME-KEY"
    assert box.fingerprint("SAME-KEY") == box.fingerprint("SAME-KEY") != box.fingerprint("SAME-KEY2")
    # The fingerprint is keyed: another store's database cannot be matched against ours.
    assert SecretBox(b"\x02" * 32).fingerprint("SAME-KEY") != box.fingerprint("SAME-KEY")


def test_a_tampered_ciphertext_does_not_decrypt():
    box = SecretBox(b"\x01" * 32)
    blob = bytearray(box.encrypt("TAMPER-ME", "card_key:1"))
    blob[-1] ^= 0x01
    with pytest.raises(InvalidTag):
        box.decrypt(bytes(blob), "card_key:1")


@pytest.mark.parametrize("size", [0, 16, 31, 33])
def test_only_a_256_bit_key_is_accepted(size):
    with pytest.raises(ValueError):
        SecretBox(b"k" * size)


async def test_staff_key_list_and_order_view_never_show_plaintext(ctx, client):
    product = await make_product(ctx, sku="crypt-1")
    await add_stock(ctx, product, SECRETS)
    order = await make_order(ctx, product)
    assert await payments.handle_notify(ctx, notify_params(order)) == "accepted"
    async with unit_of_work(ctx.sessions) as session:
        await create_staff(session, ctx.clock, AGENT[0], AGENT[1], role="agent")

    assert (await client.get("/api/v1/admin/products/crypt-1/keys")).status_code == 401
    assert (await client.get("/api/v1/admin/products/crypt-1/keys", auth=(AGENT[0], "wrong"))).status_code == 401

    listed = await client.get("/api/v1/admin/products/crypt-1/keys", auth=AGENT)
    assert listed.status_code == 200
    body = listed.json()
    assert body["counts"] == {"sold": 1, "available": 2}
    assert len(body["keys"]) == 3
    assert {"ciphertext", "fingerprint", "secret"}.isdisjoint(body["keys"][0])
    staff_view = await client.get(f"/api/v1/admin/orders/{order.order_no}", auth=AGENT)
    assert staff_view.status_code == 200
    assert staff_view.json()["keys"][0]["masked"].startswith(SECRETS[0][:2])
    for reply in (listed, staff_view):
        for secret in SECRETS:
            for piece in fragments(secret):
                assert piece not in reply.text

    # Plaintext only through the explicit reveal, which leaves a trace on the order's timeline.
    revealed = await client.post(f"/api/v1/admin/orders/{order.order_no}/reveal-keys", auth=AGENT)
    assert [k["secret"] for k in revealed.json()["keys"]] == [SECRETS[0]]
    async with unit_of_work(ctx.sessions) as session:
        [key] = [k for k in await session.scalars(select(CardKey).where(CardKey.order_id == order.id))]
        assert reveal(ctx.box, key) == SECRETS[0]
    staff_view = await client.get(f"/api/v1/admin/orders/{order.order_no}", auth=AGENT)
    [event] = [e for e in staff_view.json()["timeline"] if e["kind"] == "keys_revealed"]
    assert event["actor"] == "agent" and event["actor_id"] == AGENT[0]
    token = order_access_token(ctx.settings.secret_key, order.order_no)
    owner_view = await client.get(f"/api/v1/orders/{order.order_no}", headers={"X-Order-Token": token})
    assert "keys_revealed" not in [e["kind"] for e in owner_view.json()["timeline"]]  # staff's audit, not the buyer's
