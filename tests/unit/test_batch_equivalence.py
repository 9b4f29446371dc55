"""One definition: the vectorised batch state equals the event-by-event fold.

For random event sequences (several customers, out-of-order and same-timestamp events,
refunds, zero amounts, fractional cents, profiles with ties) ``batch_states`` must equal
folding ``apply_event`` over the same events in arrival order:

* counts, cent sums, ``first_ts``/``last_ts``/``decay_ts`` and the profile: exactly;
* ``spend_decayed``/``orders_decayed``: to a relative 1e-9 of the *decayed absolute flow*
  ``M = sum(|v| * 2^(-(decay_ts - t)/H))``. ``M`` equals the value itself unless refunds
  cancel purchases; then the value can be ~0 while each side carries rounding of order
  1e-16 * M, and a pure relative test would demand the impossible (docs/features.md).

Also: the fold gives the same state for any permutation of the events, and ``derive``
equals ``derive_frame`` row by row.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producer.contract import CheckoutEvent
from state.batch import (
    batch_states,
    derive_frame,
    iter_states,
    state_from_row,
    state_to_row,
    states_to_frame,
)
from state.features import (
    FEATURE_NAMES,
    STATE_FIELDS,
    CustomerState,
    apply_event,
    cents,
    derive,
    fold_events,
)

DAY = 86_400.0
T0 = 1_700_000_000.0
REL = 1e-9
EXACT_FIELDS = tuple(f for f in STATE_FIELDS if f not in ("spend_decayed", "orders_decayed"))

# Few distinct timestamps on purpose: same-timestamp events and ties happen often.
timestamps = st.one_of(
    st.sampled_from([T0, T0 + 1.0, T0 + DAY, T0 + 30 * DAY, T0 - 7 * DAY]),
    st.floats(T0 - 400 * DAY, T0 + 400 * DAY, allow_nan=False),
)
money_values = st.one_of(
    st.just(0.0),
    st.integers(0, 10_000_000).map(lambda c: c / 100),  # whole cents
    st.floats(0.0, 100_000.0, allow_nan=False, allow_infinity=False),  # fractional cents
    st.sampled_from([0.005, 1.005, 2.675, 0.125]),  # decimal ties
)
events_st: st.SearchStrategy[list[dict]] = st.lists(
    st.builds(
        dict,
        customer_id=st.sampled_from(["c1", "c2", "c3", "c-4"]),
        type=st.sampled_from(["purchase", "purchase", "refund"]),
        ts=timestamps,
        amount=money_values,
        discount=st.one_of(st.just(0.0), money_values),
        items=st.integers(1, 20),
        age=st.one_of(st.none(), st.sampled_from([18.0, 35.0, 35.5, 70.0])),
        gender=st.one_of(st.none(), st.sampled_from(["Female", "Male", "female", "X"])),
        annual_income=st.one_of(st.none(), st.sampled_from([0.0, 15_000.0, 120_000.5])),
    ),
    min_size=0,
    max_size=40,
)
half_lives = st.one_of(st.sampled_from([30.0, 1.0, 365.0]), st.floats(0.25, 1000.0))


def to_events(rows: list[dict]) -> list[CheckoutEvent]:
    return [CheckoutEvent(event_id=str(i), **r) for i, r in enumerate(rows)]


def to_frame(rows: list[dict]) -> pd.DataFrame:
    columns = [
        "customer_id",
        "type",
        "ts",
        "amount",
        "discount",
        "items",
        "age",
        "gender",
        "annual_income",
    ]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.astype({"ts": float, "amount": float, "discount": float, "age": float})


def fold_by_customer(events: list[CheckoutEvent], half_life: float) -> dict[str, CustomerState]:
    states: dict[str, CustomerState] = defaultdict(CustomerState)
    for e in events:
        states[e.customer_id] = apply_event(states[e.customer_id], e, half_life_days=half_life)
    return dict(states)


def decayed_flow(events: list[CheckoutEvent], half_life: float) -> dict[str, tuple[float, float]]:
    """Per customer, sum(|v| * weight) for spend and orders: the scale of rounding errors."""
    latest: dict[str, float] = {}
    for e in events:
        latest[e.customer_id] = max(latest.get(e.customer_id, -math.inf), e.ts)
    flow: dict[str, tuple[float, float]] = defaultdict(lambda: (0.0, 0.0))
    for e in events:
        w = 2.0 ** (-(latest[e.customer_id] - e.ts) / (half_life * DAY))
        s, o = flow[e.customer_id]
        flow[e.customer_id] = (s + abs(cents(e.amount)) * w, o + (e.type == "purchase") * w)
    return dict(flow)


def close(a: float, b: float, scale: float) -> bool:
    """Equal to a relative 1e-9 of ``scale`` (and of the values), with a floor for underflow."""
    return abs(a - b) <= REL * max(abs(a), abs(b), scale) + 1e-300


def assert_same_state(
    expected: CustomerState, got: CustomerState, flow: tuple[float, float] | None = None
) -> None:
    for name in EXACT_FIELDS:
        assert getattr(got, name) == getattr(expected, name), name
    spend_scale, orders_scale = flow if flow is not None else (0.0, 0.0)
    assert close(expected.spend_decayed, got.spend_decayed, spend_scale), (
        expected.spend_decayed,
        got.spend_decayed,
    )
    assert close(expected.orders_decayed, got.orders_decayed, orders_scale), (
        expected.orders_decayed,
        got.orders_decayed,
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=events_st,
    half_life=half_lives,
    text_dtype=st.sampled_from(["object", "category", "string[pyarrow]"]),
)
def test_batch_states_equal_the_fold_in_arrival_order(
    rows: list[dict], half_life: float, text_dtype: str
) -> None:
    events = to_events(rows)
    folded = fold_by_customer(events, half_life)
    table = to_frame(rows)  # text columns as CSV (object), Parquet dictionary or Arrow give them
    table = table.astype({"customer_id": text_dtype, "type": text_dtype, "gender": text_dtype})
    frame = batch_states(table, half_life_days=half_life)

    assert list(frame.columns) == list(STATE_FIELDS)
    assert set(frame.index) == set(folded)
    flow = decayed_flow(events, half_life)
    for cid, expected in folded.items():
        assert_same_state(expected, state_from_row(frame.loc[cid]), flow[cid])


@settings(max_examples=150, deadline=None)
@given(rows=events_st, half_life=half_lives, seed=st.integers(0, 2**32 - 1))
def test_the_fold_does_not_depend_on_arrival_order(
    rows: list[dict], half_life: float, seed: int
) -> None:
    events = to_events(rows)
    shuffled = list(events)
    random.Random(seed).shuffle(shuffled)
    in_order = fold_by_customer(events, half_life)
    reordered = fold_by_customer(shuffled, half_life)
    flow = decayed_flow(events, half_life)
    assert in_order.keys() == reordered.keys()
    for cid in in_order:
        assert_same_state(in_order[cid], reordered[cid], flow[cid])


@settings(max_examples=150, deadline=None)
@given(
    rows=events_st,
    half_life=half_lives,
    offset_days=st.one_of(st.sampled_from([0.0, -1.0, 1.0]), st.floats(-500.0, 500.0)),
)
def test_derive_equals_derive_frame(rows: list[dict], half_life: float, offset_days: float) -> None:
    frame = batch_states(to_frame(rows), half_life_days=half_life)
    at = T0 + offset_days * DAY
    derived = derive_frame(frame, at, half_life_days=half_life)
    assert list(derived.columns) == [*FEATURE_NAMES, "gender"]
    numeric = derived[list(FEATURE_NAMES)].drop(columns=["age", "annual_income"])
    assert not numeric.isna().any().any()
    for cid, row in frame.iterrows():
        scalar = derive(state_from_row(row), at, half_life_days=half_life)
        for name in FEATURE_NAMES:
            got = derived.loc[cid, name]
            want = scalar[name]
            if want is None:
                assert np.isnan(got), name
            else:
                assert isinstance(want, float), name
                assert math.isclose(got, want, rel_tol=1e-12, abs_tol=1e-12), (name, got, want)
        assert derived.loc[cid, "gender"] == scalar["gender"]


@settings(max_examples=100, deadline=None)
@given(rows=events_st, half_life=half_lives)
def test_state_frame_round_trips(rows: list[dict], half_life: float) -> None:
    folded = fold_by_customer(to_events(rows), half_life)
    frame = states_to_frame(folded)
    assert list(frame.columns) == list(STATE_FIELDS)
    assert dict(iter_states(frame)) == folded
    for cid, state in folded.items():
        assert state_from_row(state_to_row(state)) == state
        assert state_from_row(frame.loc[cid]) == state
    if rows:
        batch = batch_states(to_frame(rows), half_life_days=half_life)
        assert (frame.dtypes.sort_index() == batch.dtypes.sort_index()).all()


def test_a_categorical_customer_column_gives_the_same_states() -> None:
    rows = [
        {"customer_id": c, "type": t, "ts": T0 + i * DAY, "amount": 10.0 + i}
        for i, (c, t) in enumerate([("a", "purchase"), ("b", "purchase"), ("a", "refund")])
    ]
    plain = batch_states(pd.DataFrame(rows))
    frame = pd.DataFrame(rows).astype({"customer_id": "category", "type": "category"})
    frame["customer_id"] = frame["customer_id"].cat.add_categories(["unused"])
    categorical = batch_states(frame)
    pd.testing.assert_frame_equal(plain.sort_index(), categorical.sort_index())


def test_state_fold_and_batch_agree_on_a_known_example() -> None:
    rows = [
        {"customer_id": "a", "type": "purchase", "ts": T0 + 30 * DAY, "amount": 20.0},
        {"customer_id": "a", "type": "purchase", "ts": T0, "amount": 40.0},  # late arrival
        {"customer_id": "a", "type": "refund", "ts": T0 + 30 * DAY, "amount": 10.0},
    ]
    expected = fold_events(to_events(rows))
    assert expected.spend_decayed == pytest.approx(4000.0 * 0.5 + 2000.0 - 1000.0, rel=1e-12)
    assert expected.orders_decayed == pytest.approx(1.5, rel=1e-12)
    got = state_from_row(batch_states(pd.DataFrame(rows)).loc["a"])
    assert_same_state(expected, got)


def test_batch_rejects_what_the_rules_cannot_define() -> None:
    good = {"customer_id": "a", "ts": T0, "amount": 1.0}
    with pytest.raises(ValueError, match="finite"):
        batch_states(pd.DataFrame([{**good, "amount": float("nan")}]))
    with pytest.raises(ValueError, match="customer_id"):
        batch_states(pd.DataFrame([{**good, "customer_id": None}]))
    with pytest.raises(ValueError, match="half_life"):
        batch_states(pd.DataFrame([good]), half_life_days=0.0)


def test_missing_optional_values_take_the_contract_defaults() -> None:
    table = pd.DataFrame(
        {
            "customer_id": ["a", "a"],
            "type": [None, "refund"],
            "ts": [T0, T0 + DAY],
            "amount": [10.0, 2.0],
            "discount": [np.nan, 1.0],
            "items": [np.nan, 3],
        }
    )
    expected = fold_events(
        [
            CheckoutEvent(event_id="1", customer_id="a", ts=T0, amount=10.0),
            CheckoutEvent(
                event_id="2",
                customer_id="a",
                ts=T0 + DAY,
                amount=2.0,
                discount=1.0,
                items=3,
                type="refund",
            ),
        ]
    )
    assert_same_state(expected, state_from_row(batch_states(table).loc["a"]))


def test_an_unknown_event_type_is_refused() -> None:
    table = pd.DataFrame({"customer_id": ["a"], "type": ["return"], "ts": [T0], "amount": [1.0]})
    with pytest.raises(ValueError, match="return"):
        batch_states(table)
    with pytest.raises(ValueError, match="return"):
        batch_states(table.astype({"type": "category"}))


def test_customer_ids_come_out_as_strings_like_the_event_contract() -> None:
    frame = batch_states(
        pd.DataFrame({"customer_id": [12, 7, 12], "ts": [T0] * 3, "amount": [1.0] * 3})
    )
    assert list(frame.index) == ["12", "7"]
    assert frame.loc["12", "orders"] == 2


def test_an_empty_table_gives_an_empty_state_frame() -> None:
    frame = batch_states(pd.DataFrame({"customer_id": [], "ts": [], "amount": []}))
    assert frame.empty
    assert list(frame.columns) == list(STATE_FIELDS)
