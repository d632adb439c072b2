"""A first end-to-end pass through the store core on both databases."""

from sqlalchemy import func, select

from tests.store.helpers import add_stock, make_order, make_product, notify_params
from zaima.db import unit_of_work
from zaima.models import CardKey, Order
from zaima.store import payments


async def test_paid_card_key_order_is_delivered_with_its_key(ctx):
    product = await make_product(ctx)
    await add_stock(ctx, product, ["KEY-AAAA-0001", "KEY-AAAA-0002"])
    order = await make_order(ctx, product)
    assert await payments.handle_notify(ctx, notify_params(order)) == "accepted"
    async with unit_of_work(ctx.sessions) as session:
        fresh = await session.get(Order, order.id)
        assert fresh.status == "delivered"
        sold = await session.scalar(select(func.count()).select_from(CardKey).where(CardKey.order_id == order.id,
                                                                                    CardKey.status == "sold"))
        assert sold == 1


async def test_healthz_and_products_api(client, ctx):
    await make_product(ctx, sku="p-1")
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    body = (await client.get("/api/v1/products")).json()
    assert [p["sku"] for p in body["products"]] == ["p-1"]
    assert body["products"][0]["price"] == "30.00"


async def test_opentelemetry_is_off_unless_configured(settings, ctx, monkeypatch):
    """FastAPI's native telemetry asks for the global tracer provider on every request; with ZAIMA_OTEL off
    (the default) no request pays for that, and with it on the requests are instrumented."""
    import httpx
    from opentelemetry import trace

    from zaima.app import create_app

    asked = []
    real = trace.get_tracer_provider
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: asked.append(1) or real())
    for otel, expect_asked in ((False, False), (True, True)):
        asked.clear()
        app = create_app(settings.model_copy(update={"otel": otel}), ctx=ctx, migrate=False)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://zaima.test") as c:
            assert (await c.get("/healthz")).status_code == 200
        assert bool(asked) is expect_asked
