"""The Redis key schema (v1): every key and hash field name, and how values are written.

This module is the one place that builds Redis keys; ``docs/redis-schema.md`` states the
same schema as the contract for downstream readers, and a test keeps the two in step.
Keys are readable in ``redis-cli``: ``<prefix>:v1:<kind>[:<name>]``.

>>> k = Keys("seg")
>>> k.customer("CS1112")
'seg:v1:customer:CS1112'
>>> k.model("2026-11-27.1"), k.model_current, k.segments, k.last_event_index
('seg:v1:model:2026-11-27.1', 'seg:v1:model:current', 'seg:v1:segments', 'seg:v1:index:last_event')
>>> k.customer("a b")
Traceback (most recent call last):
...
state.errors.InvalidCustomerId: customer id must be 1-64 characters of [A-Za-z0-9._:-], got 'a b'

Values are text: money in decimal units from integer cents, counts as integers,
timestamps as epoch seconds, floats as their shortest exact representation.

>>> fields = encode_state(CustomerState(orders=2, gross_cents=101250, last_ts=1700000000.0))
>>> fields["orders"], fields["gross"], fields["last_ts"]
('2', '1012.50', '1700000000')
>>> decode_state(fields) == CustomerState(orders=2, gross_cents=101250, last_ts=1700000000.0)
True
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from state.errors import ConfigError, InvalidCustomerId
from state.features import CustomerState
from state.ids import validate_customer_id

SCHEMA_VERSION = 1
DEFAULT_PREFIX = "seg"

_PREFIX = re.compile(r"[A-Za-z0-9._-]{1,64}(:[A-Za-z0-9._-]{1,64}){0,3}")
_MODEL_VERSION = re.compile(r"[A-Za-z0-9._-]{1,64}")
RESERVED_MODEL_NAMES = frozenset({"current"})

# -- customer hash fields ---------------------------------------------------------------------

SEGMENT_ID = "segment_id"
SEGMENT_NAME = "segment_name"
MODEL_VERSION = "model_version"
UPDATED_AT = "updated_at"
AS_OF = "_as_of"  # offline snapshot time: events at or before it are already counted
PARTITION_PREFIX = "_p"  # _p<partition> = last applied source offset of that partition
VERSION = "_v"  # write version: +1 on every applied guarded write (compare-and-set for diffs)

SEGMENT_FIELDS = (SEGMENT_ID, SEGMENT_NAME, MODEL_VERSION, UPDATED_AT)


def money(cents: int) -> str:
    """Integer cents as a decimal string with two places (exact).

    >>> money(101250), money(5), money(-150), money(0)
    ('1012.50', '0.05', '-1.50', '0.00')
    """
    c = int(cents)
    # %-format: half the time of the f-string with divmod (the write path formats 3 per customer)
    return "%d.%02d" % divmod(c, 100) if c >= 0 else "-%d.%02d" % divmod(-c, 100)  # noqa: UP031


def parse_money(text: str) -> int:
    """A decimal string (as written by :func:`money`) back to integer cents, exactly.

    >>> parse_money("1012.50"), parse_money("-1.5"), parse_money("7")
    (101250, -150, 700)
    """
    sign = -1 if text.startswith("-") else 1
    whole, _, frac = text.lstrip("+-").partition(".")
    if len(frac) > 2 or not (whole or frac):
        raise ValueError(f"not a money amount with at most 2 decimals: {text!r}")
    return sign * (int(whole or "0") * 100 + int((frac + "00")[:2]))


def number(value: float) -> str:
    """A float as the shortest text that reads back to the same float.

    >>> number(1700000000.0), number(0.1), number(35.0), number(1e300), number(-0.0)
    ('1700000000', '0.1', '35', '1e+300', '-0')
    """
    v = float(value)
    if v.is_integer() and 0 < abs(v) < 1e16:  # repr would be "<digits>.0"; -0.0 and 1e16+ differ
        return str(int(v))
    text = repr(v)
    return text[:-2] if text.endswith(".0") else text


# (hash field, CustomerState attribute, writer, reader), in the order they are written.
_Codec = tuple[str, str, Callable[[Any], str], Callable[[str], Any]]
STATE_CODECS: tuple[_Codec, ...] = (
    ("orders", "orders", str, int),
    ("refunds", "refunds", str, int),
    ("gross", "gross_cents", money, parse_money),
    ("refunded", "refunded_cents", money, parse_money),
    ("discount", "discount_cents", money, parse_money),
    ("items", "items", str, int),
    ("first_ts", "first_ts", number, float),
    ("last_ts", "last_ts", number, float),
    ("spend_decayed", "spend_decayed", repr, float),
    ("orders_decayed", "orders_decayed", repr, float),
    ("decay_ts", "decay_ts", number, float),
    ("age", "age", number, float),
    ("gender", "gender", str, str),
    ("annual_income", "annual_income", number, float),
    ("profile_ts", "profile_ts", number, float),
)
STATE_FIELDS = tuple(c[0] for c in STATE_CODECS)
PUBLIC_FIELDS = SEGMENT_FIELDS + STATE_FIELDS
"""Every public field of a customer hash (internal ones start with ``_``)."""
INTERNAL_FIELDS = (AS_OF, f"{PARTITION_PREFIX}<partition>", VERSION)


def partition_field(partition: int) -> str:
    """Hash field holding the last applied offset of a source partition.

    >>> partition_field(3)
    '_p3'
    """
    return f"{PARTITION_PREFIX}{int(partition)}"


def encode_state(state: CustomerState) -> dict[str, str]:
    """The hash fields of a state; fields whose value is unknown (``None``) are left out."""
    out: dict[str, str] = {}
    for name, attr, write, _read in STATE_CODECS:
        value = getattr(state, attr)
        if value is not None:
            out[name] = write(value)
    return out


def state_values(state: CustomerState, num: Callable[[float], str] = number) -> list[str | bool]:
    """The write path's form: values in :data:`STATE_FIELDS` order, ``False`` if unknown.

    Hand-unrolled :func:`encode_state` (a test pins them equal): this runs per customer
    per write, and the generic loop costs twice as much. ``num`` formats the four times
    (the store passes a memoised :func:`number`: they often repeat within a write).

    >>> state_values(CustomerState(orders=1, gross_cents=250))[:4]
    ['1', '0', '2.50', '0.00']
    """
    s = state
    return [
        str(s.orders),
        str(s.refunds),
        money(s.gross_cents),
        money(s.refunded_cents),
        money(s.discount_cents),
        str(s.items),
        False if s.first_ts is None else num(s.first_ts),
        False if s.last_ts is None else num(s.last_ts),
        repr(s.spend_decayed),
        repr(s.orders_decayed),
        False if s.decay_ts is None else num(s.decay_ts),
        False if s.age is None else number(s.age),
        False if s.gender is None else s.gender,
        False if s.annual_income is None else number(s.annual_income),
        False if s.profile_ts is None else num(s.profile_ts),
    ]


_PAIR_TEMPLATE = [x for name in STATE_FIELDS for x in (name, "")]


def state_pairs(
    state: CustomerState, num: Callable[[float], str] = number
) -> tuple[list[str], list[str]]:
    """``([field, value, ...], [fields whose value is unknown])``: the guarded write's form.

    >>> state_pairs(CustomerState(orders=2, gross_cents=250))[0][:6]
    ['orders', '2', 'refunds', '0', 'gross', '2.50']
    >>> state_pairs(CustomerState())[1][:3]
    ['first_ts', 'last_ts', 'decay_ts']
    """
    values = state_values(state, num)
    pairs: list[str] = []
    absent: list[str] = []
    if False not in values:
        pairs = _PAIR_TEMPLATE.copy()
        pairs[1::2] = values  # type: ignore[assignment]  # all str here
        return pairs, absent
    for name, value in zip(STATE_FIELDS, values, strict=True):
        if value is False:
            absent.append(name)
        else:
            pairs += (name, value)  # type: ignore[arg-type]  # str here
    return pairs, absent


def memo_number() -> Callable[[float], str]:
    """:func:`number` with a memory, for values that repeat (times within a batch).

    A hit is one C-level dict lookup (no Python call): the store calls this about five
    times per customer write.

    >>> num = memo_number()
    >>> num(1750000000.5), num(1750000000.5), num(-0.0), num(0.0)
    ('1750000000.5', '1750000000.5', '-0', '0')
    """
    return _NumberMemo().__getitem__


class _NumberMemo(dict[float, str]):
    """``memo[value]`` is ``number(value)``, computed on the first lookup."""

    def __missing__(self, value: float) -> str:
        text = number(value)
        if value:  # 0.0 and -0.0 are one dict key but two texts: never stored
            self[value] = text
        return text


def state_diff(
    old: CustomerState, new: CustomerState, num: Callable[[float], str] = number
) -> tuple[list[str], list[str]]:
    """``([field, value, ...], [fields to delete])`` turning ``old``'s hash fields into ``new``'s.

    Only fields whose value changed are written; fields known in ``old`` and unknown in
    ``new`` are deleted. Applied to ``encode_state(old)`` it gives ``encode_state(new)``
    (a property test pins it). Hand-unrolled like :func:`state_values`; ``num`` formats the
    :func:`number` fields (the store passes a memoised one: times repeat within a write).

    >>> old = CustomerState(orders=2, gross_cents=250, age=40.0)
    >>> state_diff(old, CustomerState(orders=3, gross_cents=250))
    (['orders', '3'], ['age'])
    """
    o, n = old, new
    pairs: list[str] = []
    absent: list[str] = []
    if n.orders != o.orders:
        pairs += ("orders", str(n.orders))
    if n.refunds != o.refunds:
        pairs += ("refunds", str(n.refunds))
    if n.gross_cents != o.gross_cents:
        pairs += ("gross", money(n.gross_cents))
    if n.refunded_cents != o.refunded_cents:
        pairs += ("refunded", money(n.refunded_cents))
    if n.discount_cents != o.discount_cents:
        pairs += ("discount", money(n.discount_cents))
    if n.items != o.items:
        pairs += ("items", str(n.items))
    # Floats: "moved" is `v != w`, or -0.0 against 0.0 (equal, but written differently).
    v, w = n.first_ts, o.first_ts
    if v != w or (not v and repr(v) != repr(w)):
        if v is None:
            absent.append("first_ts")
        else:
            pairs += ("first_ts", num(v))
    v, w = n.last_ts, o.last_ts
    if v != w or (not v and repr(v) != repr(w)):
        if v is None:
            absent.append("last_ts")
        else:
            pairs += ("last_ts", num(v))
    v, w = n.spend_decayed, o.spend_decayed
    if v != w or (not v and repr(v) != repr(w)):
        pairs += ("spend_decayed", repr(v))
    v, w = n.orders_decayed, o.orders_decayed
    if v != w or (not v and repr(v) != repr(w)):
        pairs += ("orders_decayed", repr(v))
    v, w = n.decay_ts, o.decay_ts
    if v != w or (not v and repr(v) != repr(w)):
        if v is None:
            absent.append("decay_ts")
        else:
            pairs += ("decay_ts", num(v))
    v, w = n.age, o.age
    if v is not w and (v != w or (not v and repr(v) != repr(w))):
        if v is None:
            absent.append("age")
        else:
            pairs += ("age", number(v))
    if n.gender != o.gender:
        if n.gender is None:
            absent.append("gender")
        else:
            pairs += ("gender", str(n.gender))
    v, w = n.annual_income, o.annual_income
    if v is not w and (v != w or (not v and repr(v) != repr(w))):
        if v is None:
            absent.append("annual_income")
        else:
            pairs += ("annual_income", number(v))
    v, w = n.profile_ts, o.profile_ts
    if v != w or (not v and repr(v) != repr(w)):
        if v is None:
            absent.append("profile_ts")
        else:
            pairs += ("profile_ts", num(v))
    return pairs, absent


def _opt_float(raw: str | None) -> float | None:
    return None if raw is None else float(raw)


def decode_state(fields: Mapping[str, str]) -> CustomerState:
    """A :class:`CustomerState` from hash fields (missing fields take their defaults).

    Hand-unrolled :data:`STATE_CODECS` (the read path of every lookup; a test pins them).
    """
    g = fields.get
    money_fields = [g(name) for name in ("gross", "refunded", "discount")]
    gross, refunded, discount = (0 if m is None else parse_money(m) for m in money_fields)
    return CustomerState(
        orders=int(g("orders") or 0),
        refunds=int(g("refunds") or 0),
        gross_cents=gross,
        refunded_cents=refunded,
        discount_cents=discount,
        items=int(g("items") or 0),
        first_ts=_opt_float(g("first_ts")),
        last_ts=_opt_float(g("last_ts")),
        spend_decayed=float(g("spend_decayed") or 0.0),
        orders_decayed=float(g("orders_decayed") or 0.0),
        decay_ts=_opt_float(g("decay_ts")),
        age=_opt_float(g("age")),
        gender=g("gender"),
        annual_income=_opt_float(g("annual_income")),
        profile_ts=_opt_float(g("profile_ts")),
    )


def decode_offsets(fields: Mapping[str, str]) -> dict[int, int]:
    """``{partition: offset}`` from the ``_p<partition>`` fields of a customer hash.

    >>> decode_offsets({"_p0": "41", "_p12": "7", "orders": "3", "_as_of": "1"})
    {0: 41, 12: 7}
    """
    out: dict[int, int] = {}
    for name, value in fields.items():
        if name.startswith(PARTITION_PREFIX) and name[len(PARTITION_PREFIX) :].isdigit():
            out[int(name[len(PARTITION_PREFIX) :])] = int(value)
    return out


# -- segment metadata hash --------------------------------------------------------------------

SEGMENTS_MODEL_FIELD = "model_version"  # model whose segments the meta:* fields describe
SEGMENT_META_PREFIX = "meta:"  # meta:<segment_id> = JSON {id, name, description, action}
SEGMENT_SIZE_PREFIX = "size:"  # size:<segment_id> = live number of customers (HINCRBY)
SEGMENTS_FIELDS = (SEGMENTS_MODEL_FIELD, f"{SEGMENT_META_PREFIX}<id>", f"{SEGMENT_SIZE_PREFIX}<id>")


def segment_meta_field(segment_id: int) -> str:
    """Field of a segment's metadata JSON.

    >>> segment_meta_field(2)
    'meta:2'
    """
    return f"{SEGMENT_META_PREFIX}{int(segment_id)}"


def segment_size_field(segment_id: int) -> str:
    """Field of a segment's live size.

    >>> segment_size_field(2)
    'size:2'
    """
    return f"{SEGMENT_SIZE_PREFIX}{int(segment_id)}"


# -- keys -------------------------------------------------------------------------------------


def validate_prefix(prefix: str) -> str:
    """A key prefix: 1-4 ``:``-separated parts of ``[A-Za-z0-9._-]``.

    >>> validate_prefix("seg"), validate_prefix("tenant-a:seg")
    ('seg', 'tenant-a:seg')
    >>> validate_prefix("seg:")
    Traceback (most recent call last):
    ...
    state.errors.ConfigError: Redis key prefix must be 1-4 ':'-separated parts of [A-Za-z0-9._-], got 'seg:'
    """
    if not isinstance(prefix, str) or _PREFIX.fullmatch(prefix) is None:
        raise ConfigError(
            f"Redis key prefix must be 1-4 ':'-separated parts of [A-Za-z0-9._-], got {prefix!r}"
        )
    return prefix


def validate_model_version(version: object) -> str:
    """A model version usable in a key: 1-64 of ``[A-Za-z0-9._-]``, not ``current``.

    >>> validate_model_version("current")
    Traceback (most recent call last):
    ...
    state.errors.ConfigError: model version must be 1-64 characters of [A-Za-z0-9._-] and not 'current', got 'current'
    """
    if (
        not isinstance(version, str)
        or _MODEL_VERSION.fullmatch(version) is None
        or version in RESERVED_MODEL_NAMES
    ):
        raise ConfigError(
            "model version must be 1-64 characters of [A-Za-z0-9._-] and not 'current', "
            f"got {version!r}"
        )
    return version


@dataclass(frozen=True, slots=True)
class Keys:
    """Key builder for one prefix; the only code that spells a Redis key."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        validate_prefix(self.prefix)

    @property
    def base(self) -> str:
        return f"{self.prefix}:v{SCHEMA_VERSION}"

    def customer(self, customer_id: str) -> str:
        """Hash of one customer (segment, state, profile, bookkeeping)."""
        return f"{self.base}:customer:{validate_customer_id(customer_id)}"

    def customer_id_of(self, key: str | bytes) -> str:
        """The customer id in a customer key (inverse of :meth:`customer`).

        >>> Keys("seg").customer_id_of(b"seg:v1:customer:CS1")
        'CS1'
        """
        text = key.decode() if isinstance(key, bytes) else key
        head = f"{self.base}:customer:"
        if not text.startswith(head):
            raise InvalidCustomerId(f"not a customer key of prefix {self.prefix!r}: {text!r}")
        return validate_customer_id(text[len(head) :])

    @property
    def customer_pattern(self) -> str:
        """``SCAN MATCH`` pattern of every customer key."""
        return f"{self.base}:customer:*"

    def model(self, version: str) -> str:
        """Immutable JSON of one published model version."""
        return f"{self.base}:model:{validate_model_version(version)}"

    @property
    def model_current(self) -> str:
        """String: the version of the current model."""
        return f"{self.base}:model:current"

    @property
    def models(self) -> str:
        """Set of every published model version."""
        return f"{self.base}:models"

    @property
    def segments(self) -> str:
        """Hash: current segment metadata (``meta:<id>``) and live sizes (``size:<id>``)."""
        return f"{self.base}:segments"

    @property
    def last_event_index(self) -> str:
        """Sorted set: customer id scored by the time of its latest event."""
        return f"{self.base}:index:last_event"

    def online_state(self, version: str) -> str:
        """JSON: the consumers' shared online-model statistics for one model version."""
        return f"{self.base}:online:{validate_model_version(version)}"

    @property
    def swept(self) -> str:
        """Hash: customer id -> where its online point sits after a recency sweep (consumer)."""
        return f"{self.base}:swept"

    def patterns(self) -> dict[str, str]:
        """Every key pattern of the schema, by name (the doc lists exactly these).

        >>> sorted(Keys("seg").patterns().values())[:2]
        ['seg:v1:customer:<customer_id>', 'seg:v1:index:last_event']
        """
        return {
            "customer": f"{self.base}:customer:<customer_id>",
            "model": f"{self.base}:model:<version>",
            "model_current": self.model_current,
            "models": self.models,
            "segments": self.segments,
            "last_event_index": self.last_event_index,
            "online_state": f"{self.base}:online:<version>",
            "swept": self.swept,
        }
