"""The customer-state rules (contract v1), one test per rule, as docs/features.md states them."""

from __future__ import annotations

import dataclasses
import math
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from producer.contract import CheckoutEvent
from state.features import (
    DEFAULT_HALF_LIFE_DAYS,
    FEATURE_NAMES,
    CustomerState,
    apply_event,
    cents,
    cents_array,
    decay_factor,
    derive,
    fold_events,
)

DAY = 86_400.0
T0 = 1_700_000_000.0


def purchase(ts: float = T0, amount: float = 10.0, **kw: object) -> CheckoutEvent:
    return CheckoutEvent(event_id="p", customer_id="c1", ts=ts, amount=amount, **kw)  # type: ignore[arg-type]


def refund(ts: float = T0, amount: float = 10.0, **kw: object) -> CheckoutEvent:
    return CheckoutEvent(event_id="r", customer_id="c1", ts=ts, amount=amount, type="refund", **kw)  # type: ignore[arg-type]


# -- money ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        (0.0, 0),
        (19.99, 1999),
        (0.1 + 0.2, 30),
        (0.125, 13),  # half away from zero
        (-0.125, -13),
        (1.005, 101),  # the decimal tie, although 1.005 * 100 == 100.49999999999999
        (2.675, 268),
        (0.004999, 0),
        (123456789.01, 12345678901),
    ],
)
def test_money_enters_as_integer_cents_rounded_half_away_from_zero(
    amount: float, expected: int
) -> None:
    assert cents(amount) == expected
    assert isinstance(cents(amount), int)


@settings(max_examples=300, deadline=None)
@given(amount=st.floats(-1e8, 1e8, allow_nan=False), decimals=st.sampled_from([0, 1, 2, 3]))
def test_cents_rounds_like_decimal_half_up_on_what_was_written(
    amount: float, decimals: int
) -> None:
    written = round(amount, decimals)
    expected = int((Decimal(repr(written)) * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    assert cents(written) == expected
    assert cents_array(np.array([written])).tolist() == [expected]


def test_non_finite_money_is_refused() -> None:
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="finite"):
            cents(bad)


# -- counts and sums -----------------------------------------------------------------------------


def test_a_purchase_counts_an_order_and_adds_amount_discount_and_items() -> None:
    s = apply_event(CustomerState(), purchase(amount=25.5, discount=4.5, items=3))
    assert (s.orders, s.refunds) == (1, 0)
    assert (s.gross_cents, s.refunded_cents, s.discount_cents, s.items) == (2550, 0, 450, 3)


def test_a_refund_counts_a_refund_and_adds_only_to_refunded() -> None:
    s = apply_event(CustomerState(), refund(amount=7.25, discount=1.0, items=2))
    assert (s.orders, s.refunds) == (0, 1)
    assert (s.gross_cents, s.refunded_cents, s.discount_cents, s.items) == (0, 725, 0, 0)


def test_apply_event_is_pure() -> None:
    before = CustomerState(orders=1, gross_cents=100, first_ts=T0, last_ts=T0, decay_ts=T0)
    snapshot = dataclasses.replace(before)
    after = apply_event(before, purchase(ts=T0 + DAY))
    assert before == snapshot
    assert after is not before


def test_zero_amounts_count_but_add_nothing() -> None:
    s = fold_events([purchase(amount=0.0), refund(amount=0.0)])
    assert (s.orders, s.refunds, s.gross_cents, s.refunded_cents) == (1, 1, 0, 0)
    assert s.spend_decayed == 0.0
    assert s.orders_decayed == 1.0


# -- first and last purchase ---------------------------------------------------------------------


def test_first_and_last_ts_span_purchases_in_any_arrival_order() -> None:
    s = fold_events([purchase(ts=T0 + 5 * DAY), purchase(ts=T0), purchase(ts=T0 + 2 * DAY)])
    assert (s.first_ts, s.last_ts) == (T0, T0 + 5 * DAY)


def test_refunds_do_not_move_first_or_last_ts_but_do_move_decay_ts() -> None:
    s = fold_events([purchase(ts=T0), refund(ts=T0 + 9 * DAY), refund(ts=T0 - 9 * DAY)])
    assert (s.first_ts, s.last_ts) == (T0, T0)
    assert s.decay_ts == T0 + 9 * DAY


# -- decay ---------------------------------------------------------------------------------------


def test_one_half_life_halves_the_value() -> None:
    assert decay_factor(DEFAULT_HALF_LIFE_DAYS * DAY, DEFAULT_HALF_LIFE_DAYS) == 0.5
    assert decay_factor(2 * 7 * DAY, 7.0) == 0.25
    assert decay_factor(0.0, 7.0) == 1.0


def test_a_newer_event_decays_the_old_sum_forward_then_adds() -> None:
    s = fold_events([purchase(ts=T0, amount=40.0), purchase(ts=T0 + 30 * DAY, amount=20.0)])
    assert s.decay_ts == T0 + 30 * DAY
    assert s.spend_decayed == 4000 * 0.5 + 2000  # cents
    assert s.orders_decayed == 1.5


def test_an_older_event_is_decayed_before_it_is_added() -> None:
    s = fold_events([purchase(ts=T0 + 30 * DAY, amount=20.0), purchase(ts=T0, amount=40.0)])
    assert s.decay_ts == T0 + 30 * DAY
    assert s.spend_decayed == 2000 + 4000 * 0.5
    assert s.orders_decayed == 1.5


def test_a_refund_subtracts_its_amount_from_spend_and_nothing_from_the_count() -> None:
    s = fold_events(
        [purchase(ts=T0, amount=50.0), refund(ts=T0 + 10 * DAY, amount=20.0)],
        None,
        half_life_days=10.0,
    )
    assert s.spend_decayed == 5000 * 0.5 - 2000
    assert s.orders_decayed == 0.5
    assert s.decay_ts == T0 + 10 * DAY


def test_the_half_life_is_a_parameter() -> None:
    s = fold_events([purchase(ts=T0), purchase(ts=T0 + DAY)], half_life_days=1.0)
    assert s.orders_decayed == 1.5
    with pytest.raises(ValueError, match="half_life_days"):
        apply_event(CustomerState(), purchase(), half_life_days=0.0)


# -- profile -------------------------------------------------------------------------------------


def test_the_profile_of_the_latest_event_wins() -> None:
    old = purchase(ts=T0, age=30.0, gender="Female", annual_income=50_000.0)
    new = purchase(ts=T0 + DAY, age=31.0, gender="Female", annual_income=55_000.0)
    for order in ([old, new], [new, old]):
        s = fold_events(order)
        assert (s.age, s.gender, s.annual_income, s.profile_ts) == (
            31.0,
            "Female",
            55_000.0,
            T0 + DAY,
        )


def test_an_event_without_profile_leaves_the_profile() -> None:
    s = fold_events([purchase(ts=T0, age=30.0), purchase(ts=T0 + DAY)])
    assert (s.age, s.profile_ts) == (30.0, T0)


def test_the_latest_profile_replaces_the_profile_as_a_whole() -> None:
    s = fold_events([purchase(ts=T0, age=30.0, gender="Male"), purchase(ts=T0 + DAY, age=31.0)])
    assert (s.age, s.gender) == (31.0, None)


def test_profile_ties_at_the_same_ts_are_broken_by_value_in_any_order() -> None:
    a = purchase(ts=T0, age=30.0, gender="Male")
    b = purchase(ts=T0, age=30.0, gender="Female")
    c = purchase(ts=T0, gender="X")  # unknown age loses to a known one
    for order in ([a, b, c], [c, b, a], [b, c, a]):
        s = fold_events(order)
        assert (s.age, s.gender) == (30.0, "Male")


def test_a_profile_without_a_time_yields_to_any_event_profile() -> None:
    seeded = CustomerState(age=50.0, gender="Female")  # e.g. from a customer table
    s = apply_event(seeded, purchase(ts=T0, age=51.0))
    assert (s.age, s.gender, s.profile_ts) == (51.0, None, T0)


# -- derived features ----------------------------------------------------------------------------


def test_derive_gives_every_feature_name_and_gender() -> None:
    f = derive(fold_events([purchase()]), T0)
    assert set(f) == {*FEATURE_NAMES, "gender"}


def test_derived_money_features_are_in_money_units() -> None:
    s = fold_events(
        [purchase(amount=30.0, discount=10.0, items=2), purchase(amount=10.0), refund(amount=5.0)]
    )
    f = derive(s, T0)
    assert (f["gross"], f["refunded"], f["discount"], f["net_spend"]) == (40.0, 5.0, 10.0, 35.0)
    assert (f["orders"], f["refunds"], f["items"]) == (2.0, 1.0, 3.0)
    assert f["avg_order_value"] == 20.0
    assert f["discount_share"] == 10.0 / 50.0


def test_recency_and_tenure_are_days_from_the_last_and_first_purchase() -> None:
    s = fold_events([purchase(ts=T0), purchase(ts=T0 + 10 * DAY)])
    f = derive(s, T0 + 12 * DAY)
    assert (f["recency_days"], f["tenure_days"]) == (2.0, 12.0)


def test_recency_and_tenure_are_never_negative() -> None:
    f = derive(fold_events([purchase(ts=T0 + DAY)]), T0)
    assert (f["recency_days"], f["tenure_days"]) == (0.0, 0.0)


def test_rates_are_the_decayed_values_brought_forward() -> None:
    s = fold_events([purchase(ts=T0, amount=80.0)])
    f = derive(s, T0 + 60 * DAY, half_life_days=30.0)
    assert (f["spend_rate"], f["order_rate"]) == (20.0, 0.25)


def test_rates_are_not_brought_backwards() -> None:
    s = fold_events([purchase(ts=T0, amount=80.0)])
    f = derive(s, T0 - 30 * DAY, half_life_days=30.0)
    assert (f["spend_rate"], f["order_rate"]) == (80.0, 1.0)


def test_a_customer_without_purchases_gets_defined_values() -> None:
    for state in (CustomerState(), fold_events([refund(amount=12.0)])):
        f = derive(state, T0)
        numeric = {k: v for k, v in f.items() if k not in ("age", "annual_income", "gender")}
        assert all(isinstance(v, float) and math.isfinite(v) for v in numeric.values())
        assert f["avg_order_value"] == 0.0
        assert f["discount_share"] == 0.0
        assert f["recency_days"] == 0.0
        assert f["tenure_days"] == 0.0
        assert f["order_rate"] == 0.0
    f = derive(fold_events([refund(amount=12.0)]), T0)
    assert (f["net_spend"], f["spend_rate"]) == (-12.0, -12.0)


def test_unknown_profile_values_are_none() -> None:
    f = derive(CustomerState(), T0)
    assert (f["age"], f["annual_income"], f["gender"]) == (None, None, None)
    f = derive(fold_events([purchase(age=40.0, gender="Female", annual_income=70_000.0)]), T0)
    assert (f["age"], f["annual_income"], f["gender"]) == (40.0, 70_000.0, "Female")


# -- the batch fold ------------------------------------------------------------------------------

_events = st.lists(
    st.builds(
        CheckoutEvent,
        event_id=st.just("e"),
        customer_id=st.just("c1"),
        ts=st.floats(T0 - 90 * DAY, T0 + 90 * DAY),
        amount=st.floats(0.0, 5_000.0),
        type=st.sampled_from(["purchase", "purchase", "refund"]),
        discount=st.floats(0.0, 50.0),
        items=st.integers(1, 9),
        age=st.none() | st.floats(18.0, 90.0) | st.just(math.nan),
        gender=st.none() | st.sampled_from(["Female", "Male"]),
        annual_income=st.none() | st.floats(0.0, 300_000.0),
    ),
    max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(first=_events, events=_events, half_life_days=st.sampled_from([1.0, 30.0, 365.0]))
def test_fold_events_equals_the_apply_event_fold_exactly(
    first: list[CheckoutEvent], events: list[CheckoutEvent], half_life_days: float
) -> None:
    start = CustomerState()
    for e in first:  # any earlier state, built one event at a time
        start = apply_event(start, e, half_life_days=half_life_days)
    snapshot = dataclasses.replace(start)
    expected = start
    for e in events:
        expected = apply_event(expected, e, half_life_days=half_life_days)
    assert fold_events(events, start, half_life_days=half_life_days) == expected
    assert start == snapshot  # the starting state is not touched
    assert fold_events(first, half_life_days=half_life_days) == start
