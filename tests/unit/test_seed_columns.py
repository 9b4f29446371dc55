"""Seeds as columns: the same seeds as rows, the same texts as the row-wise encoder."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from state import keys as K
from state.features import STATE_FIELDS, CustomerState
from state.redis_seed import seed_value_columns
from state.store import InMemoryStore, SeedColumns
from tests.unit.test_keys import states


def columns_of(rows: list[CustomerState], **kw: object) -> SeedColumns:
    values: dict[str, object] = {
        "customer_ids": [f"c{i}" for i in range(len(rows))],
        "states": {a: [getattr(s, a) for s in rows] for a in STATE_FIELDS},
        "segment_ids": [i % 3 for i in range(len(rows))],
        "segment_names": [f"seg{i % 3}" for i in range(len(rows))],
        "model_version": "m1",
        "updated_at": 1_750_000_100.0,
        "as_of": 1_750_000_000.0,
    }
    return SeedColumns(**(values | kw))  # type: ignore[arg-type]


@given(st.lists(states, min_size=1, max_size=8))
@settings(deadline=None)
def test_column_texts_are_the_row_encoder_texts(rows: list[CustomerState]) -> None:
    by_field = dict(seed_value_columns(columns_of(rows)))
    for i, state in enumerate(rows):
        expected = K.state_values(state)
        got = [by_field[f][i] for f in K.STATE_FIELDS]
        assert got == [None if v is False else v for v in expected]


def test_missing_state_columns_take_the_state_defaults() -> None:
    cols = columns_of([CustomerState()], states={"orders": [4]})
    assert cols.seeds()[0].state == CustomerState(orders=4)
    texts = dict(seed_value_columns(cols))
    assert texts["orders"] == ["4"] and texts["gross"] == ["0.00"] and texts["age"] == [None]


@given(st.lists(states, max_size=6))
@settings(max_examples=50)
def test_columns_are_the_seeds_they_hold(rows: list[CustomerState]) -> None:
    cols = columns_of(rows)
    seeds = cols.seeds()
    assert [s.state for s in seeds] == rows
    assert [s.customer_id for s in seeds] == list(cols.customer_ids)
    assert {s.model_version for s in seeds} <= {"m1"}


def test_the_in_memory_store_writes_columns_as_it_writes_rows() -> None:
    rows = [CustomerState(orders=i, decay_ts=1e9 + i) for i in range(5)]
    cols = columns_of(rows)
    a, b = InMemoryStore(), InMemoryStore()
    assert a.put_initial_columns(cols) == b.put_initial_many(cols.seeds())
    assert a.hashes == b.hashes and a.segment_sizes() == b.segment_sizes()


@pytest.mark.parametrize(
    "bad",
    [
        {"segment_ids": [1]},
        {"states": {"orders": [1, 2, 3]}},
        {"states": {"not_a_field": [1, 2]}},
    ],
)
def test_malformed_columns_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        columns_of([CustomerState(), CustomerState()], **bad)


EDGES = [0.0, -0.0, 1.0, -1.5, 35.0, 1e-4, 9.99e-5, 1e-5, 5e-324, 1e15, 1e15 + 0.5, 1e16,
         -1e16, 18736950168172.625, 19129597424.716766, 1.7976931348623157e308, 1750005306.891]  # fmt: skip


@pytest.mark.parametrize("value", EDGES)
def test_column_texts_match_at_the_edges_of_the_number_layout(value: float) -> None:
    state = CustomerState(first_ts=value, spend_decayed=value, age=value)
    texts = dict(seed_value_columns(columns_of([state])))
    assert texts["first_ts"] == [K.number(value)]
    assert texts["age"] == [K.number(value)]
    assert texts["spend_decayed"] == [repr(value)]
