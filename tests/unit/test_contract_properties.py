"""Properties of the checkout-event contract (hypothesis).

* every valid event round-trips: ``decode(encode(e)) == e``, whatever the wire form;
* every reason in :data:`REASONS` has a mutation of a valid event that is rejected with
  exactly that reason, by :func:`decode` and by :func:`validate` alike, and by the JSON
  Schema where the schema can express the rule;
* arbitrary bytes, arbitrary JSON values and arbitrary values under the contract's
  field names never raise, and the fast lane always agrees with the rules.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producer.contract import (
    MAX_AGE,
    MAX_EVENT_ID_CHARS,
    MAX_GENDER_CHARS,
    MAX_ITEMS,
    MAX_PAYLOAD_BYTES,
    MAX_TEXT_CHARS,
    REASONS,
    SCHEMA_PATH,
    CheckoutEvent,
    Rejection,
    _decode_by_rules,
    decode,
    encode,
    validate,
)
from state.errors import InvalidEvent
from state.ids import CUSTOMER_ID_PATTERN, is_valid_customer_id

NOW = 1_795_773_600.0  # 2026-11-27T10:00:00Z
SCHEMA = jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))
FIELDS = CheckoutEvent.__struct_fields__

# -- valid events ----------------------------------------------------------------------------------

customer_ids = st.from_regex(rf"\A{CUSTOMER_ID_PATTERN}\Z")
money = st.floats(min_value=0.0, max_value=1e12, allow_nan=False) | st.integers(0, 10**9)
short_text = st.text(max_size=8)
currencies = st.from_regex(r"\A[A-Z]{3}\Z")


@st.composite
def rfc3339(draw: st.DrawFn, lo: int = 0, hi: int = int(NOW)) -> tuple[str, float]:
    """An RFC 3339 string and the epoch seconds it stands for."""
    seconds = draw(st.integers(lo, hi))
    micros = draw(st.integers(0, 999_999))
    digits = draw(st.integers(0, 9))
    offset = draw(st.integers(-23 * 60 - 59, 23 * 60 + 59)) if draw(st.booleans()) else None
    local = seconds + (offset or 0) * 60
    days, rest = divmod(local, 86_400)
    day = date.fromordinal(date(1970, 1, 1).toordinal() + days)
    text = f"{day.isoformat()}T{rest // 3600:02d}:{rest // 60 % 60:02d}:{rest % 60:02d}"
    if digits:
        fraction = f"{micros:06d}{draw(st.integers(0, 999)):03d}"[:digits]
        text += "." + fraction
        micros = int(fraction[:6].ljust(6, "0"))
    else:
        micros = 0
    if offset is None:
        text += draw(st.sampled_from("Zz"))
    else:
        sign = "-" if offset < 0 else "+"
        text += f"{sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"
    if draw(st.booleans()):
        text = text.replace("T", "t")
    return text, (seconds * 10**6 + micros) / 10**6


@st.composite
def wire_events(draw: st.DrawFn) -> tuple[dict[str, Any], CheckoutEvent]:
    """A valid JSON object in any allowed spelling, and the event it must decode to."""
    obj: dict[str, Any] = {
        "event_id": draw(st.text(min_size=1, max_size=MAX_EVENT_ID_CHARS)),
        "customer_id": draw(customer_ids),
        "amount": draw(money),
    }
    if draw(st.booleans()):
        obj["ts"], ts = draw(rfc3339())
    else:
        obj["ts"] = ts = draw(st.floats(0, NOW + 86_400) | st.integers(0, int(NOW)))
    optional = {
        "type": st.sampled_from(["purchase", "refund"]),
        "discount": money,
        "items": st.integers(1, MAX_ITEMS),
        "category": st.text(max_size=MAX_TEXT_CHARS),
        "channel": st.text(max_size=MAX_TEXT_CHARS),
        "currency": currencies,
        "schema_version": st.just(1),
        "age": st.floats(0, MAX_AGE) | st.integers(0, int(MAX_AGE)),
        "gender": st.text(max_size=MAX_GENDER_CHARS),
        "annual_income": money,
    }
    for name, values in optional.items():
        choice = draw(st.integers(0, 2))  # absent, null, a value
        if choice == 1:
            obj[name] = None
        elif choice == 2:
            obj[name] = draw(values)
    if draw(st.booleans()):
        extra = draw(st.text(min_size=1, max_size=8).filter(lambda k: k not in FIELDS))
        obj[extra] = draw(short_text | st.integers() | st.none())
    known: dict[str, Any] = {
        k: float(v) if isinstance(v, int) and k not in ("items", "schema_version") else v
        for k, v in obj.items()
        if k in FIELDS and k != "ts" and v is not None
    }
    expected = CheckoutEvent(ts=float(ts), **known)
    return obj, expected


events = st.builds(
    CheckoutEvent,
    event_id=st.text(min_size=1, max_size=MAX_EVENT_ID_CHARS),
    customer_id=customer_ids,
    ts=st.floats(0, NOW + 86_400),
    amount=st.floats(min_value=0.0, allow_nan=False, allow_infinity=False),
    type=st.sampled_from(["purchase", "refund"]),
    discount=st.floats(min_value=0.0, allow_nan=False, allow_infinity=False),
    items=st.integers(1, MAX_ITEMS),
    category=st.none() | st.text(max_size=MAX_TEXT_CHARS),
    channel=st.none() | st.text(max_size=MAX_TEXT_CHARS),
    currency=st.none() | currencies,
    age=st.none() | st.floats(0.0, MAX_AGE),
    gender=st.none() | st.text(max_size=MAX_GENDER_CHARS),
    annual_income=st.none() | st.floats(min_value=0.0, allow_nan=False, allow_infinity=False),
)


@settings(max_examples=300, deadline=None)
@given(events)
def test_every_valid_event_round_trips(event: CheckoutEvent) -> None:
    raw = encode(event)
    key = event.customer_id.encode()
    assert decode(raw, key, now=NOW) == event
    assert _decode_by_rules(raw, key, NOW, None) == event
    assert validate(json.loads(raw), now=NOW) == event
    assert encode(decode(raw, key, now=NOW)) == raw  # type: ignore[arg-type]
    assert SCHEMA.is_valid(json.loads(raw))


@settings(max_examples=300, deadline=None)
@given(wire_events())
def test_every_allowed_spelling_decodes_to_the_same_event(case: tuple[dict, CheckoutEvent]) -> None:
    obj, expected = case
    raw = json.dumps(obj).encode()
    key = obj["customer_id"].encode()
    assert decode(raw, key, now=NOW) == expected
    assert _decode_by_rules(raw, key, NOW, None) == expected
    assert validate(obj, now=NOW) == expected
    assert SCHEMA.is_valid(obj)


# -- mutations: one per reason ---------------------------------------------------------------------


@dataclass
class Mutant:
    """A valid event broken in one way; ``raw`` when the fault only exists on the wire."""

    fields: dict[str, Any]
    raw: bytes | None = None
    key: bytes | str | None = "customer_id"  # "customer_id": the key is the customer_id
    currency: str | None = None
    python_only: bool = False  # a Python value JSON cannot carry: checked through validate
    schema_tells: bool = True  # the JSON Schema can see this fault

    def wire(self) -> bytes:
        return self.raw if self.raw is not None else json.dumps(self.fields).encode()

    def message_key(self) -> bytes | None:
        if self.key == "customer_id":
            cid = self.fields.get("customer_id") if isinstance(self.fields, dict) else None
            return cid.encode("utf-8", "surrogatepass") if isinstance(cid, str) else b"k"
        return self.key  # type: ignore[return-value]


def _set(name: str, values: st.SearchStrategy[Any], **kw: Any) -> Callable[..., Mutant]:
    def mutate(draw: st.DrawFn, base: dict[str, Any]) -> Mutant:
        return Mutant({**base, name: draw(values)}, **kw)

    return mutate


def _drop(name: str) -> Callable[..., Mutant]:
    def mutate(draw: st.DrawFn, base: dict[str, Any]) -> Mutant:
        fields = dict(base)
        if draw(st.booleans()):
            del fields[name]
        else:
            fields[name] = None
        return Mutant(fields)

    return mutate


def _literal(name: str, literals: list[str]) -> Callable[..., Mutant]:
    """A number literal no double can hold, written straight into the JSON text."""

    def mutate(draw: st.DrawFn, base: dict[str, Any]) -> Mutant:
        literal = draw(st.sampled_from(literals))
        raw = json.dumps({**base, name: "@@"}).encode().replace(b'"@@"', literal.encode())
        return Mutant({**base, name: float(literal)}, raw=raw, schema_tells=False)

    return mutate


def _python_only(name: str, values: st.SearchStrategy[Any]) -> Callable[..., Mutant]:
    return _set(name, values, python_only=True, schema_tells=False)


def _not_a_string() -> st.SearchStrategy[Any]:
    return (
        st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.booleans()
        | st.lists(st.integers(), max_size=2)
        | st.dictionaries(st.text(max_size=2), st.integers(), max_size=2)
    )


def _not_a_number() -> st.SearchStrategy[Any]:
    return (
        st.text(max_size=5)
        | st.booleans()
        | st.lists(st.integers(), max_size=2)
        | st.dictionaries(st.text(max_size=2), st.integers(), max_size=2)
    )


def _corrupt(draw: st.DrawFn, base: dict[str, Any]) -> Mutant:
    raw = json.dumps(base).encode()
    how = draw(st.sampled_from(["truncate", "trailing", "utf8", "nan", "surrogate"]))
    if how == "truncate":
        raw = raw[: draw(st.integers(0, len(raw) - 1))]
    elif how == "trailing":
        raw += draw(st.sampled_from([b"x", b"{}", b",", b"]"]))
    elif how == "utf8":
        raw = (
            raw[:-1]
            + b', "x": "'
            + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"]))
            + b'"}'
        )
    elif how == "nan":
        raw = (
            raw[:-1]
            + b', "amount": '
            + draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity"]))
            + b"}"
        )
    else:
        raw = raw[:-1] + b', "x": "\\udc00"}'
    return Mutant(base, raw=raw, schema_tells=False)


def _too_large(draw: st.DrawFn, base: dict[str, Any]) -> Mutant:
    pad = "x" * (MAX_PAYLOAD_BYTES + draw(st.integers(0, 100)))
    return Mutant({**base, "pad": pad}, schema_tells=False)


def _not_an_object(draw: st.DrawFn, base: dict[str, Any]) -> Mutant:
    value = draw(st.sampled_from([[base], "text", 1, 2.5, None, True, []]))
    return Mutant(value, raw=json.dumps(value).encode())  # type: ignore[arg-type]


def _invalid_customer_id(draw: st.DrawFn, base: dict[str, Any]) -> Mutant:
    cid = draw(st.text(max_size=70).filter(lambda s: not is_valid_customer_id(s)))
    return Mutant({**base, "customer_id": cid}, schema_tells=not cid.endswith("\n"))


def _key_mismatch(draw: st.DrawFn, base: dict[str, Any]) -> Mutant:
    key = draw(st.binary(max_size=70).filter(lambda k: k != base["customer_id"].encode()))
    return Mutant(base, key=key, schema_tells=False)


def _bad_ts(draw: st.DrawFn, base: dict[str, Any]) -> Mutant:
    ts = draw(
        st.floats(max_value=-1e-9, allow_infinity=False, allow_nan=False)
        | st.sampled_from(
            [
                "2026-11-27T10:00:00",
                "2026-11-27 10:00:00Z",
                "2026-11-27",
                "2026-11-27T10:00:00+0100",
                "2026-13-01T00:00:00Z",
                "2026-02-29T00:00:00Z",
                "2026-11-27T10:00:60Z",
                "1969-12-31T23:59:59Z",
                "2026-11-27T10:00:00+25:00",
            ]
        )
        | st.text(max_size=30).filter(lambda s: len(s) < 20 or s[4:5] != "-")
    )
    tells = (
        not isinstance(ts, str)
        or ts
        in ("2026-11-27T10:00:00", "2026-11-27 10:00:00Z", "2026-11-27", "2026-11-27T10:00:00+0100")
        or len(ts) < 20
        or ts[4:5] != "-"
    )
    return Mutant({**base, "ts": ts}, schema_tells=tells)


def _future_ts(draw: st.DrawFn, base: dict[str, Any]) -> Mutant:
    if draw(st.booleans()):
        ts: Any = NOW + 86_400 + draw(st.floats(1e-3, 1e10))
    else:
        ts, _ = draw(rfc3339(int(NOW) + 86_402, 253_402_214_400 - 86_400))
    return Mutant({**base, "ts": ts}, schema_tells=False)


def _currency_mismatch(draw: st.DrawFn, base: dict[str, Any]) -> Mutant:
    mine, theirs = draw(st.lists(currencies, min_size=2, max_size=2, unique=True))
    return Mutant({**base, "currency": theirs}, currency=mine, schema_tells=False)


def _bad_value_event_id(draw: st.DrawFn, base: dict[str, Any]) -> Mutant:
    if draw(st.booleans()):
        return Mutant({**base, "event_id": ""})
    return Mutant({**base, "event_id": "e\ud800"}, python_only=True, schema_tells=False)


def _either(*mutations: Callable[..., Mutant]) -> Callable[..., Mutant]:
    def mutate(draw: st.DrawFn, base: dict[str, Any]) -> Mutant:
        return draw(st.sampled_from(mutations))(draw, base)

    return mutate


def _items_float(draw: st.DrawFn, base: dict[str, Any]) -> Mutant:
    value = draw(st.floats(allow_nan=False, allow_infinity=False))
    return Mutant({**base, "items": value}, schema_tells=not value.is_integer())


surrogate_text = st.text(max_size=4).map(lambda s: s + "\udc80")


def texts_over(limit: int) -> st.SearchStrategy[str]:
    return st.text(min_size=limit + 1, max_size=limit + 20)


negative = st.floats(max_value=-1e-300, allow_nan=False, allow_infinity=False) | st.integers(
    max_value=-1
)

MUTATIONS: dict[str, Callable[..., Mutant]] = {
    "too_large": _too_large,
    "invalid_json": _corrupt,
    "not_an_object": _not_an_object,
    "unsupported_schema_version": _set("schema_version", st.integers().filter(lambda v: v != 1)),
    "invalid_customer_id": _invalid_customer_id,
    "missing_key": lambda draw, base: Mutant(base, key=None, schema_tells=False),
    "key_mismatch": _key_mismatch,
    "bad_ts": _bad_ts,
    "future_ts": _future_ts,
    "currency_mismatch": _currency_mismatch,
    "bad_value:event_id": _bad_value_event_id,
    "bad_value:type": _set(
        "type", st.text(max_size=10).filter(lambda s: s not in ("purchase", "refund"))
    ),
    "bad_value:items": _set(
        "items", st.integers(max_value=0) | st.integers(min_value=MAX_ITEMS + 1)
    ),
    "bad_value:currency": _set(
        "currency",
        st.text(max_size=5).filter(
            lambda s: not (len(s) == 3 and s.isascii() and s.isalpha() and s.isupper())
        ),
    ),
    "bad_value:age": _set(
        "age",
        st.floats(allow_nan=False, allow_infinity=False).filter(lambda a: not 0 <= a <= MAX_AGE),
    ),
    "bad_value:category": _python_only("category", surrogate_text),
    "bad_value:channel": _python_only("channel", surrogate_text),
    "bad_value:gender": _python_only("gender", surrogate_text),
    "too_long:event_id": _set("event_id", texts_over(MAX_EVENT_ID_CHARS)),
    "too_long:category": _set("category", texts_over(MAX_TEXT_CHARS)),
    "too_long:channel": _set("channel", texts_over(MAX_TEXT_CHARS)),
    "too_long:gender": _set("gender", texts_over(MAX_GENDER_CHARS)),
    "bad_type:items": _either(
        _items_float,
        _set("items", st.booleans() | st.text(max_size=3) | st.lists(st.integers(), max_size=2)),
    ),
}
for _name in ("event_id", "customer_id", "ts", "amount"):
    MUTATIONS[f"missing_field:{_name}"] = _drop(_name)
for _name in ("event_id", "customer_id", "category", "channel", "currency", "gender", "type"):
    MUTATIONS[f"bad_type:{_name}"] = _set(_name, _not_a_string())
for _name in ("amount", "discount", "annual_income", "age"):
    MUTATIONS[f"bad_type:{_name}"] = _set(_name, _not_a_number())
MUTATIONS["bad_type:ts"] = _set(
    "ts",
    st.booleans()
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)
MUTATIONS["bad_type:schema_version"] = _set(
    "schema_version", _not_a_number() | st.floats(allow_nan=False, allow_infinity=False)
)
for _name in ("amount", "discount", "annual_income"):
    MUTATIONS[f"negative:{_name}"] = _set(_name, negative)
for _name in ("amount", "discount", "annual_income", "age"):
    MUTATIONS[f"non_finite:{_name}"] = _either(
        _literal(_name, ["1e400", "-1e400", "1" + "0" * 400]),
        _python_only(_name, st.sampled_from([math.nan, math.inf, -math.inf])),
    )


def test_every_reason_has_a_mutation() -> None:
    assert set(MUTATIONS) == REASONS


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), wire_events(), st.sampled_from(sorted(REASONS)))
def test_every_mutation_is_rejected_with_exactly_its_reason(
    data: st.DataObject, case: tuple[dict, CheckoutEvent], reason: str
) -> None:
    mutant = MUTATIONS[reason](data.draw, case[0])
    key = mutant.message_key()
    if not mutant.python_only:
        raw = mutant.wire()
        got = decode(raw, key, now=NOW, currency=mutant.currency)
        assert isinstance(got, Rejection) and got.reason == reason, got
        assert got == _decode_by_rules(raw, key, NOW, mutant.currency)
    wire_only = mutant.raw is not None or reason in ("missing_key", "key_mismatch", "too_large")
    if isinstance(mutant.fields, dict) and not wire_only:
        with pytest.raises(InvalidEvent) as caught:
            validate(mutant.fields, now=NOW, currency=mutant.currency)
        assert caught.value.reason == reason
    if mutant.schema_tells:
        assert not SCHEMA.is_valid(mutant.fields)


# -- nothing ever raises ---------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
keys = st.none() | st.binary(max_size=8) | customer_ids.map(str.encode)


def _agree(raw: bytes, key: bytes | None, currency: str | None = None) -> None:
    got = decode(raw, key, now=NOW, currency=currency)
    assert got == _decode_by_rules(raw, key, NOW, currency)
    if isinstance(got, Rejection):
        assert got.reason in REASONS and got.detail
    else:
        assert isinstance(got, CheckoutEvent)
        assert decode(encode(got), key, now=NOW, currency=currency) == got


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), keys)
def test_arbitrary_bytes_never_raise(raw: bytes, key: bytes | None) -> None:
    _agree(raw, key)


@settings(max_examples=300, deadline=None)
@given(json_values, keys)
def test_arbitrary_json_values_never_raise(value: Any, key: bytes | None) -> None:
    _agree(json.dumps(value).encode(), key)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.sampled_from([*FIELDS, "x"]), json_values, max_size=len(FIELDS) + 1),
    wire_events(),
    keys,
    st.none() | currencies,
)
def test_arbitrary_values_under_the_field_names_never_raise(
    overrides: dict[str, Any],
    case: tuple[dict, CheckoutEvent],
    key: bytes | None,
    currency: str | None,
) -> None:
    obj = {**case[0], **overrides}
    raw = json.dumps(obj).encode()
    _agree(raw, key, currency)
    cid = obj.get("customer_id")
    matching = cid.encode() if isinstance(cid, str) else b"k"
    _agree(raw, matching, currency)
    got = decode(raw, matching, now=NOW, currency=currency)
    try:
        event = validate(obj, now=NOW, currency=currency)
    except InvalidEvent as exc:
        assert isinstance(got, Rejection) and got.reason == exc.reason
    else:
        assert got == event
        assert SCHEMA.is_valid(obj)  # the schema never refuses what segstream accepts
