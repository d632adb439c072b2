"""易支付 signing, checked against vectors worked out by hand from the published rule.

Rule: drop `sign`, `sign_type` and empty values; sort the keys by ASCII; join `k=v&...` without
URL-encoding; append the merchant key; lowercase hex MD5. Each expected MD5 below was computed
outside this code base with `printf '%s' '<signing string><key>' | md5sum` (UTF-8 locale).
"""

from urllib.parse import parse_qsl, urlsplit

import pytest

from zaima.store import epay

# Vector 1: a real-looking notify with Chinese text and spaces (not URL-encoded), one empty value
# (`param`) dropped, and `sign` / `sign_type` ignored.
V1_PARAMS = {
    "pid": "1000", "trade_no": "2026011512000001", "out_trade_no": "K7Q39XDM2PHT", "type": "alipay",
    "name": "王者荣耀 点券 60元", "money": "60.00", "trade_status": "TRADE_SUCCESS", "param": "",
    "sign": "0123456789abcdef0123456789abcdef", "sign_type": "MD5",
}
V1_KEY = "Zm9vYmFy1234"
V1_STRING = ("money=60.00&name=王者荣耀 点券 60元&out_trade_no=K7Q39XDM2PHT&pid=1000"
             "&trade_no=2026011512000001&trade_status=TRADE_SUCCESS&type=alipay")
V1_MD5 = "8eb8e97f6a5d322e40ccf6d4d54b8b53"

# Vector 2: ASCII order is not alphabetical order: uppercase sorts before `_`, which sorts before
# lowercase; "a1" before "alpha". "0" is a value, not an empty one; `%20` and `+` stay as they are.
V2_PARAMS = {"alpha": "1", "Beta": "2", "Zeta": "3", "a1": "x+y", "A": "%20", "_x": "0"}
V2_KEY = "merchantKEY"
V2_STRING = "A=%20&Beta=2&Zeta=3&_x=0&a1=x+y&alpha=1"
V2_MD5 = "27e58d1388e57e696bf0cbd72662ebb4"

# Vector 3: several empty values dropped; a URL value with `?`, `&` and `=` is joined raw.
V3_PARAMS = {"pid": "1000", "out_trade_no": "ABC", "money": "0.01", "return_url": "",
             "notify_url": "http://shop.example/pay/epay/notify?x=1&y=2", "sitename": "", "sign_type": "MD5"}
V3_KEY = "s3cr3t"
V3_STRING = "money=0.01&notify_url=http://shop.example/pay/epay/notify?x=1&y=2&out_trade_no=ABC&pid=1000"
V3_MD5 = "8c730c3817f3195008e4edbdbd59ca88"

VECTORS = [
    pytest.param(V1_PARAMS, V1_KEY, V1_STRING, V1_MD5, id="chinese-and-empty"),
    pytest.param(V2_PARAMS, V2_KEY, V2_STRING, V2_MD5, id="ascii-order"),
    pytest.param(V3_PARAMS, V3_KEY, V3_STRING, V3_MD5, id="empty-values-and-raw-url"),
]


@pytest.mark.parametrize("params, key, expected_string, _md5", VECTORS)
def test_signing_string_follows_the_rule(params, key, expected_string, _md5):
    assert epay.signing_string(params) == expected_string


@pytest.mark.parametrize("params, key, _string, expected_md5", VECTORS)
def test_sign_matches_independently_computed_md5(params, key, _string, expected_md5):
    assert epay.sign(params, key) == expected_md5


@pytest.mark.parametrize("params, key, _string, expected_md5", VECTORS)
def test_verify_accepts_the_gateway_signature_in_either_case(params, key, _string, expected_md5):
    assert epay.verify({**params, "sign": expected_md5}, key)
    assert epay.verify({**params, "sign": expected_md5.upper()}, key)


def test_none_values_are_dropped_like_empty_ones():
    assert epay.signing_string({"b": None, "a": "1", "c": ""}) == "a=1"


@pytest.mark.parametrize(
    "change",
    [
        {"money": "0.02"},            # amount altered
        {"out_trade_no": "ABD"},      # another order
        {"extra": "1"},               # a parameter added
        {"sign": ""},                 # no signature
        {"sign": "8c730c3817f3195008e4edbdbd59ca8"},  # truncated
        {"sign": "签名" * 16},         # non-ASCII garbage must be a clean "no", not a crash
    ],
)
def test_verify_rejects_anything_but_the_exact_signed_parameters(change):
    params = {**V3_PARAMS, "sign": V3_MD5}
    params.update(change)
    assert epay.verify(params, V3_KEY) is False


def test_verify_rejects_a_signature_made_with_another_key():
    assert epay.verify({**V3_PARAMS, "sign": V3_MD5}, "another-key") is False


def test_verify_without_a_sign_field_is_false():
    assert epay.verify(dict(V2_PARAMS), V2_KEY) is False


def test_signed_adds_sign_and_sign_type_and_verifies():
    out = epay.signed({"pid": "1000", "money": "0.01", "out_trade_no": "ABC", "notify_url":
                       "http://shop.example/pay/epay/notify?x=1&y=2", "return_url": ""}, V3_KEY)
    assert out["sign_type"] == "MD5"
    assert out["sign"] == V3_MD5
    assert epay.verify(out, V3_KEY)


def test_pay_url_carries_a_verifiable_signature_over_the_decoded_parameters():
    url = epay.pay_url("https://pay.example.com/", "1000", V1_KEY, out_trade_no="K7Q39XDM2PHT", money="60.00",
                       name="王者荣耀 点券 60元", pay_type="wxpay", notify_url="https://shop.example/pay/epay/notify",
                       return_url="https://shop.example/pay/epay/return/K7Q39XDM2PHT/tok")
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "pay.example.com", "/submit.php")
    params = dict(parse_qsl(parts.query))
    assert params["name"] == "王者荣耀 点券 60元"
    assert params["money"] == "60.00"
    assert params["type"] == "wxpay"
    assert epay.verify(params, V1_KEY)
    params["money"] = "0.01"
    assert not epay.verify(params, V1_KEY)
