"""Money is integer fen; yuan strings go in and out through Decimal, never float."""

import random

import pytest

from zaima.core.money import MoneyFormatError, format_yuan, parse_yuan, yuan_label


@pytest.mark.parametrize(
    "text, fen",
    [
        ("30", 3000),
        ("30.00", 3000),
        ("12.3", 1230),
        ("0.01", 1),
        ("0.10", 10),
        # Amounts that a float round-trip gets wrong: 0.29 * 100 == 28.999999999999996 in binary floating point.
        ("0.29", 29),
        ("1.15", 115),
        ("4.35", 435),
        ("19.99", 1999),
        ("999999999.99", 99999999999),
    ],
)
def test_parse_yuan_gives_exact_integer_fen(text, fen):
    value = parse_yuan(text)
    assert value == fen
    assert type(value) is int


@pytest.mark.parametrize(
    "text",
    [
        "1e3", "1E3", "-1", "-0.01", "+1", "1.234", "0.001", "", " ", "abc", "1.", ".5", "1,000", "1 000",
        "NaN", "Infinity", "0x10", "1_000", "1000000000",  # ten integer digits: beyond any sane price
        "１２", "٣٠", "12.٣",  # non-ASCII digits are not money in a signed protocol
        "¥12", "12元",
    ],
)
def test_parse_yuan_rejects_anything_that_is_not_plain_yuan(text):
    with pytest.raises(MoneyFormatError):
        parse_yuan(text)


@pytest.mark.parametrize("value", [0.1, 12.5, 1e3])
def test_parse_yuan_refuses_floats(value):
    with pytest.raises(MoneyFormatError):
        parse_yuan(value)


@pytest.mark.parametrize("fen, text", [(0, "0.00"), (1, "0.01"), (10, "0.10"), (100, "1.00"), (1230, "12.30"),
                                       (3000, "30.00"), (99999999999, "999999999.99"), (-5, "-0.05")])
def test_format_yuan_always_has_two_decimals(fen, text):
    assert format_yuan(fen) == text


@pytest.mark.parametrize("value", [12.5, 0.1, "100"])
def test_format_yuan_refuses_anything_but_integer_fen(value):
    with pytest.raises(TypeError):
        format_yuan(value)


def test_format_then_parse_round_trips_every_amount():
    rng = random.Random(20260115)
    samples = list(range(0, 10_001)) + [rng.randrange(0, 100_000_000_000) for _ in range(5000)]
    for fen in samples:
        assert parse_yuan(format_yuan(fen)) == fen


def test_yuan_label_prefixes_the_currency_sign():
    assert yuan_label(1999) == "¥19.99"
