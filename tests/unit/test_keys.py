"""The key schema: value formats round-trip exactly, and docs/redis-schema.md says what keys.py does."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from state import keys as K
from state.errors import ConfigError, InvalidCustomerId
from state.features import CustomerState
from state.redis_store import GUARDED_WRITE

DOC = Path(__file__).resolve().parents[2] / "docs" / "redis-schema.md"

finite = st.floats(allow_nan=False, allow_infinity=False)
maybe_ts = st.none() | st.floats(min_value=0, max_value=4e9, allow_nan=False)
states = st.builds(
    CustomerState,
    orders=st.integers(0, 10**6),
    refunds=st.integers(0, 10**6),
    gross_cents=st.integers(0, 10**13),
    refunded_cents=st.integers(0, 10**13),
    discount_cents=st.integers(0, 10**13),
    items=st.integers(0, 10**9),
    first_ts=maybe_ts,
    last_ts=maybe_ts,
    spend_decayed=finite,
    orders_decayed=finite,
    decay_ts=maybe_ts,
    age=st.none() | finite,
    gender=st.none() | st.text(min_size=1, max_size=10),
    annual_income=st.none() | finite,
    profile_ts=maybe_ts,
)


@given(states)
def test_state_round_trips_exactly_through_hash_fields(state: CustomerState) -> None:
    assert K.decode_state(K.encode_state(state)) == state


@given(states)
def test_write_path_values_are_the_documented_encoding(state: CustomerState) -> None:
    fields = K.encode_state(state)
    values = K.state_values(state)
    assert len(values) == len(K.STATE_FIELDS)
    assert {f: v for f, v in zip(K.STATE_FIELDS, values, strict=True) if v is not False} == fields


@given(st.integers(-(10**15), 10**15))
def test_money_is_exact_for_any_cents(cents: int) -> None:
    text = K.money(cents)
    assert re.fullmatch(r"-?\d+\.\d\d", text)
    assert K.parse_money(text) == cents


@given(finite)
def test_numbers_read_back_to_the_same_float(value: float) -> None:
    assert float(K.number(value)) == value


@given(finite)
def test_number_is_the_shortest_repr_without_a_trailing_dot_zero(value: float) -> None:
    text = repr(value)
    assert K.number(value) == (text[:-2] if text.endswith(".0") else text)
    assert K.memo_number()(value) == K.number(value)


@given(st.integers(-(10**15), 10**15))
def test_money_has_two_places_and_a_sign(cents: int) -> None:
    whole, frac = divmod(abs(cents), 100)
    assert K.money(cents) == f"{'-' if cents < 0 else ''}{whole}.{frac:02d}"


def test_unknown_values_are_absent_not_empty() -> None:
    fields = K.encode_state(CustomerState())
    assert "first_ts" not in fields and "gender" not in fields
    assert "" not in fields.values()


def test_customer_key_is_readable_and_validates_the_id() -> None:
    keys = K.Keys("seg")
    assert keys.customer("C000061") == "seg:v1:customer:C000061"
    assert keys.customer_id_of(keys.customer("a:b.c-1")) == "a:b.c-1"
    with pytest.raises(InvalidCustomerId):
        keys.customer("x y")
    with pytest.raises(InvalidCustomerId):
        keys.customer("")


@pytest.mark.parametrize("prefix", ["", "a b", "seg:", ":seg", "a:b:c:d:e", "x" * 65])
def test_bad_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(ConfigError):
        K.Keys(prefix)


@pytest.mark.parametrize("version", ["current", "", "a b", "v1:x"])
def test_bad_model_versions_are_refused(version: str) -> None:
    with pytest.raises(ConfigError):
        K.Keys().model(version)


def test_every_key_carries_prefix_and_schema_version() -> None:
    for pattern in K.Keys("tenant-a:seg").patterns().values():
        assert pattern.startswith("tenant-a:seg:v1:")


def test_the_lua_guard_names_only_fields_of_keys_py() -> None:
    names = set(re.findall(r'"([a-z_]+)"', GUARDED_WRITE)) - {"a", "s"}
    assert names == {K.SEGMENT_ID, K.AS_OF, "decay_ts"}
    assert "decay_ts" in K.STATE_FIELDS


@given(states, states)
def test_a_diff_turns_the_old_hash_fields_into_the_new_ones(
    old: CustomerState, new: CustomerState
) -> None:
    pairs, absent = K.state_diff(old, new)
    fields = K.encode_state(old)
    for name in absent:
        del fields[name]
    fields.update(zip(pairs[::2], pairs[1::2], strict=True))
    assert fields == K.encode_state(new)
    assert K.state_diff(new, new) == ([], [])


@given(states)
def test_write_path_pairs_are_the_documented_encoding(state: CustomerState) -> None:
    pairs, absent = K.state_pairs(state)
    assert dict(zip(pairs[::2], pairs[1::2], strict=True)) == K.encode_state(state)
    assert absent == [f for f in K.STATE_FIELDS if f not in K.encode_state(state)]


# -- the document and the module agree -------------------------------------------------------


def _table_column(section: str) -> set[str]:
    """First-column backticked cells of the table under ``## <section>`` in the doc."""
    text = DOC.read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([^`]+)` \|", body, flags=re.MULTILINE))


def test_doc_lists_exactly_the_keys_of_keys_py() -> None:
    assert _table_column("Keys") == set(K.Keys("seg").patterns().values())


def test_doc_lists_exactly_the_customer_fields_of_keys_py() -> None:
    assert _table_column("Customer hash fields") == set(K.PUBLIC_FIELDS) | set(K.INTERNAL_FIELDS)


def test_doc_lists_exactly_the_segments_fields_of_keys_py() -> None:
    assert _table_column("Segments hash fields") == set(K.SEGMENTS_FIELDS)


def test_every_key_the_doc_mentions_is_one_keys_py_builds() -> None:
    patterns = set(K.Keys("seg").patterns().values())
    regexes = [
        re.compile(
            "".join(
                r"[A-Za-z0-9._:*-]+" if part.startswith("<") else re.escape(part)
                for part in re.split(r"(<[a-z_]+>)", p)
            )
        )
        for p in patterns
    ]
    mentioned = set(re.findall(r"seg:v1:[A-Za-z0-9._:<>*-]+", DOC.read_text()))
    assert len(mentioned) > len(patterns)
    for key in mentioned:
        assert key in patterns or any(r.fullmatch(key) for r in regexes), key


@given(states)
def test_the_unrolled_reader_matches_the_codec_table(state: CustomerState) -> None:
    fields = K.encode_state(state)
    generic = {
        attr: read(fields[name]) for name, attr, _w, read in K.STATE_CODECS if name in fields
    }
    assert K.decode_state(fields) == CustomerState(**generic) == state


@given(st.dictionaries(st.text(min_size=1), st.text()))
def test_hash_replies_decode_whatever_the_values_hold(fields: dict[str, str]) -> None:
    from state.redis_store import _hash_reply

    flat = [x.encode() for kv in fields.items() for x in kv]
    assert _hash_reply(flat) == fields
    assert _hash_reply({k.encode(): v.encode() for k, v in fields.items()}) == fields
