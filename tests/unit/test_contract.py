"""The checkout-event contract v1, rule by rule (docs/events.md states the same in prose)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from producer.contract import (
    MAX_PAYLOAD_BYTES,
    REASONS,
    CheckoutEvent,
    Rejection,
    _decode_by_rules,
    decode,
    encode,
    validate,
)
from state.errors import InvalidEvent, SegstreamError

NOW = 1_795_773_600.0  # 2026-11-27T10:00:00Z
KEY = b"CS1112"
BASE: dict[str, Any] = {
    "event_id": "e-1",
    "customer_id": "CS1112",
    "ts": "2026-11-27T09:00:00Z",
    "amount": 12.5,
}


def payload(**changes: Any) -> bytes:
    """BASE with ``changes``; a change to ``...`` (Ellipsis) removes the field."""
    obj = {**BASE, **changes}
    return json.dumps({k: v for k, v in obj.items() if v is not ...}).encode()


def run(raw: bytes, key: bytes | None = KEY, **kw: Any) -> CheckoutEvent | Rejection:
    """Decode through the public API and check the fast lane agrees with the rules."""
    kw.setdefault("now", NOW)
    got = decode(raw, key, **kw)
    assert got == _decode_by_rules(raw, key, kw["now"], kw.get("currency"))
    return got


def reason(raw: bytes, key: bytes | None = KEY, **kw: Any) -> str:
    got = run(raw, key, **kw)
    assert isinstance(got, Rejection), got
    assert got.reason in REASONS
    assert got.detail
    return got.reason


# -- valid events ----------------------------------------------------------------------------------


def test_minimal_event_gets_the_defaults() -> None:
    event = run(payload())
    assert event == CheckoutEvent(event_id="e-1", customer_id="CS1112", ts=NOW - 3600, amount=12.5)
    assert (event.type, event.discount, event.items, event.schema_version) == (
        "purchase",
        0.0,
        1,
        1,
    )


def test_full_event_keeps_every_field() -> None:
    event = run(
        payload(
            type="refund",
            discount=2,
            items=3,
            category="shoes",
            channel="app",
            currency="EUR",
            schema_version=1,
            age=41,
            gender="f",
            annual_income=52000,
        ),
        currency="EUR",
    )
    assert isinstance(event, CheckoutEvent)
    assert (event.type, event.discount, event.items, event.category, event.channel) == (
        "refund",
        2.0,
        3,
        "shoes",
        "app",
    )
    assert (event.currency, event.age, event.gender, event.annual_income) == (
        "EUR",
        41.0,
        "f",
        52000.0,
    )
    assert type(event.discount) is float and type(event.age) is float


def test_null_means_absent_for_optional_fields() -> None:
    nulls = dict.fromkeys(
        (
            "type",
            "discount",
            "items",
            "category",
            "channel",
            "currency",
            "schema_version",
            "age",
            "gender",
            "annual_income",
        )
    )
    assert run(payload(**nulls)) == run(payload())


def test_unknown_fields_are_ignored() -> None:
    assert run(payload(coupon={"code": "X", "n": [1, 2.5, None]}, note="hi")) == run(payload())


def test_zero_amount_is_valid_and_ints_become_floats() -> None:
    event = run(payload(amount=0, ts=1_795_770_000))
    assert isinstance(event, CheckoutEvent)
    assert event.amount == 0.0 and type(event.amount) is float
    assert event.ts == 1_795_770_000.0 and type(event.ts) is float


def test_duplicate_keys_last_one_wins() -> None:
    raw = b'{"event_id":"e","customer_id":"CS1112","ts":1,"amount":-1,"amount":2}'
    assert run(raw).amount == 2.0  # type: ignore[union-attr]


# -- timestamps ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("2026-11-27T10:00:00Z", NOW),
        ("2026-11-27T10:00:00z", NOW),
        ("2026-11-27t10:00:00Z", NOW),
        ("2026-11-27T11:30:00+01:30", NOW),
        ("2026-11-27T05:00:00-05:00", NOW),
        ("2026-11-27T10:00:00-00:00", NOW),
        ("2026-11-27T10:00:00.5Z", NOW + 0.5),
        ("2026-11-27T10:00:00.123456789Z", NOW + 0.123456),  # kept to the microsecond
        (NOW, NOW),
        (1_795_773_600, NOW),
        (0, 0.0),
    ],
)
def test_ts_accepts_rfc3339_with_offset_or_epoch_seconds(ts: Any, expected: float) -> None:
    event = run(payload(ts=ts))
    assert isinstance(event, CheckoutEvent)
    assert event.ts == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "ts",
    [
        "2026-11-27T10:00:00",  # naive: no offset
        "2026-11-27 10:00:00Z",  # space separator
        "2026-11-27",  # date only
        "20261127T100000Z",  # ISO 8601 basic format
        "2026-11-27T10:00Z",  # no seconds
        "2026-11-27T10:00:00+0100",  # offset without colon
        "2026-11-27T10:00:00,5Z",  # comma fraction
        "2026-11-27T10:00:00.1234567890Z",  # more than 9 fraction digits
        "2026-02-30T10:00:00Z",  # no such day
        "2026-11-27T24:00:00Z",
        "2026-12-31T23:59:60Z",  # leap seconds are not accepted
        "2026-11-27T10:00:00+24:00",
        "２０２６-11-27T10:00:00Z",  # non-ASCII digits
        "1969-12-31T23:59:59Z",  # before the epoch
        "1970-01-01T00:30:00+01:00",  # before the epoch once the offset applies
        "",
        -1,
        -0.5,
        10**400,  # beyond a double
    ],
)
def test_bad_ts(ts: Any) -> None:
    assert reason(payload(ts=ts)) == "bad_ts"


def test_bad_ts_literal_overflow() -> None:
    raw = b'{"event_id":"e","customer_id":"CS1112","ts":1e400,"amount":1}'
    assert reason(raw) == "bad_ts"


@pytest.mark.parametrize("ts", [True, [1], {"s": 1}])
def test_ts_of_wrong_type(ts: Any) -> None:
    assert reason(payload(ts=ts)) == "bad_type:ts"


def test_future_is_at_most_one_day_after_now() -> None:
    assert isinstance(run(payload(ts=NOW + 86_400)), CheckoutEvent)
    assert reason(payload(ts=NOW + 86_400.001)) == "future_ts"
    assert reason(payload(ts="2999-01-01T00:00:00Z")) == "future_ts"


def test_now_defaults_to_the_clock() -> None:
    assert isinstance(decode(payload(ts="2020-01-01T00:00:00Z"), KEY), CheckoutEvent)
    assert decode(payload(ts="9999-12-31T23:59:59Z"), KEY).reason == "future_ts"  # type: ignore[union-attr]


# -- the key ---------------------------------------------------------------------------------------


def test_key_must_equal_customer_id() -> None:
    assert reason(payload(), b"CS9999") == "key_mismatch"
    assert reason(payload(), b"\xff\xfe") == "key_mismatch"
    assert reason(payload(), b"") == "key_mismatch"


def test_a_message_without_key_is_rejected() -> None:
    assert reason(payload(), None) == "missing_key"


def test_validate_has_no_key_to_check() -> None:
    assert validate(BASE, now=NOW).customer_id == "CS1112"


# -- field rules -----------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["event_id", "customer_id", "ts", "amount"])
@pytest.mark.parametrize("how", ["absent", "null"])
def test_required_fields(field: str, how: str) -> None:
    raw = payload(**{field: ... if how == "absent" else None})
    assert reason(raw, KEY) == f"missing_field:{field}"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"event_id": ""}, "bad_value:event_id"),
        ({"event_id": "x" * 128}, None),
        ({"event_id": "x" * 129}, "too_long:event_id"),
        ({"event_id": "é" * 128}, None),  # characters, not bytes
        ({"event_id": 17}, "bad_type:event_id"),
        ({"customer_id": 1112}, "bad_type:customer_id"),
        ({"type": "purchase"}, None),
        ({"type": "return"}, "bad_value:type"),
        ({"type": "Purchase"}, "bad_value:type"),
        ({"type": 1}, "bad_type:type"),
        ({"amount": -0.01}, "negative:amount"),
        ({"amount": "12.50"}, "bad_type:amount"),
        ({"amount": True}, "bad_type:amount"),
        ({"amount": 10**400}, "non_finite:amount"),
        ({"amount": 10**30}, None),
        ({"discount": -1}, "negative:discount"),
        ({"discount": False}, "bad_type:discount"),
        ({"items": 0}, "bad_value:items"),
        ({"items": -3}, "bad_value:items"),
        ({"items": 2**31 - 1}, None),
        ({"items": 2**31}, "bad_value:items"),
        ({"items": 2.5}, "bad_type:items"),
        ({"items": 2.0}, "bad_type:items"),  # never guessed to be 2
        ({"items": True}, "bad_type:items"),
        ({"items": "2"}, "bad_type:items"),
        ({"category": "c" * 64}, None),
        ({"category": "c" * 65}, "too_long:category"),
        ({"category": 3}, "bad_type:category"),
        ({"channel": "c" * 65}, "too_long:channel"),
        ({"channel": ["web"]}, "bad_type:channel"),
        ({"currency": "eur"}, "bad_value:currency"),
        ({"currency": "EURO"}, "bad_value:currency"),
        ({"currency": 978}, "bad_type:currency"),
        ({"schema_version": 1}, None),
        ({"schema_version": 2}, "unsupported_schema_version"),
        ({"schema_version": 0}, "unsupported_schema_version"),
        ({"schema_version": "1"}, "bad_type:schema_version"),
        ({"schema_version": 1.0}, "bad_type:schema_version"),
        ({"schema_version": True}, "bad_type:schema_version"),
        ({"age": 0}, None),
        ({"age": 130}, None),
        ({"age": 130.5}, "bad_value:age"),
        ({"age": -1}, "bad_value:age"),
        ({"age": "41"}, "bad_type:age"),
        ({"age": 10**400}, "non_finite:age"),
        ({"gender": "g" * 32}, None),
        ({"gender": "g" * 33}, "too_long:gender"),
        ({"gender": 1}, "bad_type:gender"),
        ({"annual_income": -5}, "negative:annual_income"),
        ({"annual_income": "high"}, "bad_type:annual_income"),
    ],
)
def test_field_rules(changes: dict[str, Any], expected: str | None) -> None:
    got = run(payload(**changes))
    if expected is None:
        assert isinstance(got, CheckoutEvent), got
    else:
        assert isinstance(got, Rejection) and got.reason == expected, got


@pytest.mark.parametrize("cid", ["", "a b", "x" * 65, "ü", "CS/1", "CS1112\n"])
def test_customer_id_follows_the_id_rule(cid: str) -> None:
    assert reason(payload(customer_id=cid), cid.encode()) == "invalid_customer_id"


def test_schema_version_is_checked_first() -> None:
    raw = json.dumps({"schema_version": 2, "amount": "whatever"}).encode()
    assert reason(raw) == "unsupported_schema_version"


# One fault per field, in the documented order of the checks (docs/events.md).
FAULTS_IN_ORDER = [
    ("schema_version", 2, "unsupported_schema_version"),
    ("event_id", "", "bad_value:event_id"),
    ("customer_id", "CS 1112", "invalid_customer_id"),
    ("type", "return", "bad_value:type"),
    ("ts", "2026-11-27T10:00:00", "bad_ts"),
    ("amount", -1, "negative:amount"),
    ("discount", "1", "bad_type:discount"),
    ("items", 0, "bad_value:items"),
    ("category", "c" * 65, "too_long:category"),
    ("channel", 7, "bad_type:channel"),
    ("currency", "eur", "bad_value:currency"),
    ("age", 131, "bad_value:age"),
    ("gender", "g" * 33, "too_long:gender"),
    ("annual_income", -1, "negative:annual_income"),
]


@pytest.mark.parametrize("first", range(len(FAULTS_IN_ORDER) - 1))
def test_the_first_broken_rule_in_table_order_is_the_reason(first: int) -> None:
    field, value, expected = FAULTS_IN_ORDER[first]
    for later_field, later_value, _ in FAULTS_IN_ORDER[first + 1 :]:
        raw = payload(**{field: value, later_field: later_value})
        key = json.loads(raw)["customer_id"].encode()
        assert reason(raw, key) == expected, later_field


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_json_literals_are_invalid_json(literal: bytes) -> None:
    raw = b'{"event_id":"e","customer_id":"CS1112","ts":1,"amount":' + literal + b"}"
    assert reason(raw) == "invalid_json"


def test_number_literals_beyond_a_double_name_the_field() -> None:
    raw = b'{"event_id":"e","customer_id":"CS1112","ts":1,"amount":1e400}'
    assert reason(raw) == "non_finite:amount"
    raw = b'{"event_id":"e","customer_id":"CS1112","ts":1,"amount":1,"annual_income":-1e999}'
    assert reason(raw) == "non_finite:annual_income"


def test_overflow_in_an_ignored_field_is_ignored() -> None:
    assert isinstance(run(payload()[:-1] + b', "big": 1e400}'), CheckoutEvent)


# -- currency --------------------------------------------------------------------------------------


def test_currency_is_checked_only_when_configured() -> None:
    assert isinstance(run(payload(currency="USD")), CheckoutEvent)
    assert isinstance(run(payload(currency="USD"), currency=""), CheckoutEvent)
    assert isinstance(run(payload(currency="USD"), currency="USD"), CheckoutEvent)
    assert reason(payload(currency="USD"), currency="EUR") == "currency_mismatch"
    assert isinstance(run(payload(), currency="EUR"), CheckoutEvent)  # absent: assumed


# -- the envelope ----------------------------------------------------------------------------------


def test_size_limit_is_checked_before_parsing() -> None:
    at_limit = payload(pad="x" * (MAX_PAYLOAD_BYTES - len(payload(pad=""))))
    assert len(at_limit) == MAX_PAYLOAD_BYTES
    assert isinstance(run(at_limit), CheckoutEvent)
    assert reason(at_limit[:-1] + b" }") == "too_large"
    assert reason(b"[" * (MAX_PAYLOAD_BYTES + 1)) == "too_large"  # never parsed


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b"{}}",
        b"\xff",
        b'{"event_id":"\xff"}',
        b'{"event_id":"\\ud800"}',  # lone surrogate escape
        payload()[:-1] + b', "x": "\xc3"}',  # invalid UTF-8 in an ignored field
        payload()[:-1] + b', "x": 1e400, "y": "\\udc00"}',
        b"[" * 10_000 + b"]" * 10_000,  # deep nesting
        b'{"event_id": 1e400, "n": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
        "{}".encode("utf-16"),
    ],
)
def test_invalid_json(raw: bytes) -> None:
    assert reason(raw) == "invalid_json"


@pytest.mark.parametrize("raw", [b"[]", b"1", b'"x"', b"null", b"true"])
def test_not_an_object(raw: bytes) -> None:
    assert reason(raw) == "not_an_object"


@pytest.mark.parametrize("raw", [None, 42, "text", bytearray(b"{}"), memoryview(b"[]")])
def test_payloads_that_are_not_bytes_never_raise(raw: Any) -> None:
    got = decode(raw, KEY, now=NOW)
    assert isinstance(got, Rejection) and got.reason in REASONS


def test_bytearray_payload_decodes_like_bytes() -> None:
    as_bytearray: Any = bytearray(payload())
    assert decode(as_bytearray, KEY, now=NOW) == decode(payload(), KEY, now=NOW)


def test_rejection_is_a_frozen_value() -> None:
    rejection = Rejection("invalid_json", "nope")
    with pytest.raises(AttributeError):
        rejection.reason = "x"  # type: ignore[misc]
    assert msgspec.json.decode(msgspec.json.encode(rejection), type=Rejection) == rejection


# -- validate and encode ---------------------------------------------------------------------------


def test_validate_raises_invalid_event_with_the_reason() -> None:
    with pytest.raises(InvalidEvent) as caught:
        validate({**BASE, "amount": -1}, now=NOW)
    assert caught.value.reason == "negative:amount"
    assert isinstance(caught.value, SegstreamError)


def test_validate_applies_python_only_faults() -> None:
    with pytest.raises(InvalidEvent, match="finite") as caught:
        validate({**BASE, "discount": float("inf")}, now=NOW)
    assert caught.value.reason == "non_finite:discount"
    with pytest.raises(InvalidEvent) as caught:
        validate({**BASE, "category": "\ud800"}, now=NOW)
    assert caught.value.reason == "bad_value:category"
    with pytest.raises(InvalidEvent) as caught:
        validate([("event_id", "e")], now=NOW)  # type: ignore[arg-type]
    assert caught.value.reason == "not_an_object"


def test_validate_and_decode_agree() -> None:
    fields = {**BASE, "items": 2, "currency": "EUR", "gender": "m"}
    assert validate(fields, now=NOW, currency="EUR") == run(
        json.dumps(fields).encode(), currency="EUR"
    )


def test_validate_does_not_mutate_its_input() -> None:
    fields = {**BASE, "type": None}
    before = dict(fields)
    validate(fields, now=NOW)
    assert fields == before


def test_encode_round_trips_and_is_compact() -> None:
    event = validate({**BASE, "category": "shoes", "age": 30.5}, now=NOW)
    raw = encode(event)
    assert b" " not in raw and b"null" not in raw
    assert run(raw) == event


def test_encode_refuses_an_event_that_breaks_the_contract() -> None:
    broken = CheckoutEvent(event_id="e", customer_id="no spaces", ts=1.0, amount=1.0)
    with pytest.raises(InvalidEvent) as caught:
        encode(broken)
    assert caught.value.reason == "invalid_customer_id"


def test_encode_does_not_apply_the_future_check() -> None:
    event = CheckoutEvent(event_id="e", customer_id="c", ts=4e9, amount=1.0)
    assert decode(encode(event), b"c", now=4e9) == event


def test_reason_codes_have_the_documented_shape() -> None:
    families = {r.split(":")[0] for r in REASONS}
    assert families == {
        "too_large",
        "invalid_json",
        "not_an_object",
        "unsupported_schema_version",
        "missing_field",
        "bad_type",
        "bad_value",
        "too_long",
        "negative",
        "non_finite",
        "invalid_customer_id",
        "missing_key",
        "key_mismatch",
        "bad_ts",
        "future_ts",
        "currency_mismatch",
    }
    assert all(r.split(":")[1] in CheckoutEvent.__struct_fields__ for r in REASONS if ":" in r)
