"""The checkout-event contract, version 1 (the prose and the examples: docs/events.md).

Checkout systems send one JSON object per Kafka message, keyed by the customer id.
:func:`decode` turns those bytes into a :class:`CheckoutEvent` or a :class:`Rejection`
with a machine-readable ``reason`` (one of :data:`REASONS`). It never raises and never
guesses. The rules live in one function, :func:`_check`: :func:`validate` applies them
to a Python mapping and raises :class:`~state.errors.InvalidEvent` instead, and
:func:`decode` applies them to every message its msgspec fast lane (:class:`_Wire`) does
not accept, so the fast lane can only ever say "valid" (tests hold both lanes equal).
:func:`encode` writes the compact JSON that :func:`decode` reads back exactly.

>>> payload = b'{"event_id": "e-1", "customer_id": "CS1112", "ts": "2024-05-01T10:00:00Z", "amount": 12.5}'
>>> event = decode(payload, b"CS1112")
>>> event.amount, event.ts, event.type, event.items
(12.5, 1714557600.0, 'purchase', 1)
>>> decode(payload, b"CS9999").reason
'key_mismatch'
>>> decode(b'{"event_id": "e-1", "customer_id": "CS1112", "ts": 0}', b"CS1112").reason
'missing_field:amount'
>>> decode(encode(event), b"CS1112") == event
True
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

import msgspec

from state.errors import InvalidEvent
from state.ids import is_valid_customer_id

SCHEMA_VERSION = 1
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_FUTURE_SECONDS = 86_400.0
MAX_EVENT_ID_CHARS = 128
MAX_TEXT_CHARS = 64  # category, channel
MAX_GENDER_CHARS = 32
MAX_ITEMS = 2**31 - 1  # fits a signed 32-bit int in every producer language
MAX_AGE = 130.0
#: The same contract as a JSON Schema (draft 2020-12), for producers in other languages.
SCHEMA_PATH = Path(__file__).with_name("schema") / "checkout-event.v1.json"


#: The contract's fields in the order tables (CSV, Parquet) carry them; ``schema_version``
#: is a property of the message, not of a table row.
TABLE_COLUMNS: tuple[str, ...] = (
    "event_id",
    "customer_id",
    "type",
    "ts",
    "amount",
    "discount",
    "items",
    "category",
    "channel",
    "currency",
    "age",
    "gender",
    "annual_income",
)


class CheckoutEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One validated checkout event. ``ts`` is normalised to epoch seconds (UTC)."""

    event_id: str
    customer_id: str
    ts: float
    amount: float
    type: Literal["purchase", "refund"] = "purchase"
    discount: float = 0.0
    items: int = 1
    category: str | None = None
    channel: str | None = None
    currency: str | None = None
    schema_version: int = SCHEMA_VERSION
    age: float | None = None
    gender: str | None = None
    annual_income: float | None = None


class Rejection(msgspec.Struct, frozen=True):
    """Why a message is not a valid event: ``reason`` is in :data:`REASONS`, ``detail`` is prose.

    >>> decode(b"[1, 2]", b"k")
    Rejection(reason='not_an_object', detail='top-level JSON value is a list, not an object')
    """

    reason: str
    detail: str


REQUIRED_FIELDS = ("event_id", "customer_id", "ts", "amount")
_TEXT_FIELDS = ("event_id", "category", "channel", "gender")
_MONEY_FIELDS = ("amount", "discount", "annual_income")
_ALL_FIELDS = tuple(f for f in CheckoutEvent.__struct_fields__)

#: Every reason :func:`decode` can give and :func:`validate` can raise (docs/events.md lists them).
REASONS: frozenset[str] = frozenset(
    {
        "too_large",
        "invalid_json",
        "not_an_object",
        "unsupported_schema_version",
        "invalid_customer_id",
        "missing_key",
        "key_mismatch",
        "bad_ts",
        "future_ts",
        "currency_mismatch",
        "bad_value:type",
        "bad_value:items",
        "bad_value:currency",
        "bad_value:age",
    }
    | {f"missing_field:{f}" for f in REQUIRED_FIELDS}
    | {f"bad_type:{f}" for f in _ALL_FIELDS}
    | {f"too_long:{f}" for f in _TEXT_FIELDS}
    | {f"bad_value:{f}" for f in _TEXT_FIELDS}  # empty event_id, unencodable text
    | {f"negative:{f}" for f in _MONEY_FIELDS}
    | {f"non_finite:{f}" for f in (*_MONEY_FIELDS, "age")}
)

_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?"
    r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)
_TYPES = frozenset({"purchase", "refund"})
_NO_KEY = object()  # validate() and encode(): there is no Kafka key to compare
_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


# -- public API -----------------------------------------------------------------------------------


def decode(
    payload: bytes, key: bytes | None, *, now: float | None = None, currency: str | None = None
) -> CheckoutEvent | Rejection:
    """Decode one Kafka message value into an event, or say precisely why not.

    ``key`` is the Kafka message key; it must be present and equal the UTF-8
    ``customer_id`` (``missing_key``/``key_mismatch`` otherwise). ``now`` (default
    ``time.time()``) anchors the future-timestamp check; ``currency`` (e.g.
    ``Settings.currency``; ``None`` or ``""``: no check) is the deployment's currency.
    Never raises, whatever the bytes.

    A valid event takes the fast lane (:class:`_Wire`, checked by msgspec in C); anything
    the fast lane does not accept is decided by :func:`_check`, the contract's rules, so a
    rejection always carries the precise reason.

    >>> decode(b'{"event_id": "e", "customer_id": "c", "ts": 1, "amount": -1}', b"c")
    Rejection(reason='negative:amount', detail='amount must be >= 0, got -1')
    >>> decode(b'{"event_id": "e", "customer_id": "c", "ts": 1, "amount": 1e400}', b"c").reason
    'non_finite:amount'
    >>> decode(b"\\xff", None).reason
    'invalid_json'
    """
    if type(payload) is bytes and len(payload) <= MAX_PAYLOAD_BYTES and key is not None:
        try:
            wire = _wire_decoder.decode(payload)
            if not payload.isascii():
                payload.decode()  # msgspec skips unknown fields without checking their UTF-8
            ts = _parse_rfc3339(wire.ts) if isinstance(wire.ts, str) else wire.ts
            if now is None:
                now = time.time()
            cur = wire.currency
            if (
                0.0 <= ts <= now + MAX_FUTURE_SECONDS
                and key == wire.customer_id.encode()
                and is_valid_customer_id(wire.customer_id)
                and (cur is None or (_is_currency(cur) and not (currency and cur != currency)))
            ):
                return CheckoutEvent(
                    event_id=wire.event_id,
                    customer_id=wire.customer_id,
                    ts=ts,
                    amount=wire.amount,
                    type=wire.type or "purchase",
                    discount=0.0 if wire.discount is None else wire.discount,
                    items=1 if wire.items is None else wire.items,
                    category=wire.category,
                    channel=wire.channel,
                    currency=cur,
                    age=wire.age,
                    gender=wire.gender,
                    annual_income=wire.annual_income,
                )
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError, InvalidEvent):
            pass  # not in the fast lane: the rules below decide, and name the reason
    return _decode_by_rules(payload, key, now, currency)


def validate(
    fields: Mapping[str, Any], *, now: float | None = None, currency: str | None = None
) -> CheckoutEvent:
    """The event ``fields`` describe, by the rules of :func:`decode` (no key check).

    Raises :class:`~state.errors.InvalidEvent` whose ``reason`` is in :data:`REASONS`.
    Numbers may be Python ``int``/``float`` (or subclasses, never ``bool``).

    >>> validate({"event_id": "e", "customer_id": "c", "ts": 5, "amount": 3}).amount
    3.0
    >>> validate({"event_id": "e", "customer_id": "c", "ts": 5, "amount": float("nan")})
    Traceback (most recent call last):
    ...
    state.errors.InvalidEvent: amount must be finite, got nan
    """
    if not isinstance(fields, Mapping):
        _reject("not_an_object", f"expected a mapping, got {type(fields).__name__}")
    return _check(fields, _NO_KEY, now, currency)


def encode(event: CheckoutEvent) -> bytes:
    """Compact JSON for ``event`` (``ts`` as epoch seconds, ``None`` fields left out).

    The event is checked first (no future or currency check), so what is encoded
    decodes back to an equal event; a broken one raises :class:`~state.errors.InvalidEvent`.

    >>> encode(CheckoutEvent(event_id="e", customer_id="c", ts=1.5, amount=2))
    b'{"event_id":"e","customer_id":"c","ts":1.5,"amount":2.0,"type":"purchase","discount":0.0,"items":1,"schema_version":1}'
    """
    checked = _check(msgspec.structs.asdict(event), _NO_KEY, math.inf, None)
    return _encoder.encode(
        {k: v for k, v in msgspec.structs.asdict(checked).items() if v is not None}
    )


# -- the fast lane: the same rules as msgspec constraints, trusted only to accept ----------------

_Money = Annotated[float, msgspec.Meta(ge=0.0)]
_Text = Annotated[str, msgspec.Meta(max_length=MAX_TEXT_CHARS)]


class _Wire(msgspec.Struct, gc=False):
    """The shape of a valid v1 payload; a test checks it never accepts what :func:`_check` rejects.

    What a C-level constraint cannot say (the key, the RFC 3339 string, the future and
    currency checks) :func:`decode` checks after it, as do the two text rules that are
    cheaper as Python calls than as msgspec patterns (customer id, currency code).
    """

    event_id: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_EVENT_ID_CHARS)]
    customer_id: str
    ts: str | float
    amount: _Money
    type: Literal["purchase", "refund"] | None = None
    discount: _Money | None = None
    items: Annotated[int, msgspec.Meta(ge=1, le=MAX_ITEMS)] | None = None
    category: _Text | None = None
    channel: _Text | None = None
    currency: str | None = None
    schema_version: Literal[1] | None = None
    age: Annotated[float, msgspec.Meta(ge=0.0, le=MAX_AGE)] | None = None
    gender: Annotated[str, msgspec.Meta(max_length=MAX_GENDER_CHARS)] | None = None
    annual_income: _Money | None = None


_wire_decoder = msgspec.json.Decoder(_Wire)


def _decode_by_rules(
    payload: bytes, key: bytes | None, now: float | None, currency: str | None
) -> CheckoutEvent | Rejection:
    """:func:`decode` without the fast lane: parse to plain values, then :func:`_check`."""
    try:
        size = len(payload)
    except TypeError:
        return Rejection("invalid_json", f"payload is {type(payload).__name__}, not bytes")
    if size > MAX_PAYLOAD_BYTES:
        return Rejection("too_large", f"payload is {size} bytes, limit {MAX_PAYLOAD_BYTES}")
    try:
        obj = _decoder.decode(payload)
    except msgspec.ValidationError:  # untyped decoding only fails so on numbers beyond a double
        obj = _decode_overflowing(payload)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError, TypeError) as exc:
        return Rejection("invalid_json", f"not valid UTF-8 JSON: {exc}")
    if isinstance(obj, Rejection):
        return obj
    if type(obj) is not dict:
        return Rejection(
            "not_an_object", f"top-level JSON value is a {type(obj).__name__}, not an object"
        )
    try:
        return _check(obj, key, now, currency)
    except InvalidEvent as exc:
        return Rejection(exc.reason, str(exc))


# -- the rules (one code path for decode, validate and encode) -----------------------------------


def _check(
    obj: Mapping[str, Any], key: object, now: float | None, currency: str | None
) -> CheckoutEvent:
    """Apply contract v1 to a JSON object; return the event or raise :class:`InvalidEvent`.

    Checks run in a fixed order (version first: an unknown version may mean other fields),
    so an event with several faults always gets the same reason. ``null`` means absent.
    """
    get = obj.get
    version = get("schema_version")
    if version is not None:
        if isinstance(version, bool) or not isinstance(version, int):
            _reject(
                "bad_type:schema_version",
                f"schema_version must be an integer, got {_show(version)}",
            )
        if version != SCHEMA_VERSION:
            _reject(
                "unsupported_schema_version", f"schema_version {version} is not {SCHEMA_VERSION}"
            )

    event_id = _text(get("event_id"), "event_id", MAX_EVENT_ID_CHARS, required=True)
    if event_id == "":
        _reject("bad_value:event_id", "event_id must not be empty")

    customer_id = get("customer_id")
    if customer_id is None:
        _reject("missing_field:customer_id", "customer_id is required")
    if not isinstance(customer_id, str):
        _reject("bad_type:customer_id", f"customer_id must be a string, got {_show(customer_id)}")
    if not is_valid_customer_id(customer_id):
        _reject(
            "invalid_customer_id",
            f"customer_id must be 1-64 characters of [A-Za-z0-9._:-], got {_show(customer_id)}",
        )
    if key is not _NO_KEY:
        if key is None:
            _reject("missing_key", "message has no key; the key must be the customer_id")
        if key != customer_id.encode():
            _reject("key_mismatch", f"key {_show(key)} is not customer_id {customer_id!r}")

    kind: Any = get("type")
    if kind is None:
        kind = "purchase"
    elif not isinstance(kind, str):
        _reject("bad_type:type", f"type must be a string, got {_show(kind)}")
    elif kind not in _TYPES:
        _reject("bad_value:type", f"type must be 'purchase' or 'refund', got {_show(kind)}")

    ts = _timestamp(get("ts"))
    if now is None:
        now = time.time()
    if ts > now + MAX_FUTURE_SECONDS:
        _reject("future_ts", f"ts {ts} is more than {MAX_FUTURE_SECONDS:.0f} s after now ({now})")

    amount = _money(get("amount"), "amount")
    if amount is None:
        _reject("missing_field:amount", "amount is required")
    discount = _money(get("discount"), "discount")

    items = get("items")
    if items is None:
        items = 1
    else:
        if type(items) is not int:
            if isinstance(items, bool) or not isinstance(items, int):
                _reject("bad_type:items", f"items must be an integer, got {_show(items)}")
            items = int(items)
        if not 1 <= items <= MAX_ITEMS:
            _reject("bad_value:items", f"items must be 1..{MAX_ITEMS}, got {_show(items)}")

    category = _text(get("category"), "category", MAX_TEXT_CHARS)
    channel = _text(get("channel"), "channel", MAX_TEXT_CHARS)

    cur = get("currency")
    if cur is not None:
        if not isinstance(cur, str):
            _reject("bad_type:currency", f"currency must be a string, got {_show(cur)}")
        if not _is_currency(cur):
            _reject("bad_value:currency", f"currency must be 3 letters A-Z, got {_show(cur)}")
        if currency and cur != currency:
            _reject("currency_mismatch", f"currency {cur} is not this deployment's {currency}")

    age = _number(get("age"), "age")
    if age is not None and not 0.0 <= age <= MAX_AGE:
        _reject("bad_value:age", f"age must be 0..{MAX_AGE:.0f}, got {age!r}")
    gender = _text(get("gender"), "gender", MAX_GENDER_CHARS)
    annual_income = _money(get("annual_income"), "annual_income")

    return CheckoutEvent(
        event_id=event_id,  # type: ignore[arg-type]
        customer_id=customer_id,
        ts=ts,
        amount=amount,
        type=kind,
        discount=0.0 if discount is None else discount,
        items=items,
        category=category,
        channel=channel,
        currency=cur,
        schema_version=SCHEMA_VERSION,
        age=age,
        gender=gender,
        annual_income=annual_income,
    )


def _is_currency(code: str) -> bool:
    """True for three letters A-Z (the shape of an ISO 4217 code).

    >>> _is_currency("EUR"), _is_currency("eur"), _is_currency("EURO"), _is_currency("ÉUR")
    (True, False, False, False)
    """
    return len(code) == 3 and code.isascii() and code.isalpha() and code.isupper()


def _reject(reason: str, detail: str) -> NoReturn:
    raise InvalidEvent(reason, detail)


def _show(value: object) -> str:
    """A short repr for details (payloads can be 64 KiB)."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _text(value: object, name: str, max_chars: int, *, required: bool = False) -> str | None:
    if value is None:
        if required:
            _reject(f"missing_field:{name}", f"{name} is required")
        return None
    if not isinstance(value, str):
        _reject(f"bad_type:{name}", f"{name} must be a string, got {_show(value)}")
    if len(value) > max_chars:
        _reject(f"too_long:{name}", f"{name} has {len(value)} characters, limit {max_chars}")
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            _reject(f"bad_value:{name}", f"{name} is not encodable as UTF-8: {_show(value)}")
    return str(value)


def _number(value: object, name: str) -> float | None:
    """A finite float from an int or float (never bool); ``None`` stays ``None``."""
    if value is None:
        return None
    kind = type(value)
    if (kind is not float and kind is not int) and (
        isinstance(value, bool) or not isinstance(value, int | float)
    ):
        _reject(f"bad_type:{name}", f"{name} must be a number, got {_show(value)}")
    try:
        number = float(value)  # type: ignore[arg-type]
    except OverflowError:  # an integer beyond the range of a double
        number = math.inf
    if not math.isfinite(number):
        _reject(f"non_finite:{name}", f"{name} must be finite, got {_show(value)}")
    return number


def _money(value: object, name: str) -> float | None:
    number = _number(value, name)
    if number is not None and number < 0.0:
        _reject(f"negative:{name}", f"{name} must be >= 0, got {_show(value)}")
    return number


def _timestamp(value: object) -> float:
    """Epoch seconds from an RFC 3339 string with offset, or from a number of seconds."""
    if value is None:
        _reject("missing_field:ts", "ts is required")
    if isinstance(value, str):
        ts = _parse_rfc3339(value)
    elif isinstance(value, bool) or not isinstance(value, int | float):
        _reject("bad_type:ts", f"ts must be an RFC 3339 string or a number, got {_show(value)}")
    else:
        try:
            ts = float(value)
        except OverflowError:
            ts = math.inf
        if not math.isfinite(ts):
            _reject("bad_ts", f"ts must be finite, got {_show(value)}")
    if ts < 0.0:
        _reject("bad_ts", f"ts must not be before 1970-01-01T00:00:00Z, got {_show(value)}")
    return ts


def _parse_rfc3339(text: str) -> float:
    """Epoch seconds of an RFC 3339 date-time with offset (fraction kept to the microsecond).

    >>> _parse_rfc3339("1970-01-02T01:00:00.25+01:00")
    86400.25
    >>> _parse_rfc3339("1970-01-01t00:00:01.123456789z")
    1.123456
    """
    if _RFC3339.fullmatch(text) is None:
        _reject(
            "bad_ts",
            "ts must be RFC 3339 with an offset (Z or +hh:mm) and at most 9 fraction digits, "
            f"got {_show(text)}",
        )
    if text[10] != "T" or text[-1] == "z":
        text = text.upper()
    try:  # the shape is RFC 3339; fromisoformat checks the ranges (no Feb 30, no leap second)
        return datetime.fromisoformat(text).timestamp()
    except (ValueError, OverflowError) as exc:
        _reject("bad_ts", f"ts {_show(text)} is not a valid date-time: {exc}")


def _decode_overflowing(payload: bytes) -> Any:
    """Second parse for JSON whose numbers overflow a double (msgspec refuses those).

    The standard library reads them as ``inf``, so the field check can then name the
    field (``non_finite:amount``). Non-JSON literals ``NaN``/``Infinity`` stay invalid.
    """

    def refuse(literal: str) -> NoReturn:
        raise ValueError(f"{literal} is not JSON")

    try:
        text = payload if isinstance(payload, str) else bytes(payload).decode("utf-8")
        obj = json.loads(text, parse_constant=refuse)
        _encoder.encode(obj)  # lone surrogate escapes, which msgspec would have refused
    except (ValueError, TypeError, RecursionError) as exc:
        return Rejection("invalid_json", f"not valid UTF-8 JSON: {exc}")
    return obj
