"""Publish, without a server: seeds from a fit directory into the in-memory store."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from offline.artifacts import write_artifacts
from offline.fit import FitOptions, fit
from offline.publish import iter_seeds, publish
from state.model import SegmentModel
from state.store import InMemoryStore


class RecordingRegistry:
    """Registry double that records the order of calls (the real one is tested on Redis)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.models: dict[str, SegmentModel] = {}

    def publish(self, model: SegmentModel) -> bool:
        self.calls.append("publish")
        new = model.version not in self.models
        self.models[model.version] = model
        return new

    def set_current(self, version: str) -> SegmentModel:
        self.calls.append("set_current")
        return self.models[version]


def _fit_dir(tmp_path: Path) -> Path:
    customers = pd.DataFrame(
        {"customer_id": ["a", "b", "c", "d"], "age": [20.0, 25.0, 60.0, 65.0],
         "gender": ["F", None, "M", "F"]}
    )  # fmt: skip
    tx = pd.DataFrame(
        {"customer_id": ["a", "a", "c"], "ts": [100.0, 200.0, 150.0], "amount": [10.0, 5.0, 7.5],
         "discount": [1.0, 0.0, 0.0], "items": [1, 2, 1], "type": ["purchase"] * 3}
    )  # fmt: skip
    opts = FitOptions(
        features=("age", "orders"), k_range=(2,), n_bootstrap=0, algorithms=("kmeans",)
    )
    write_artifacts(fit(customers, tx, opts), tmp_path, report=False)
    return tmp_path


def test_seeds_carry_state_segment_and_as_of(tmp_path: Path) -> None:
    d = _fit_dir(tmp_path)
    store, registry = InMemoryStore(), RecordingRegistry()
    done: list[tuple[int, int]] = []
    summary = publish(d, store, registry, batch_size=3, progress=lambda a, b: done.append((a, b)))
    assert registry.calls == ["publish", "set_current"]
    assert done == [(3, 4), (4, 4)]
    assert summary.customers == 4 and summary.written == 4 and summary.model_created
    a = store.get("a")
    assert (a.state.orders, a.state.gross_cents, a.state.discount_cents) == (2, 1500, 100)
    assert a.state.age == 20.0 and a.state.gender == "F" and a.as_of == 200.0
    b = store.get("b")
    assert b.state.orders == 0 and b.state.gender is None and b.state.last_ts is None
    assert sum(store.segment_sizes().values()) == 4


def test_publishing_twice_changes_nothing(tmp_path: Path) -> None:
    d = _fit_dir(tmp_path)
    store, registry = InMemoryStore(), RecordingRegistry()
    publish(d, store, registry)
    before = {cid: dict(h) for cid, h in store.hashes.items()}
    sizes = store.segment_sizes()
    again = publish(d, store, registry)
    assert not again.model_created
    assert store.hashes == before and store.segment_sizes() == sizes


def test_iter_seeds_batches_in_file_order(tmp_path: Path) -> None:
    from offline.artifacts import read_assignments, read_model, read_states

    d = _fit_dir(tmp_path)
    batches = list(iter_seeds(read_states(d), read_assignments(d), read_model(d), batch_size=2))
    assert [list(b.customer_ids) for b in batches] == [["a", "c"], ["b", "d"]]
