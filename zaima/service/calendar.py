"""Service hours (营业时间) as one business calendar: the queue, SLA clocks, the widget and the status page all ask
it when people answer, and how much answering time lies between two instants.

Settings (JSON under store_settings "service_hours"):

    {"timezone": "Asia/Shanghai",
     "weekly": {"mon": [["09:00", "12:00"], ["13:30", "23:00"]], ..., "sun": [["22:00", "02:00"]]},
     "holidays": ["2026-10-01"],                     # closed all day
     "workdays": {"2026-10-10": "mon"},              # 调休: worked with the named weekday's schedule
     "special": {"2026-12-31": [["09:00", "18:00"]]}}  # exactly these periods that date ([] = closed)

A period belongs to the date it starts on; one whose end is not after its start runs past midnight ("22:00"-"02:00"),
and "24:00" may end a period. Missing top-level keys take DEFAULT_SERVICE_HOURS; a weekday missing from "weekly"
is closed. For a date, "special" wins over everything, then "holidays", then "workdays", then the weekday.

Overlaps are rejected, never merged: periods of one day must not overlap (touching is fine), and a period running
past midnight must end by the next day's first period - checked for every weekday pair (Sunday into Monday) and
around every holiday/workday/special date with the schedules those dates really get. Touching periods (22:00-24:00
then 00:00-02:00) form one open stretch.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.ext.asyncio import AsyncSession

from zaima.core.errors import ValidationFailed
from zaima.store.settings import read_setting, write_setting

SERVICE_HOURS_KEY = "service_hours"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WEEKDAY_ZH = ("周一", "周二", "周三", "周四", "周五", "周六", "周日")
WEEKDAY_EN = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTH_EN = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
DAY_MINUTES = 24 * 60
HORIZON_DAYS = 400  # this many closed days in a row count as "never open again"
_CACHE_DAYS = 4096

DEFAULT_SERVICE_HOURS: dict = {
    "timezone": "Asia/Shanghai",
    "weekly": {day: [["09:00", "23:00"]] for day in WEEKDAYS},
    "holidays": [],
    "workdays": {},
    "special": {},
}

# (start, end) in minutes after the local midnight of the day the period starts on; end > start, up to 2 days
Period = tuple[int, int]
Interval = tuple[datetime, datetime]

_TIME = re.compile(r"([01]\d|2[0-4]):([0-5]\d)")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_KEYS = ("timezone", "weekly", "holidays", "workdays", "special")


@dataclass(frozen=True, eq=False)
class BusinessCalendar:
    tz: ZoneInfo
    weekly: tuple[tuple[Period, ...], ...]  # index 0 is Monday
    holidays: frozenset[date] = frozenset()
    workdays: dict[date, int] = field(default_factory=dict)  # date -> weekday index whose schedule it uses
    special: dict[date, tuple[Period, ...]] = field(default_factory=dict)
    # UTC intervals per local date; the calendar never changes, so they never go stale
    _days: dict[date, tuple[Interval, ...]] = field(default_factory=dict, init=False, repr=False)

    # ----- building -------------------------------------------------------------------------------------------

    @classmethod
    def from_settings(cls, value: dict | None) -> BusinessCalendar:
        """The calendar the settings describe, validated; None or {} gives DEFAULT_SERVICE_HOURS."""
        if not value:
            value = DEFAULT_SERVICE_HOURS
        if not isinstance(value, dict):
            raise _invalid("营业时间设置应为对象", "Service hours must be an object", "service_hours")
        for key in value:
            if key not in _KEYS:
                raise _invalid(
                    f"未知的营业时间设置项「{key}」，可用：{'、'.join(_KEYS)}",
                    f"Unknown service-hours setting {key!r}; expected one of {', '.join(_KEYS)}",
                    str(key),
                )
        tz = _parse_timezone(value.get("timezone", DEFAULT_SERVICE_HOURS["timezone"]))

        weekly_raw = value.get("weekly", DEFAULT_SERVICE_HOURS["weekly"])
        if not isinstance(weekly_raw, dict):
            raise _invalid(
                '每周营业时间应为对象，如 {"mon": [["09:00", "18:00"]]}',
                'weekly must be an object like {"mon": [["09:00", "18:00"]]}',
                "weekly",
            )
        for key in weekly_raw:
            _weekday_index(key, "weekly")
        weekly = tuple(
            _parse_periods(weekly_raw.get(key, []), WEEKDAY_ZH[i], WEEKDAY_EN[i], f"weekly.{key}")
            for i, key in enumerate(WEEKDAYS)
        )
        if not any(weekly):
            raise _invalid(
                "每周至少要有一天设置营业时段", "At least one weekday needs an open period", "weekly"
            )
        for i in range(7):
            j = (i + 1) % 7
            _check_overnight(
                weekly[i],
                weekly[j],
                (WEEKDAY_ZH[i], WEEKDAY_EN[i]),
                (WEEKDAY_ZH[j], WEEKDAY_EN[j]),
                f"weekly.{WEEKDAYS[i]}",
            )

        holidays_raw = value.get("holidays", [])
        if not isinstance(holidays_raw, list):
            raise _invalid(
                '节假日应为日期列表，如 ["2026-10-01"]',
                'holidays must be a list of dates like ["2026-10-01"]',
                "holidays",
            )
        holidays = frozenset(_parse_date(text, "holidays") for text in holidays_raw)

        workdays_raw = value.get("workdays", {})
        if not isinstance(workdays_raw, dict):
            raise _invalid(
                '调休工作日应为对象，如 {"2026-10-10": "mon"}',
                'workdays must be an object like {"2026-10-10": "mon"}',
                "workdays",
            )
        workdays: dict[date, int] = {}
        for text, weekday in workdays_raw.items():
            day = _parse_date(text, "workdays")
            if day in holidays:
                raise _invalid(
                    f"{day} 不能既是节假日又是调休工作日",
                    f"{day} cannot be both a holiday and a workday",
                    f"workdays.{day}",
                )
            workdays[day] = _weekday_index(weekday, f"workdays.{day}")

        special_raw = value.get("special", {})
        if not isinstance(special_raw, dict):
            raise _invalid(
                '特殊日期应为对象，如 {"2026-12-31": [["09:00", "18:00"]]}',
                'special must be an object like {"2026-12-31": [["09:00", "18:00"]]}',
                "special",
            )
        special: dict[date, tuple[Period, ...]] = {}
        for text, periods in special_raw.items():
            day = _parse_date(text, "special")
            special[day] = _parse_periods(periods, str(day), str(day), f"special.{day}")

        calendar = cls(tz=tz, weekly=weekly, holidays=holidays, workdays=workdays, special=special)
        calendar._check_exceptional_dates()
        return calendar

    @classmethod
    def around_the_clock(cls, timezone: str = "Asia/Shanghai") -> BusinessCalendar:
        """Always open (24x7)."""
        return cls(tz=_parse_timezone(timezone), weekly=(((0, DAY_MINUTES),),) * 7)

    def to_dict(self) -> dict:
        """Normalised settings: every weekday present, periods sorted, dates ISO and sorted."""
        return {
            "timezone": self.tz.key,
            "weekly": {key: _format_periods(self.weekly[i]) for i, key in enumerate(WEEKDAYS)},
            "holidays": [day.isoformat() for day in sorted(self.holidays)],
            "workdays": {day.isoformat(): WEEKDAYS[i] for day, i in sorted(self.workdays.items())},
            "special": {day.isoformat(): _format_periods(p) for day, p in sorted(self.special.items())},
        }

    @property
    def always_open(self) -> bool:
        return not self.holidays and not self.special and all(p == ((0, DAY_MINUTES),) for p in self.weekly)

    # ----- questions ------------------------------------------------------------------------------------------

    def is_open(self, at: datetime) -> bool:
        _require_aware(at)
        for start, _end in self._walk(at):
            return start <= at
        return False

    def next_open(self, at: datetime) -> datetime | None:
        """`at` itself when open, else the start of the next period; None if nothing opens within the horizon."""
        _require_aware(at)
        for start, _end in self._walk(at):
            return max(start, at).astimezone(UTC)
        return None

    def period_end(self, at: datetime) -> datetime | None:
        """When the open stretch around `at` ends (touching periods count as one). None when closed, and when it
        does not end within the horizon (24x7): check is_open to tell the two apart."""
        _require_aware(at)
        if self.always_open:
            return None
        end: datetime | None = None
        for start, stop in self._walk(at):
            if end is None:
                if start > at:
                    return None
                end = stop
            elif start <= end:
                end = max(end, stop)
            else:
                break
            if end - at > timedelta(days=HORIZON_DAYS):
                return None
        return end

    def open_periods(self, start: datetime, end: datetime) -> Iterator[Interval]:
        """Open intervals clipped to [start, end), ascending, touching ones merged."""
        _require_aware(start)
        _require_aware(end)
        if end <= start:
            return
        pending: Interval | None = None
        for s, e in self._walk(start):
            if s >= end:
                break
            s, e = max(s, start).astimezone(UTC), min(e, end).astimezone(UTC)
            if pending is not None and s <= pending[1]:
                pending = (pending[0], max(pending[1], e))
                continue
            if pending is not None:
                yield pending
            pending = (s, e)
        if pending is not None:
            yield pending

    def add(self, start: datetime, duration: timedelta) -> datetime:
        """The instant at which `duration` of open time has passed after `start` (0 -> next_open(start))."""
        _require_aware(start)
        if duration < timedelta(0):
            raise ValueError("duration must not be negative")
        if self.always_open:
            return (start + duration).astimezone(UTC)
        remaining = duration
        for s, e in self._walk(start):
            s = max(s, start)
            if remaining <= e - s:
                return (s + remaining).astimezone(UTC)
            remaining -= e - s
        raise ValueError(
            f"The calendar has no open period within {HORIZON_DAYS} days after {start.isoformat()}"
        )

    def elapsed(self, start: datetime, end: datetime) -> timedelta:
        """Open time between start and end (zero when end <= start)."""
        _require_aware(start)
        _require_aware(end)
        if end <= start:
            return timedelta(0)
        if self.always_open:
            return end - start
        return sum((e - s for s, e in self.open_periods(start, end)), timedelta(0))

    # ----- internals ------------------------------------------------------------------------------------------

    def _periods_on(self, day: date) -> tuple[Period, ...]:
        if day in self.special:
            return self.special[day]
        if day in self.holidays:
            return ()
        return self.weekly[self.workdays.get(day, day.weekday())]

    def _intervals_on(self, day: date) -> tuple[Interval, ...]:
        cached = self._days.get(day)
        if cached is None:
            midnight = datetime.combine(day, time())
            intervals = []
            for start, end in self._periods_on(day):
                s = self._to_utc(midnight + timedelta(minutes=start))
                e = self._to_utc(midnight + timedelta(minutes=end))
                if e > s:  # a period wholly inside a clocks-forward gap has no real time
                    intervals.append((s, e))
            if len(self._days) >= _CACHE_DAYS:
                self._days.clear()
            cached = self._days[day] = tuple(intervals)
        return cached

    def _walk(self, at: datetime) -> Iterator[Interval]:
        """Open periods that end after `at`, ascending, day by day. Starts a day early for a period running past
        midnight into `at`'s date; stops after HORIZON_DAYS closed days in a row."""
        day = at.astimezone(self.tz).date() - timedelta(days=1)
        closed = 0
        while closed <= HORIZON_DAYS:
            intervals = self._intervals_on(day)
            closed = 0 if intervals else closed + 1
            for start, end in intervals:
                if end > at:
                    yield start, end
            day += timedelta(days=1)

    def _to_utc(self, wall: datetime) -> datetime:
        """A local wall time as UTC. A wall time skipped by a clocks-forward change maps to the instant of the
        change, so later wall times never map to earlier instants."""
        utc = wall.replace(tzinfo=self.tz).astimezone(UTC)
        if utc.astimezone(self.tz).replace(tzinfo=None) == wall:
            return utc
        after = wall.replace(tzinfo=self.tz, fold=1).utcoffset()
        lo = int(wall.replace(tzinfo=self.tz, fold=1).timestamp())  # still before the change
        hi = int(utc.timestamp())  # already after it
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if datetime.fromtimestamp(mid, self.tz).utcoffset() == after:
                hi = mid
            else:
                lo = mid
        return datetime.fromtimestamp(hi, UTC)

    def _check_exceptional_dates(self) -> None:
        """Past-midnight overlaps around dates whose schedule differs from their weekday's."""
        for day in sorted(set(self.special) | set(self.workdays)):
            field_name = f"special.{day}" if day in self.special else f"workdays.{day}"
            for first in (day - timedelta(days=1), day):
                second = first + timedelta(days=1)
                _check_overnight(
                    self._periods_on(first),
                    self._periods_on(second),
                    (str(first), str(first)),
                    (str(second), str(second)),
                    field_name,
                )


# ----- parsing ---------------------------------------------------------------------------------------------------


def _invalid(message_zh: str, message_en: str, field_name: str) -> ValidationFailed:
    return ValidationFailed(message_zh, message_en, field=f"service_hours.{field_name}")


def _require_aware(at: datetime) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"Business calendar times must be timezone-aware, got naive {at.isoformat()}")


def _parse_timezone(name: object) -> ZoneInfo:
    if isinstance(name, str) and name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    raise _invalid(
        f"未知的时区「{name}」，请使用 IANA 名称，如 Asia/Shanghai",
        f"Unknown timezone {name!r}; use an IANA name such as Asia/Shanghai",
        "timezone",
    )


def _weekday_index(key: object, field_name: str) -> int:
    if key in WEEKDAYS:
        return WEEKDAYS.index(key)
    raise _invalid(
        f"未知的星期「{key}」，应为 {'、'.join(WEEKDAYS)} 之一",
        f"Unknown weekday {key!r}; expected one of {', '.join(WEEKDAYS)}",
        field_name,
    )


def _parse_date(text: object, field_name: str) -> date:
    if isinstance(text, str) and _DATE.fullmatch(text):
        try:
            day = date.fromisoformat(text)
        except ValueError:
            pass
        else:
            if 2000 <= day.year <= 2199:  # a shop's calendar; also keeps day ± 1 inside what `date` can hold
                return day
            raise _invalid(f"日期「{text}」超出范围，应在 2000–2199 年之间",
                           f"Date {text!r} is out of range; use a year from 2000 to 2199", field_name)
    raise _invalid(
        f"日期「{text}」无效，应为 YYYY-MM-DD，如 2026-10-01",
        f"Invalid date {text!r}; expected YYYY-MM-DD such as 2026-10-01",
        field_name,
    )


def _parse_time(text: object, is_end: bool, where: tuple[str, str], field_name: str) -> int:
    match = _TIME.fullmatch(text) if isinstance(text, str) else None
    minutes = int(match[1]) * 60 + int(match[2]) if match else -1
    if not 0 <= minutes <= DAY_MINUTES:
        raise _invalid(
            f"{where[0]}：时间「{text}」无效，应为 HH:MM（00:00–24:00），如 09:00",
            f"{where[1]}: invalid time {text!r}; expected HH:MM (00:00-24:00) such as 09:00",
            field_name,
        )
    if minutes == DAY_MINUTES and not is_end:
        raise _invalid(
            f"{where[0]}：24:00 只能用作结束时间", f"{where[1]}: 24:00 can only end a period", field_name
        )
    return minutes


def _parse_periods(raw: object, where_zh: str, where_en: str, field_name: str) -> tuple[Period, ...]:
    if not isinstance(raw, list):
        raise _invalid(
            f'{where_zh}：营业时段应为列表，如 [["09:00", "18:00"]]',
            f'{where_en}: periods must be a list like [["09:00", "18:00"]]',
            field_name,
        )
    periods: list[Period] = []
    for n, pair in enumerate(raw, start=1):
        where = (f"{where_zh}第 {n} 个时段", f"{where_en} period {n}")
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise _invalid(
                f'{where[0]}应为 [开始, 结束]，如 ["09:00", "18:00"]',
                f'{where[1]} must be [start, end] such as ["09:00", "18:00"]',
                field_name,
            )
        start = _parse_time(pair[0], False, where, field_name)
        end = _parse_time(pair[1], True, where, field_name)
        if end == start:
            raise _invalid(
                f"{where[0]}开始和结束都是 {pair[0]}，时长为零（全天请用 00:00–24:00）",
                f"{where[1]} starts and ends at {pair[0]}: zero length (use 00:00-24:00 for all day)",
                field_name,
            )
        periods.append((start, end if end > start else end + DAY_MINUTES))
    periods.sort()
    for before, after in zip(periods, periods[1:], strict=False):
        if after[0] < before[1]:
            raise _invalid(
                f"{where_zh}的时段 {_format_period(before)} 与 {_format_period(after)} 重叠",
                f"{where_en}: periods {_format_period(before)} and {_format_period(after)} overlap",
                field_name,
            )
    return tuple(periods)


def _check_overnight(
    day: tuple[Period, ...],
    next_day: tuple[Period, ...],
    where: tuple[str, str],
    next_where: tuple[str, str],
    field_name: str,
) -> None:
    """A period running past midnight must end by the next day's first period."""
    if not day or not next_day or day[-1][1] <= DAY_MINUTES:
        return
    if next_day[0][0] < day[-1][1] - DAY_MINUTES:
        raise _invalid(
            f"{where[0]}的跨夜时段 {_format_period(day[-1])} 与{next_where[0]}的 {_format_period(next_day[0])} 重叠",
            f"{where[1]}: overnight period {_format_period(day[-1])} overlaps {next_where[1]} "
            f"{_format_period(next_day[0])}",
            field_name,
        )


def _format_minutes(minutes: int) -> str:
    if minutes != DAY_MINUTES:
        minutes %= DAY_MINUTES
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _format_period(period: Period) -> str:
    return f"{_format_minutes(period[0])}-{_format_minutes(period[1])}"


def _format_periods(periods: tuple[Period, ...]) -> list[list[str]]:
    return [[_format_minutes(start), _format_minutes(end)] for start, end in periods]


# ----- storage and display ---------------------------------------------------------------------------------------


async def load_calendar(session: AsyncSession) -> BusinessCalendar:
    return BusinessCalendar.from_settings(await read_setting(session, SERVICE_HOURS_KEY))


async def save_service_hours(session: AsyncSession, values: dict) -> BusinessCalendar:
    """Validate and replace the stored service hours (normalised)."""
    calendar = BusinessCalendar.from_settings(values)
    await write_setting(session, SERVICE_HOURS_KEY, calendar.to_dict())
    return calendar


def describe_time(calendar: BusinessCalendar, at: datetime, now: datetime, lang: str = "zh") -> str:
    """`at` for people, in the calendar's timezone relative to `now`: 今天 13:30 / 明天 09:00 / 10月8日（周四）09:00,
    today 13:30 / tomorrow 09:00 / Thu 8 Oct 09:00."""
    _require_aware(at)
    _require_aware(now)
    local = at.astimezone(calendar.tz)
    days = (local.date() - now.astimezone(calendar.tz).date()).days
    clock = local.strftime("%H:%M")
    other_year = local.year != now.astimezone(calendar.tz).year
    if lang == "en":
        relative = {-1: "yesterday", 0: "today", 1: "tomorrow"}.get(days)
        if relative:
            return f"{relative} {clock}"
        year = f" {local.year}" if other_year else ""
        return f"{WEEKDAY_EN[local.weekday()][:3]} {local.day} {MONTH_EN[local.month - 1]}{year} {clock}"
    relative = {-1: "昨天", 0: "今天", 1: "明天"}.get(days)
    if relative:
        return f"{relative} {clock}"
    year = f"{local.year}年" if other_year else ""
    return f"{year}{local.month}月{local.day}日（{WEEKDAY_ZH[local.weekday()]}）{clock}"


_SHORT_EN = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def describe_week(calendar: BusinessCalendar, lang: str = "zh") -> str:
    """The weekly schedule in one line for people: 「每天 09:00–23:00（北京时间）」, 「周一至周五 09:00–18:00；
    周六、周日 10:00–16:00（北京时间）」, "Mon–Fri 09:00–18:00; Sat, Sun 10:00–16:00 (Beijing time)"."""
    en = lang == "en"
    schedule = calendar.to_dict()["weekly"]
    groups: list[tuple[list[int], list]] = []
    for i, key in enumerate(WEEKDAYS):
        if not schedule[key]:
            continue
        if groups and groups[-1][1] == schedule[key] and groups[-1][0][-1] == i - 1:
            groups[-1][0].append(i)
        else:
            groups.append(([i], schedule[key]))
    names = _SHORT_EN if en else WEEKDAY_ZH

    def days(indexes: list[int]) -> str:
        if len(indexes) == 7:
            return "Every day" if en else "每天"
        if len(indexes) >= 3:
            return f"{names[indexes[0]]}{'–' if en else '至'}{names[indexes[-1]]}"
        return (", " if en else "、").join(names[i] for i in indexes)

    parts = [f"{days(indexes)} {', '.join(f'{a}–{b}' for a, b in periods)}" for indexes, periods in groups]
    zone = calendar.tz.key
    beijing = zone in ("Asia/Shanghai", "Asia/Chongqing", "PRC")
    note = (" (Beijing time)" if beijing else f" ({zone})") if en else ("（北京时间）" if beijing else f"（{zone}）")
    return ("; " if en else "；").join(parts) + note
