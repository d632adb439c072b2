"""The service settings API (service hours, SLA, VIP rules, staff routing) and the console's queue view:
staff read, supervisors and admins write (HTTP Basic or the console session with its CSRF token), a body
the rules reject answers 422 in Chinese and saves nothing, and the queue comes back in queue order."""

from __future__ import annotations

import re
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from tests.service.helpers import ALL_DAY, go_online, local, make_agent, set_hours, ticket
from tests.store.helpers import add_stock, make_order, make_product, notify_params
from zaima.app import create_app
from zaima.conversations.conversations import get_conversation
from zaima.db import unit_of_work
from zaima.models import StaffUser, StoreSetting
from zaima.service import tickets
from zaima.service.calendar import load_calendar
from zaima.store import payments

PASSWORD = "password-123"  # tests.service.helpers.make_agent's password
ADMIN, SUPERVISOR, AGENT = ("boss", PASSWORD), ("lead", PASSWORD), ("xiaomei", PASSWORD)
HOURS = "/api/v1/admin/settings/service-hours"
SLA = "/api/v1/admin/settings/sla"
VIP = "/api/v1/admin/settings/vip"
ROUTING = "/api/v1/admin/staff/routing"

RICH_HOURS = {
    "timezone": "Asia/Shanghai",
    "weekly": {d: [["13:00", "02:00"], ["09:00", "12:00"]] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")},
    "holidays": ["2026-10-07", "2026-10-01", "2026-10-02"],
    "workdays": {"2026-10-10": "mon"},
    "special": {"2026-12-31": [["09:00", "18:00"]]},
}


@pytest.fixture
async def api(settings, ctx):
    app = create_app(settings, ctx=ctx, migrate=False)
    await make_agent(ctx, ADMIN[0], role="admin")
    await make_agent(ctx, SUPERVISOR[0], role="supervisor")
    await make_agent(ctx, AGENT[0], capacity=4)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://zaima.test") as client:
        yield client


async def console_session(api: httpx.AsyncClient, username: str) -> str:
    """Log `api` into the console as `username`; the CSRF token of the session."""
    r = await api.post("/console/login", data={"username": username, "password": PASSWORD})
    assert r.status_code == 303, r.text
    page = await api.get("/console")
    return re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)


async def stored(ctx, key: str):
    async with unit_of_work(ctx.sessions) as session:
        row = await session.get(StoreSetting, key)
        return row.value if row else None


# --- authentication ----------------------------------------------------------------------------------------------


async def test_reading_needs_a_staff_login_and_changing_needs_a_supervisor(api, ctx):
    anonymous = await api.get(HOURS)
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["message"].startswith("请先登录")
    assert (await api.get(HOURS, auth=("xiaomei", "wrong-password"))).status_code == 401
    assert (await api.put(SLA, json={"warn_percent": 70})).status_code == 401

    for path in (HOURS, SLA, VIP, ROUTING):
        assert (await api.get(path, auth=AGENT)).status_code == 200, path
    refused = await api.put(SLA, json={"warn_percent": 70}, auth=AGENT)
    assert refused.status_code == 403
    assert refused.json()["error"]["message"] == "只有主管或管理员可以修改服务设置"
    assert (await api.patch("/api/v1/admin/staff/1/routing", json={"max_concurrent": 9}, auth=AGENT)).status_code == 403
    assert await stored(ctx, "sla") is None

    assert (await api.put(SLA, json={"warn_percent": 70}, auth=SUPERVISOR)).json()["warn_percent"] == 70
    assert (await api.put(SLA, json={"warn_percent": 75}, auth=ADMIN)).json()["warn_percent"] == 75
    assert (await stored(ctx, "sla"))["warn_percent"] == 75


async def test_the_console_session_works_too_with_its_csrf_token(api, ctx):
    csrf = await console_session(api, SUPERVISOR[0])
    assert (await api.get(VIP)).json()["min_orders_30d"] == 5
    forged = await api.put(VIP, json={"min_orders_30d": 2})  # another site can send the cookie, not the token
    assert forged.status_code == 403 and forged.json()["error"]["code"] == "csrf_failed"
    assert await stored(ctx, "vip_rules") is None
    r = await api.put(VIP, json={"min_orders_30d": 2}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200 and r.json()["min_orders_30d"] == 2

    api.cookies.clear()
    csrf = await console_session(api, AGENT[0])
    agent_put = await api.put(VIP, json={"min_orders_30d": 3}, headers={"X-CSRF-Token": csrf})
    assert agent_put.status_code == 403
    assert (await stored(ctx, "vip_rules"))["min_orders_30d"] == 2


# --- service hours -----------------------------------------------------------------------------------------------


async def test_service_hours_round_trip_normalised(api, ctx):
    before = (await api.get(HOURS, auth=AGENT)).json()
    assert before["weekly"]["mon"] == [["09:00", "23:00"]]  # the defaults until someone saves

    r = await api.put(HOURS, json=RICH_HOURS, auth=SUPERVISOR)
    assert r.status_code == 200, r.text
    saved = r.json()
    assert saved["weekly"]["sun"] == [["09:00", "12:00"], ["13:00", "02:00"]]  # sorted
    assert saved["holidays"] == ["2026-10-01", "2026-10-02", "2026-10-07"]
    assert saved["workdays"] == {"2026-10-10": "mon"}
    assert saved["special"] == {"2026-12-31": [["09:00", "18:00"]]}
    assert (await api.get(HOURS, auth=AGENT)).json() == saved
    assert (await api.put(HOURS, json=saved, auth=ADMIN)).json() == saved  # what GET says can be PUT back

    async with unit_of_work(ctx.sessions) as session:
        calendar = await load_calendar(session)
    assert calendar.is_open(local(2026, 11, 26, 1, 30))  # Wednesday's evening period runs past midnight
    assert not calendar.is_open(local(2026, 11, 26, 12, 30))  # lunch break
    assert not calendar.is_open(local(2026, 10, 2, 10, 0))  # 国庆
    assert calendar.is_open(local(2026, 10, 10, 10, 0))  # 调休 Saturday


@pytest.mark.parametrize(("body", "message"), [
    ({"weekly": {"mon": [["09:00", "12:00"], ["11:00", "18:00"]]}}, "重叠"),
    ({"weekly": {"mon": [["22:00", "10:00"]], "tue": [["09:00", "18:00"]]}}, "跨夜时段"),
    ({"weekly": {"mon": [["9:00", "18:00"]]}}, "时间「9:00」无效"),
    ({"holidays": ["2026-10-32"]}, "日期「2026-10-32」无效"),
    ({"workdays": {"2026-10-10": "monday"}}, "未知的星期「monday」"),
    ({"timezone": "Beijing"}, "未知的时区"),
    ({"open": True}, "未知的营业时间设置项「open」"),
    ([["09:00", "18:00"]], "营业时间设置应为 JSON 对象"),
])
async def test_invalid_service_hours_are_refused_in_chinese_and_not_saved(api, ctx, body, message):
    await set_hours(ctx, ALL_DAY)
    r = await api.put(HOURS, json=body, auth=ADMIN)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_input"
    assert message in error["message"]
    assert error["message_en"]
    assert (await stored(ctx, "service_hours"))["weekly"]["mon"] == [["00:00", "24:00"]]


# --- SLA and VIP ---------------------------------------------------------------------------------------------------


async def test_sla_policy_round_trip_and_validation(api, ctx):
    policy = (await api.get(SLA, auth=AGENT)).json()
    assert policy["targets"]["normal"] == {"first_response": 30, "next_response": 30, "resolution": 1440}
    assert policy["vip"]["first_response"] == 5 and policy["business_hours"] is True

    r = await api.put(SLA, json={"business_hours": False, "targets": {"urgent": {"first_response": 3}}},
                      auth=SUPERVISOR)
    assert r.status_code == 200, r.text
    assert r.json()["targets"]["urgent"] == {"first_response": 3, "next_response": 10, "resolution": 240}
    assert (await api.get(SLA, auth=AGENT)).json() == r.json() == await stored(ctx, "sla")

    for body, message in (({"warn_percent": 5}, "预警比例必须在 10 到 99 之间"),
                          ({"targets": {"urgent": {"first_response": 0}}}, "targets.urgent.first_response 必须是"),
                          ({"targets": {"asap": {}}}, "targets 的键必须是"),
                          ({"business_hours": "yes"}, "business_hours 必须是 true 或 false"),
                          ({"vip": {"first_response": 2.5}}, "vip.first_response 必须是"),
                          ("strict", "SLA 设置应为 JSON 对象")):
        refused = await api.put(SLA, json=body, auth=ADMIN)
        assert refused.status_code == 422, body
        assert message in refused.json()["error"]["message"], refused.json()
    assert await stored(ctx, "sla") == r.json()


async def test_vip_rules_round_trip_and_validation(api, ctx):
    assert (await api.get(VIP, auth=AGENT)).json() == {"enabled": True, "min_total_spent_fen": 50000,
                                                       "min_orders_30d": 5}
    r = await api.put(VIP, json={"min_total_spent_fen": 100_000}, auth=ADMIN)
    assert r.json() == {"enabled": True, "min_total_spent_fen": 100000, "min_orders_30d": 5}
    for body, message in (({"min_orders_30d": -1}, "min_orders_30d 必须是不小于 0 的整数"),
                          ({"enabled": 1}, "enabled 必须是 true 或 false"),
                          ({"min_spent": 1}, "VIP 规则只能包含")):
        refused = await api.put(VIP, json=body, auth=ADMIN)
        assert refused.status_code == 422
        assert message in refused.json()["error"]["message"]
    assert (await api.get(VIP, auth=AGENT)).json() == r.json()


# --- staff routing -------------------------------------------------------------------------------------------------


async def staff_id(ctx, username: str) -> int:
    async with unit_of_work(ctx.sessions) as session:
        return await session.scalar(select(StaffUser.id).where(StaffUser.username == username))


async def test_staff_routing_round_trip(api, ctx):
    listed = (await api.get(ROUTING, auth=AGENT)).json()["staff"]
    assert [s["username"] for s in listed] == ["boss", "lead", "xiaomei"]
    mei = next(s for s in listed if s["username"] == "xiaomei")
    assert (mei["max_concurrent"], mei["skills"], mei["languages"], mei["presence"]) == (4, [], ["zh"], "offline")

    url = f"/api/v1/admin/staff/{mei['id']}/routing"
    r = await api.patch(url, json={"skills": ["recharge", "card_key", "recharge"], "languages": ["en", "zh"]},
                        auth=SUPERVISOR)
    assert r.status_code == 200, r.text
    assert (r.json()["max_concurrent"], r.json()["skills"], r.json()["languages"]) == (
        4, ["card_key", "recharge"], ["zh", "en"])
    r = await api.patch(url, json={"max_concurrent": 50, "skills": []}, auth=ADMIN)
    assert (r.json()["max_concurrent"], r.json()["skills"], r.json()["languages"]) == (50, [], ["zh", "en"])
    assert (await api.get(url, auth=AGENT)).json() == r.json()
    async with unit_of_work(ctx.sessions) as session:
        user = await session.get(StaffUser, mei["id"])
        assert (user.max_concurrent, user.skills, user.languages) == (50, [], ["zh", "en"])

    missing = await api.patch("/api/v1/admin/staff/9999/routing", json={"max_concurrent": 3}, auth=ADMIN)
    assert missing.status_code == 404 and missing.json()["error"]["message"] == "找不到这位客服"


@pytest.mark.parametrize(("body", "message"), [
    ({"max_concurrent": 0}, "同时接待上限 max_concurrent 必须是 1 到 50 之间的整数"),
    ({"max_concurrent": 51}, "1 到 50"),
    ({"max_concurrent": True}, "1 到 50"),
    ({"max_concurrent": "3"}, "1 到 50"),
    ({"skills": ["game_points"]}, "只能包含 card_key（卡密）、recharge（直充）、account（账号）、license（激活码）"),
    ({"skills": "recharge"}, "技能 skills 应为商品类型列表"),
    ({"languages": []}, "至少选一种"),
    ({"languages": ["zh", "fr"]}, "只能是 zh（中文）或 en（英文）"),
    ({"max_concurrent": 3, "team": "A"}, "未知的字段「team」"),
    ({}, "没有要修改的内容"),
    (["max_concurrent", 3], "路由设置应为 JSON 对象"),
])
async def test_invalid_routing_is_refused_and_nothing_changes(api, ctx, body, message):
    mei = await staff_id(ctx, "xiaomei")
    r = await api.patch(f"/api/v1/admin/staff/{mei}/routing", json=body, auth=ADMIN)
    assert r.status_code == 422, r.text
    assert message in r.json()["error"]["message"]
    async with unit_of_work(ctx.sessions) as session:
        user = await session.get(StaffUser, mei)
        assert (user.max_concurrent, user.skills, user.languages) == (4, [], ["zh"])


# --- the console's queue ------------------------------------------------------------------------------------------


async def test_console_queue_lists_tickets_in_queue_order_with_waits_and_agents(api, ctx, clock):
    await set_hours(ctx, ALL_DAY)
    assert (await api.get("/console/api/queue")).status_code == 401  # the console's session only
    await console_session(api, AGENT[0])

    empty = (await api.get("/console/api/queue")).json()
    assert (empty["queue"], empty["waiting"], empty["open_now"]) == ([], 0, True)

    # A VIP buyer (¥12.50 spent, the threshold is ¥10) hands off a minute after an ordinary customer.
    await api.put(VIP, json={"min_total_spent_fen": 1000, "min_orders_30d": 0}, auth=ADMIN)
    product = await make_product(ctx, sku="vip-card", price_fen=1250)
    await add_stock(ctx, product, ["VIP-KEY-0001"])
    order = await make_order(ctx, product, contact="vip@example.com")
    assert await payments.handle_notify(ctx, notify_params(order)) == "accepted"
    plain = await ticket(ctx)
    clock.advance(minutes=1)
    vip = await ticket(ctx, order=order)
    clock.advance(minutes=2)

    j = (await api.get("/console/api/queue")).json()
    assert j["server_time"] == clock.now().isoformat()
    assert [(i["position"], i["ticket_no"], i["vip"], i["priority"], i["skill"]) for i in j["queue"]] == [
        (1, vip.ticket_no, True, "normal", "card_key"), (2, plain.ticket_no, False, "normal", None)]
    assert [i["waited_seconds"] for i in j["queue"]] == [120, 180]
    assert [i["expected_wait_seconds"] for i in j["queue"]] == [None, None]  # nobody online: no honest number
    assert j["queue"][0]["order_no"] == order.order_no
    due = j["queue"][0]["sla"]["first_response_due_at"]
    assert due == (clock.now() - timedelta(minutes=2) + timedelta(minutes=5)).isoformat()  # VIP: 5 minutes
    assert j["sla"]["vip"]["first_response"] == 5
    assert (j["agents"], j["agents_online"]) == ([], 0)

    # One agent on duty with one free slot of two: the VIP is next, the other waits one handling time.
    mei = await staff_id(ctx, "xiaomei")
    await api.patch(f"/api/v1/admin/staff/{mei}/routing", json={"max_concurrent": 2}, auth=ADMIN)
    busy = await ticket(ctx)
    async with unit_of_work(ctx.sessions) as session:
        await tickets.assign(session, ctx, await get_conversation(session, busy.id), await session.get(StaffUser, mei))
    async with unit_of_work(ctx.sessions) as session:
        user = await session.get(StaffUser, mei)
    lease = await go_online(ctx, user)
    j = (await api.get("/console/api/queue")).json()
    assert [i["ticket_no"] for i in j["queue"]] == [vip.ticket_no, plain.ticket_no]
    assert [i["expected_wait_seconds"] for i in j["queue"]] == [0, 8 * 60]
    assert j["agents_online"] == 1
    assert [(a["username"], a["presence"], a["load"], a["max_concurrent"]) for a in j["agents"]] == [
        ("xiaomei", "online", 1, 2)]
    await lease.release()


async def test_service_metrics_endpoint(api, ctx):
    body = (await api.get("/api/v1/admin/service/metrics?hours=24", auth=AGENT)).json()
    assert body["handed_off"] == 0 and body["first_response"]["count"] == 0 and body["csat"]["average"] is None
    refused = await api.get("/api/v1/admin/service/metrics?hours=0", auth=AGENT)
    assert refused.status_code == 422 and "hours" in refused.json()["error"]["message"]
    assert (await api.get("/api/v1/admin/service/metrics")).status_code == 401
