"""The business calendar: service hours with lunch breaks, overnight periods, holidays, 调休 workdays, special
dates and DST zones; business-time addition and its inverse; validation; display; storage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from zaima.core.errors import ValidationFailed
from zaima.db import unit_of_work
from zaima.models import StoreSetting
from zaima.service.calendar import (
    DEFAULT_SERVICE_HOURS,
    WEEKDAYS,
    BusinessCalendar,
    describe_time,
    load_calendar,
    save_service_hours,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
NEW_YORK = ZoneInfo("America/New_York")


def sh(month: int, day: int, hour: int = 0, minute: int = 0, year: int = 2026) -> datetime:
    """A Shanghai wall time as the UTC instant the services pass around."""
    return datetime(year, month, day, hour, minute, tzinfo=SHANGHAI).astimezone(UTC)


def ny(month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=NEW_YORK).astimezone(UTC)


def every_day(*periods: list[str]) -> dict:
    return {day: [list(p) for p in periods] for day in WEEKDAYS}


def calendar(**settings) -> BusinessCalendar:
    return BusinessCalendar.from_settings({"timezone": "Asia/Shanghai", **settings})


LUNCH = calendar(weekly=every_day(["09:00", "12:00"], ["13:30", "18:00"]))
NIGHT = calendar(weekly=every_day(["09:00", "18:00"], ["22:00", "02:00"]))
WEEKDAYS_ONLY = {day: [["09:00", "18:00"]] for day in WEEKDAYS[:5]}


# ----- adding business time ---------------------------------------------------------------------------------------


def test_two_hours_from_eleven_skip_the_lunch_break():
    assert LUNCH.add(sh(9, 1, 11), timedelta(hours=2)) == sh(9, 1, 14, 30)


def test_time_added_while_closed_starts_counting_at_the_next_opening():
    assert LUNCH.add(sh(9, 1, 12, 15), timedelta(minutes=30)) == sh(9, 1, 14)
    assert LUNCH.add(sh(9, 1, 20), timedelta(hours=1)) == sh(9, 2, 10)


def test_zero_duration_is_the_next_opening():
    assert LUNCH.add(sh(9, 1, 12, 15), timedelta(0)) == sh(9, 1, 13, 30)
    assert LUNCH.add(sh(9, 1, 10), timedelta(0)) == sh(9, 1, 10)


def test_a_target_that_uses_up_a_period_exactly_ends_with_it():
    assert LUNCH.add(sh(9, 1, 11), timedelta(hours=1)) == sh(9, 1, 12)


def test_overnight_period_runs_past_midnight_and_the_closed_night_is_skipped():
    assert NIGHT.add(sh(9, 1, 23), timedelta(hours=4)) == sh(9, 2, 10)  # 23:00-02:00 is 3 h, then 09:00-10:00
    assert NIGHT.add(sh(9, 2, 1, 30), timedelta(hours=1)) == sh(9, 2, 9, 30)
    assert NIGHT.is_open(sh(9, 2, 1, 59))
    assert not NIGHT.is_open(sh(9, 2, 2))
    assert NIGHT.next_open(sh(9, 2, 2)) == sh(9, 2, 9)


def test_holiday_week_is_skipped():
    golden_week = calendar(holidays=[f"2026-10-0{d}" for d in range(1, 8)])  # default hours 09:00-23:00
    assert golden_week.add(sh(9, 30, 22, 30), timedelta(hours=1)) == sh(10, 8, 9, 30)
    assert not golden_week.is_open(sh(10, 3, 12))
    assert golden_week.next_open(sh(10, 1, 10)) == sh(10, 8, 9)


def test_a_holiday_drops_the_overnight_period_starting_that_day_but_not_the_one_running_into_it():
    night = calendar(weekly=every_day(["22:00", "02:00"]), holidays=["2026-10-01"])
    assert night.is_open(sh(10, 1, 1))  # Sep 30's period
    assert not night.is_open(sh(10, 1, 23))  # Oct 1's period is dropped
    assert not night.is_open(sh(10, 2, 1))
    assert night.next_open(sh(10, 1, 2)) == sh(10, 2, 22)


def test_tiaoxiu_saturday_is_worked_with_the_monday_schedule():
    weekly = {**WEEKDAYS_ONLY, "mon": [["08:00", "18:00"]]}
    cal = calendar(weekly=weekly, workdays={"2026-10-10": "mon"})  # Oct 10 2026 is a Saturday
    assert cal.is_open(sh(10, 10, 8))
    assert not cal.is_open(sh(10, 11, 10))  # Sunday stays closed
    assert cal.add(sh(10, 9, 17), timedelta(hours=2)) == sh(10, 10, 9)
    assert cal.next_open(sh(10, 10, 19)) == sh(10, 12, 8)


def test_special_date_overrides_weekday_and_holiday():
    cal = calendar(
        holidays=["2026-10-01"],
        special={"2026-12-31": [["09:00", "12:00"]], "2026-10-01": [["10:00", "11:00"]], "2026-12-30": []},
    )
    assert cal.is_open(sh(12, 31, 11))
    assert not cal.is_open(sh(12, 31, 13))
    assert not cal.is_open(sh(12, 30, 12))
    assert cal.is_open(sh(10, 1, 10, 30))
    assert cal.add(sh(12, 30, 8), timedelta(hours=4)) == sh(1, 1, 10, year=2027)


# ----- elapsed and periods ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cal", [LUNCH, NIGHT, calendar(holidays=["2026-10-01"], workdays={"2026-10-10": "mon"})]
)
def test_elapsed_is_the_inverse_of_add(cal):
    for start in (sh(9, 30, 8), sh(9, 30, 11, 17), sh(9, 30, 12, 45), sh(9, 30, 23, 59), sh(10, 1, 1)):
        for minutes in (0, 1, 59, 150, 600, 3000, 30 * 24 * 60):
            duration = timedelta(minutes=minutes)
            end = cal.add(start, duration)
            assert cal.elapsed(start, end) == duration
            assert end.tzinfo is UTC


def test_elapsed_is_zero_when_the_end_is_not_after_the_start():
    assert LUNCH.elapsed(sh(9, 1, 11), sh(9, 1, 10)) == timedelta(0)
    assert LUNCH.elapsed(sh(9, 1, 11), sh(9, 1, 11)) == timedelta(0)


def test_elapsed_over_a_year_counts_every_open_day():
    cal = calendar(holidays=["2026-10-01", "2026-10-02"])
    assert cal.elapsed(sh(1, 1), sh(1, 1, year=2027)) == timedelta(hours=14) * (365 - 2)


def test_open_periods_are_clipped_ascending_and_merged_across_midnight():
    cal = calendar(
        weekly={
            **every_day(["09:00", "12:00"]),
            "sat": [["09:00", "12:00"], ["22:00", "24:00"]],
            "sun": [["00:00", "02:00"], ["09:00", "12:00"]],
        }
    )
    # Oct 3 2026 is a Saturday
    assert list(cal.open_periods(sh(10, 3, 10), sh(10, 4, 10))) == [
        (sh(10, 3, 10), sh(10, 3, 12)),
        (sh(10, 3, 22), sh(10, 4, 2)),
        (sh(10, 4, 9), sh(10, 4, 10)),
    ]
    assert cal.period_end(sh(10, 3, 23)) == sh(10, 4, 2)
    assert list(cal.open_periods(sh(10, 4, 10), sh(10, 4, 10))) == []


# ----- boundaries -------------------------------------------------------------------------------------------------


def test_a_period_includes_its_start_and_excludes_its_end():
    assert not LUNCH.is_open(sh(9, 1, 9) - timedelta(seconds=1))
    assert LUNCH.is_open(sh(9, 1, 9))
    assert LUNCH.is_open(sh(9, 1, 12) - timedelta(microseconds=1))
    assert not LUNCH.is_open(sh(9, 1, 12))
    assert LUNCH.is_open(sh(9, 1, 13, 30))


def test_next_open_and_period_end_at_the_boundaries():
    assert LUNCH.next_open(sh(9, 1, 9)) == sh(9, 1, 9)
    assert LUNCH.next_open(sh(9, 1, 12)) == sh(9, 1, 13, 30)
    assert LUNCH.next_open(sh(9, 1, 18)) == sh(9, 2, 9)
    assert LUNCH.period_end(sh(9, 1, 9)) == sh(9, 1, 12)
    assert LUNCH.period_end(sh(9, 1, 11, 59)) == sh(9, 1, 12)
    assert LUNCH.period_end(sh(9, 1, 12)) is None
    assert LUNCH.period_end(sh(9, 1, 13)) is None


def test_answers_are_utc_whatever_zone_the_question_uses():
    at = datetime(2026, 9, 1, 12, 15, tzinfo=SHANGHAI)
    assert LUNCH.next_open(at).tzinfo is UTC
    assert LUNCH.period_end(at + timedelta(hours=2)).tzinfo is UTC
    assert LUNCH.add(at, timedelta(minutes=5)).tzinfo is UTC


def test_naive_datetimes_are_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        LUNCH.is_open(datetime(2026, 9, 1, 10))
    with pytest.raises(ValueError, match="timezone-aware"):
        LUNCH.add(datetime(2026, 9, 1, 10), timedelta(hours=1))


def test_a_calendar_that_never_opens_cannot_add():
    never = BusinessCalendar(tz=SHANGHAI, weekly=((),) * 7)
    assert never.next_open(sh(9, 1)) is None
    assert not never.is_open(sh(9, 1))
    with pytest.raises(ValueError, match="no open period"):
        never.add(sh(9, 1), timedelta(hours=1))


def test_around_the_clock_is_always_open_and_adds_plainly():
    cal = BusinessCalendar.around_the_clock()
    assert cal.always_open
    assert cal.is_open(sh(10, 1, 3))
    assert cal.add(sh(10, 1, 3), timedelta(days=30)) == sh(10, 31, 3)
    assert cal.elapsed(sh(10, 1, 3), sh(10, 2, 4)) == timedelta(hours=25)
    assert list(cal.open_periods(sh(10, 1), sh(10, 4))) == [(sh(10, 1), sh(10, 4))]
    assert cal.period_end(sh(10, 1)) is None  # open, and it never ends
    assert BusinessCalendar.from_settings(cal.to_dict()).always_open


# ----- DST --------------------------------------------------------------------------------------------------------


NINE_TO_FIVE = BusinessCalendar.from_settings(
    {"timezone": "America/New_York", "weekly": {d: [["09:00", "17:00"]] for d in WEEKDAYS[:5]}}
)


@pytest.mark.parametrize("before, after", [((3, 6), (3, 9)), ((10, 30), (11, 2))])
def test_a_nine_to_five_day_is_eight_hours_on_either_side_of_a_dst_change(before, after):
    cal = NINE_TO_FIVE
    assert cal.elapsed(ny(*before), ny(*after) + timedelta(days=1)) == timedelta(hours=16)  # Fri + Mon
    for month, day in (before, after):
        assert cal.elapsed(ny(month, day), ny(month, day + 1)) == timedelta(hours=8)
        assert cal.next_open(ny(month, day, 6)) == ny(month, day, 9)
        assert cal.period_end(ny(month, day, 10)) == ny(month, day, 17)
    # Friday 16:00 + 2 h of business time is Monday 10:00 local, across the weekend's clock change
    assert cal.add(ny(*before, 16), timedelta(hours=2)) == ny(*after, 10)


def test_dst_change_days_have_their_real_length():
    cal = BusinessCalendar.around_the_clock("America/New_York")
    full_days = BusinessCalendar.from_settings(
        {"timezone": "America/New_York", "weekly": every_day(["00:00", "24:00"])}
    )
    assert full_days.elapsed(ny(3, 8), ny(3, 9)) == timedelta(hours=23)
    assert full_days.elapsed(ny(11, 1), ny(11, 2)) == timedelta(hours=25)
    assert cal.elapsed(ny(3, 8), ny(3, 9)) == timedelta(hours=23)
    assert list(full_days.open_periods(ny(3, 7), ny(3, 10))) == [(ny(3, 7), ny(3, 10))]


def test_a_period_starting_in_the_skipped_hour_opens_when_the_clocks_jump():
    cal = BusinessCalendar.from_settings(
        {"timezone": "America/New_York", "weekly": every_day(["02:30", "04:00"])}
    )
    # 2026-03-08 02:00 EST becomes 03:00 EDT (07:00 UTC): the period runs 03:00-04:00 EDT
    assert list(cal.open_periods(ny(3, 8), ny(3, 9))) == [
        (datetime(2026, 3, 8, 7, tzinfo=UTC), datetime(2026, 3, 8, 8, tzinfo=UTC))
    ]


# ----- validation -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings, zh, field",
    [
        ({"weekly": {"mon": [["9:00", "18:00"]]}}, "时间「9:00」无效", "service_hours.weekly.mon"),
        ({"weekly": {"mon": [["09:00", "25:00"]]}}, "时间「25:00」无效", "service_hours.weekly.mon"),
        ({"weekly": {"mon": [["24:00", "02:00"]]}}, "24:00 只能用作结束时间", "service_hours.weekly.mon"),
        ({"weekly": {"mon": [["09:00"]]}}, "应为 [开始, 结束]", "service_hours.weekly.mon"),
        ({"weekly": {"mon": [["09:00", "09:00"]]}}, "时长为零", "service_hours.weekly.mon"),
        ({"weekly": {"mon": [["00:00", "00:00"]]}}, "时长为零", "service_hours.weekly.mon"),
        (
            {"weekly": {"tue": [["09:00", "12:00"], ["11:00", "13:00"]]}},
            "周二的时段 09:00-12:00 与 11:00-13:00 重叠",
            "service_hours.weekly.tue",
        ),
        (
            {"weekly": {"sun": [["22:00", "02:00"]], "mon": [["01:00", "05:00"]]}},
            "周日的跨夜时段 22:00-02:00 与周一的 01:00-05:00 重叠",
            "service_hours.weekly.sun",
        ),
        ({"weekly": {"monday": [["09:00", "18:00"]]}}, "未知的星期「monday」", "service_hours.weekly"),
        ({"weekly": {d: [] for d in WEEKDAYS}}, "每周至少要有一天", "service_hours.weekly"),
        ({"timezone": "Asia/Beijing"}, "未知的时区「Asia/Beijing」", "service_hours.timezone"),
        ({"holidays": ["2026-13-01"]}, "日期「2026-13-01」无效", "service_hours.holidays"),
        ({"holidays": ["2026/10/01"]}, "日期「2026/10/01」无效", "service_hours.holidays"),
        (
            {"workdays": {"2026-10-10": "saturday"}},
            "未知的星期「saturday」",
            "service_hours.workdays.2026-10-10",
        ),
        (
            {"holidays": ["2026-10-10"], "workdays": {"2026-10-10": "mon"}},
            "不能既是节假日又是调休工作日",
            "service_hours.workdays.2026-10-10",
        ),
        (
            {"special": {"2026-12-31": [["22:00", "03:00"]]}, "weekly": every_day(["02:00", "12:00"])},
            "2026-12-31的跨夜时段 22:00-03:00 与2027-01-01的 02:00-12:00 重叠",
            "service_hours.special.2026-12-31",
        ),
        ({"holiday": ["2026-10-01"]}, "未知的营业时间设置项「holiday」", "service_hours.holiday"),
    ],
)
def test_invalid_settings_are_rejected_with_a_message_naming_the_problem(settings, zh, field):
    with pytest.raises(ValidationFailed) as caught:
        BusinessCalendar.from_settings(settings)
    assert zh in caught.value.message_zh
    assert caught.value.message_en
    assert caught.value.details["field"] == field


def test_touching_periods_and_an_overnight_period_ending_at_the_next_opening_are_accepted():
    cal = calendar(weekly=every_day(["09:00", "12:00"], ["12:00", "13:00"], ["22:00", "09:00"]))
    assert cal.is_open(sh(9, 2, 8, 59))
    assert cal.period_end(sh(9, 1, 9)) == sh(9, 1, 13)


# ----- settings round trip, display, storage ----------------------------------------------------------------------


def test_defaults_are_nine_to_eleven_every_day_in_shanghai():
    for value in (None, {}):
        cal = BusinessCalendar.from_settings(value)
        assert cal.tz.key == "Asia/Shanghai"
        assert cal.to_dict() == DEFAULT_SERVICE_HOURS
    assert BusinessCalendar.from_settings(None).is_open(sh(9, 1, 22, 59))


def test_settings_round_trip_normalised():
    settings = {
        "timezone": "Asia/Shanghai",
        "weekly": {"mon": [["13:30", "23:00"], ["09:00", "12:00"]], "sun": [["22:00", "00:00"]], "sat": []},
        "holidays": ["2026-10-02", "2026-10-01"],
        "workdays": {"2026-10-10": "mon"},
        "special": {"2026-12-31": [["09:00", "18:00"]], "2026-12-30": []},
    }
    normal = BusinessCalendar.from_settings(settings).to_dict()
    assert normal["weekly"]["mon"] == [["09:00", "12:00"], ["13:30", "23:00"]]
    assert normal["weekly"]["sun"] == [["22:00", "24:00"]]
    assert normal["weekly"]["tue"] == []
    assert normal["holidays"] == ["2026-10-01", "2026-10-02"]
    assert list(normal["special"]) == ["2026-12-30", "2026-12-31"]
    assert BusinessCalendar.from_settings(normal).to_dict() == normal
    overnight = calendar(weekly=every_day(["22:00", "02:00"])).to_dict()
    assert BusinessCalendar.from_settings(overnight).to_dict() == overnight
    assert overnight["weekly"]["mon"] == [["22:00", "02:00"]]


def test_describe_time_in_chinese_and_english():
    now = sh(10, 6, 20)  # Tuesday evening
    assert describe_time(LUNCH, sh(10, 6, 13, 30), now) == "今天 13:30"
    assert describe_time(LUNCH, sh(10, 7, 9), now) == "明天 09:00"
    assert describe_time(LUNCH, sh(10, 8, 9), now) == "10月8日（周四）09:00"
    assert describe_time(LUNCH, sh(1, 4, 9, year=2027), now) == "2027年1月4日（周一）09:00"
    assert describe_time(LUNCH, sh(10, 6, 13, 30), now, "en") == "today 13:30"
    assert describe_time(LUNCH, sh(10, 7, 9), now, "en") == "tomorrow 09:00"
    assert describe_time(LUNCH, sh(10, 8, 9), now, "en") == "Thu 8 Oct 09:00"
    # the day is the calendar's: 00:30 in Shanghai is still "tomorrow" although UTC says the same day
    assert describe_time(LUNCH, sh(10, 7, 0, 30), sh(10, 6, 9), "en") == "tomorrow 00:30"


async def test_service_hours_are_saved_normalised_and_loaded_back(ctx):
    async with unit_of_work(ctx.sessions) as session:
        assert (await load_calendar(session)).to_dict() == DEFAULT_SERVICE_HOURS
        saved = await save_service_hours(
            session, {"weekly": {"mon": [["13:30", "18:00"], ["09:00", "12:00"]]}}
        )
        assert saved.weekly[0] == ((9 * 60, 12 * 60), (13 * 60 + 30, 18 * 60))
    async with unit_of_work(ctx.sessions) as session:
        loaded = await load_calendar(session)
        assert loaded.to_dict() == saved.to_dict()
        assert (await session.get(StoreSetting, "service_hours")).value == saved.to_dict()
        replaced = await save_service_hours(
            session, {"timezone": "Europe/London", "holidays": ["2026-12-25"]}
        )
    async with unit_of_work(ctx.sessions) as session:
        assert (await load_calendar(session)).to_dict() == replaced.to_dict()
        assert replaced.tz.key == "Europe/London"
        assert replaced.to_dict()["weekly"]["tue"] == [["09:00", "23:00"]]


async def test_invalid_service_hours_are_not_saved(ctx):
    with pytest.raises(ValidationFailed):
        async with unit_of_work(ctx.sessions) as session:
            await save_service_hours(session, {"timezone": "Mars/Olympus"})
    async with unit_of_work(ctx.sessions) as session:
        assert await session.get(StoreSetting, "service_hours") is None


def test_describe_week_for_the_footer():
    from zaima.service.calendar import describe_week

    default = BusinessCalendar.from_settings(None)
    assert describe_week(default) == "每天 09:00–23:00（北京时间）"
    assert describe_week(default, "en") == "Every day 09:00–23:00 (Beijing time)"
    split = BusinessCalendar.from_settings({"weekly": {
        **{d: [["09:00", "12:00"], ["13:30", "18:00"]] for d in ("mon", "tue", "wed", "thu", "fri")},
        "sat": [["10:00", "16:00"]], "sun": [["10:00", "16:00"]]}})
    assert describe_week(split) == "周一至周五 09:00–12:00, 13:30–18:00；周六、周日 10:00–16:00（北京时间）"
    assert describe_week(split, "en") == "Mon–Fri 09:00–12:00, 13:30–18:00; Sat, Sun 10:00–16:00 (Beijing time)"
