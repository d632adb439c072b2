"""The official contact registry: normalisation (never similarity), validation, and the check the bot
makes when a customer asks "is this really you?"."""

from __future__ import annotations

import pytest

from zaima.bot import contacts
from zaima.bot.contacts import normalize_contact, url_covers
from zaima.core.errors import Conflict, NotFound, ValidationFailed
from zaima.db import unit_of_work

# --- normalisation (no database) --------------------------------------------------------------------


@pytest.mark.parametrize("kind,values,normalized", [
    ("phone", ["400-000-0000", "400 000 0000", "4000000000", "+86 400-000-0000", "(400) 000-0000", "４００-０００-００００"],
     "4000000000"),
    ("phone", ["13800138000", "138 0013 8000", "138-0013-8000", "+86 138 0013 8000", "+8613800138000",
               "0086 13800138000", "8613800138000", "tel:+86-138-0013-8000"], "13800138000"),
    ("phone", ["010-8888-8888", "(010) 8888 8888", "+86 10 8888 8888", "0086-10-88888888"], "01088888888"),
    ("phone", ["+852 9123 4567", "+852-9123-4567"], "+85291234567"),
    ("phone", ["95555"], "95555"),
    ("qq", ["800000000", " 800 000 000 ", "８００００００００"], "800000000"),
    ("wechat", ["lanshan_kami", "Lanshan_Kami", " LANSHAN_KAMI "], "lanshan_kami"),
    ("wechat", ["lanshan-kami"], "lanshan-kami"),
    ("wechat", ["138 0013 8000", "+86 13800138000"], "13800138000"),  # WeChat finds accounts by phone
    ("email", ["support@zaima.example", "Support@Zaima.Example", " mailto:SUPPORT@zaima.example "],
     "support@zaima.example"),
    ("email", ["kf@商店.中国", "KF@商店。中国"], "kf@xn--czrs0t.xn--fiqs8s"),
    ("url", ["shop.com", "http://shop.com", "https://shop.com/", "https://www.shop.com", "HTTPS://WWW.SHOP.COM//",
             "shop.com:443", "http://shop.com:80/", "shop.com/#contact", "ｓｈｏｐ．ｃｏｍ", "shop。com", "//shop.com",
             "https://shop.com./"],
     "shop.com"),
    ("url", ["shop.com/kf", "https://www.shop.com/kf/", "shop.com/%6bf"], "shop.com/kf"),
    ("url", ["shop.com/KF"], "shop.com/KF"),  # paths keep their case: t.cn/AbC is not t.cn/abc
    ("url", ["https://shop.com/orders?id=1#top"], "shop.com/orders?id=1"),
    ("url", ["http://127.0.0.1:8000", "127.0.0.1:8000/"], "127.0.0.1:8000"),
    ("url", ["http://[::1]:8000/"], "[::1]:8000"),
    ("url", ["商店.中国"], "xn--czrs0t.xn--fiqs8s"),
])
def test_equivalent_forms_normalise_to_one(kind, values, normalized):
    assert {normalize_contact(kind, value) for value in values} == {normalized}


@pytest.mark.parametrize("kind,a,b", [
    ("wechat", "lanshan_kami", "lanshan-kami"),
    ("wechat", "lanshan_kami", "lanshan_kami1"),
    ("url", "shop.com", "shop.com.evil.top"),
    ("url", "shop.com", "evil-shop.com"),
    ("url", "shop.com", "kf.shop.com"),
    ("url", "shop.com", "shop.com:8080"),
    ("url", "shop.com", "shоp.com"),  # a Cyrillic "о"
    ("url", "t.cn/AbC", "t.cn/abc"),
    ("email", "a.b@x.com", "ab@x.com"),
    ("email", "kf@x.com", "kf+shop@x.com"),
    ("phone", "4000000000", "4000000001"),
    ("qq", "800000000", "8000000000"),
])
def test_similar_is_not_the_same(kind, a, b):
    assert normalize_contact(kind, a) != normalize_contact(kind, b)


@pytest.mark.parametrize("kind,value,zh", [
    ("phone", "abc", "电话号码只能包含数字"),
    ("phone", "400-000-000x", "电话号码只能包含数字"),
    ("phone", "12", "电话号码只能包含数字"),
    ("phone", "+86", "电话号码只能包含数字"),
    ("phone", "+1", "电话号码格式不正确"),
    ("phone", "", "电话号码只能包含数字"),
    ("qq", "0800000", "QQ 号应为 5–12 位数字"),
    ("qq", "1234", "QQ 号应为 5–12 位数字"),
    ("qq", "12345abc", "QQ 号应为 5–12 位数字"),
    ("wechat", "abc", "微信号应为 6–20 位"),
    ("wechat", "1abcdef", "微信号应为 6–20 位"),
    ("wechat", "lanshan kami", "微信号应为 6–20 位"),
    ("wechat", "a" * 21, "微信号应为 6–20 位"),
    ("wechat", "123", "微信号应为 6–20 位"),
    ("email", "support", "邮箱格式不正确"),
    ("email", "a@b", "邮箱格式不正确"),
    ("email", "a b@c.com", "邮箱格式不正确"),
    ("email", "a@@c.com", "邮箱格式不正确"),
    ("email", "@c.com", "邮箱格式不正确"),
    ("email", "a@-c.com", "域名格式不正确"),
    ("url", "javascript:alert(1)", "网址格式不正确"),
    ("url", "ftp://shop.com", "只支持 http / https"),
    ("url", "http://shop.com@evil.top", "「@」前的用户名"),
    ("url", "http://", "网址格式不正确"),
    ("url", "not a url", "网址格式不正确"),
    ("url", "shop", "网址格式不正确"),
    ("url", "http://shop.com:99999", "网址格式不正确"),
    ("url", "http://sh_op.com", "域名格式不正确"),
    ("url", "x" * 301, "1–300 个字符"),
])
def test_malformed_contacts_get_a_clear_message(kind, value, zh):
    with pytest.raises(ValidationFailed) as err:
        normalize_contact(kind, value)
    assert zh in err.value.message_zh and err.value.message_en
    assert err.value.details["field"] == "value"


def test_unknown_kind_is_refused():
    with pytest.raises(ValidationFailed) as err:
        normalize_contact("telegram", "@zaima")
    assert err.value.details["field"] == "kind"


@pytest.mark.parametrize("registered,candidate,covered", [
    ("shop.com", "shop.com", True),
    ("shop.com", "shop.com/kf", True),  # the store's own site vouches for its pages
    ("shop.com", "shop.com/orders?id=1", True),
    ("shop.com", "shop.com?from=qq", True),
    ("shop.com", "shop.com.evil.top", False),
    ("shop.com", "shop.com.evil.top/kf", False),
    ("shop.com", "kf.shop.com", False),  # a subdomain must be registered on its own
    ("shop.com", "shop.com:8080/kf", False),
    ("weibo.com/zaima", "weibo.com/zaima", True),
    ("weibo.com/zaima", "weibo.com/zaima/123", True),
    ("weibo.com/zaima", "weibo.com/zaima?tab=1", True),
    ("weibo.com/zaima", "weibo.com/zaima-kf", False),  # a sibling account
    ("weibo.com/zaima", "weibo.com/zaimakf", False),
    ("weibo.com/zaima", "weibo.com", False),
    ("weibo.com/zaima", "weibo.com/other", False),
    ("item.taobao.com/item.htm?id=1", "item.taobao.com/item.htm?id=1", True),
    ("item.taobao.com/item.htm?id=1", "item.taobao.com/item.htm?id=12", False),
    ("item.taobao.com/item.htm?id=1", "item.taobao.com/item.htm", False),
])
def test_which_urls_a_registered_url_vouches_for(registered, candidate, covered):
    assert url_covers(registered, candidate) is covered


# --- the registry -----------------------------------------------------------------------------------


async def _add(ctx, kind, value, label=""):
    async with unit_of_work(ctx.sessions) as session:
        return await contacts.add_contact(session, ctx.clock, kind, value, label)


async def _check(ctx, kind, value):
    async with unit_of_work(ctx.sessions) as session:
        return await contacts.check(session, kind, value)


async def _list(ctx, kind=None):
    async with unit_of_work(ctx.sessions) as session:
        return [(c.kind, c.value, c.normalized, c.label) for c in await contacts.list_contacts(session, kind)]


async def test_contacts_are_stored_as_entered_with_their_normal_form(ctx):
    await _add(ctx, "phone", " 400-000-0000 ", "客服电话")
    await _add(ctx, "wechat", "Lanshan_Kami", "微信客服")
    await _add(ctx, "url", "https://www.shop.com/", "官网")
    assert await _list(ctx) == [("phone", "400-000-0000", "4000000000", "客服电话"),
                                ("url", "https://www.shop.com/", "shop.com", "官网"),
                                ("wechat", "Lanshan_Kami", "lanshan_kami", "微信客服")]
    assert await _list(ctx, "url") == [("url", "https://www.shop.com/", "shop.com", "官网")]


async def test_a_duplicate_in_another_spelling_is_refused(ctx):
    await _add(ctx, "phone", "400-000-0000")
    with pytest.raises(Conflict) as err:
        await _add(ctx, "phone", "+86 400 000 0000")
    assert err.value.message_zh == "电话 400-000-0000 已登记"
    await _add(ctx, "url", "http://www.shop.com/")
    with pytest.raises(Conflict):
        await _add(ctx, "url", "shop.com")
    await _add(ctx, "qq", "4000000000")  # the same digits as another kind are another contact
    assert len(await _list(ctx)) == 3


async def test_malformed_contacts_and_labels_are_refused(ctx):
    with pytest.raises(ValidationFailed) as err:
        await _add(ctx, "email", "support at zaima.example")
    assert err.value.message_zh.startswith("邮箱格式不正确")
    with pytest.raises(ValidationFailed):
        await _add(ctx, "phone", "400-000-0000", "x" * 101)
    with pytest.raises(ValidationFailed):
        await _add(ctx, "fax", "010-8888-8888")
    assert await _list(ctx) == []


async def test_check_says_official_only_for_registered_contacts(ctx):
    await _add(ctx, "phone", "400-000-0000", "客服电话")
    await _add(ctx, "qq", "800000000", "QQ 客服")
    await _add(ctx, "wechat", "lanshan_kami", "微信客服")
    await _add(ctx, "email", "support@zaima.example", "客服邮箱")
    await _add(ctx, "url", "https://shop.com", "官网")
    await _add(ctx, "url", "weibo.com/zaima", "微博")

    official = [("phone", "+86 400 000 0000", "客服电话"), ("qq", "800 000 000", "QQ 客服"),
                ("wechat", "LANSHAN_KAMI", "微信客服"), ("email", "Support@Zaima.Example", "客服邮箱"),
                ("url", "http://www.shop.com/", "官网"), ("url", "shop.com/kf", "官网"),
                ("url", "https://weibo.com/zaima/", "微博"), ("url", "weibo.com/zaima/5012", "微博")]
    for kind, value, label in official:
        result = await _check(ctx, kind, value)
        assert (result.official, result.kind, result.value, result.label) == (True, kind, value, label), value

    flagged = [("phone", "400-000-0001"), ("phone", "13800138000"), ("qq", "8000000001"), ("wechat", "lanshan-kami"),
               ("wechat", "lanshan_kami_kf"), ("email", "support@zaima.example.evil.top"),
               ("email", "support@zaima-example.com"), ("url", "shop.com.evil.top"), ("url", "kf.shop.com"),
               ("url", "weibo.com/zaima-kf"), ("url", "weibo.com"), ("url", "shоp.com"),
               ("qq", "lanshan_kami"),  # registered as WeChat, not as QQ
               ("url", "http://shop.com@evil.top"),  # malformed: flagged, not an error
               ("phone", "call me")]
    for kind, value in flagged:
        result = await _check(ctx, kind, value)
        assert (result.official, result.label) == (False, None), value
    assert (await _check(ctx, "url", "https://shop.com.evil.top/kf")).normalized == "shop.com.evil.top/kf"


async def test_the_most_specific_registered_url_gives_the_label(ctx):
    await _add(ctx, "url", "shop.com", "官网")
    await _add(ctx, "url", "shop.com/kf", "在线客服")
    assert (await _check(ctx, "url", "shop.com/kf/chat")).label == "在线客服"
    assert (await _check(ctx, "url", "shop.com/orders")).label == "官网"


async def test_check_of_an_unknown_kind_is_an_error(ctx):
    with pytest.raises(ValidationFailed):
        await _check(ctx, "telegram", "@zaima")


async def test_a_deleted_contact_is_no_longer_official(ctx):
    contact = await _add(ctx, "qq", "800000000")
    assert (await _check(ctx, "qq", "800000000")).official
    async with unit_of_work(ctx.sessions) as session:
        await contacts.delete_contact(session, contact.id)
    assert not (await _check(ctx, "qq", "800000000")).official
    async with unit_of_work(ctx.sessions) as session:
        with pytest.raises(NotFound):
            await contacts.delete_contact(session, contact.id)
    await _add(ctx, "qq", "800000000")  # and may be registered again
