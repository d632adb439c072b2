"""Order numbers: 12 Crockford base32 characters, forgiving input."""

import re

import pytest

from zaima.core.ids import ALPHABET, ORDER_NO_LENGTH, display_order_no, new_order_no, normalize_order_no

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def test_the_alphabet_is_crockford_base32_without_ambiguous_letters():
    assert ALPHABET == CROCKFORD
    assert not set("ILOU") & set(ALPHABET)


def test_new_order_numbers_are_12_crockford_characters():
    numbers = [new_order_no() for _ in range(2000)]
    for number in numbers:
        assert len(number) == ORDER_NO_LENGTH == 12
        assert re.fullmatch(f"[{CROCKFORD}]{{12}}", number), number
        assert normalize_order_no(number) == number
    assert len(set(numbers)) == len(numbers)
    # 24 000 random characters: every symbol of the alphabet shows up (a biased generator would not).
    assert set("".join(numbers)) == set(CROCKFORD)


@pytest.mark.parametrize(
    "typed, canonical",
    [
        ("K7Q39XDM2PHT", "K7Q39XDM2PHT"),
        ("k7q3-9xdm-2pht", "K7Q39XDM2PHT"),
        ("K7Q3 9XDM 2PHT", "K7Q39XDM2PHT"),
        (" k7q3—9xdm–2pht ", "K7Q39XDM2PHT"),
        ("K7Q3.9XDM.2PHT", "K7Q39XDM2PHT"),
        # O is read as zero; I and L as one (what people mistype from a screenshot).
        ("O0O0-IiLl-1111", "00001111" + "1111"),
        ("ooAB-CDEF-GHJK", "00ABCDEFGHJK"),
        ("Ｋ７Ｑ３－９ＸＤＭ－２ＰＨＴ", "K7Q39XDM2PHT"),  # full-width, as a Chinese IME types it
    ],
)
def test_normalize_order_no_accepts_what_people_type(typed, canonical):
    assert normalize_order_no(typed) == canonical


@pytest.mark.parametrize("typed", ["", "K7Q39XDM2PH", "K7Q39XDM2PHTX", "K7Q39XDM2PHU", "K7Q39XDM2PH!",
                                   "订单K7Q39XDM2P", None])
def test_normalize_order_no_rejects_what_cannot_be_an_order_number(typed):
    assert normalize_order_no(typed) is None


def test_display_order_no_groups_by_four():
    assert display_order_no("K7Q39XDM2PHT") == "K7Q3-9XDM-2PHT"
    assert normalize_order_no(display_order_no("K7Q39XDM2PHT")) == "K7Q39XDM2PHT"
