"""Shared helpers of the consumer tests: a simulated history and stream, a fitted model,
the records a broker would deliver, and the batch computation to compare against."""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans

from consumer.processor import SourceRecord
from producer.contract import CheckoutEvent, encode
from state.batch import batch_states, iter_states
from state.features import CustomerState, derive
from state.model import SegmentModel
from state.store import CustomerSeed

FEATURES = ("net_spend", "order_rate", "avg_order_value")
END = 1_750_000_000.0  # history ends (and the model's as_of) here; the stream follows


@dataclass(frozen=True)
class World:
    """History up to ``as_of``, the model fitted on it, seeds, and a live stream."""

    history: pd.DataFrame
    model: SegmentModel
    seeds: list[CustomerSeed]
    stream: list[CheckoutEvent]

    @property
    def as_of(self) -> float:
        return float(self.model.as_of or 0.0)


def events_frame(events: Sequence[CheckoutEvent]) -> pd.DataFrame:
    cols = ("customer_id", "type", "ts", "amount", "discount", "items", "age", "gender")
    return pd.DataFrame(
        {c: [getattr(e, c) for e in events] for c in cols}
        | {"annual_income": [e.annual_income for e in events]}
    )


def fit_model(
    states: Mapping[str, CustomerState], *, as_of: float, k: int = 3, version: str = "m1"
) -> SegmentModel:
    """A K-Means model on log1p of the features, standard scaled (like the offline job)."""
    raw = np.array([[derive(s, as_of)[f] or 0.0 for f in FEATURES] for s in states.values()])
    x = np.log1p(np.maximum(raw, 0.0))
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    km = KMeans(k, n_init=4, random_state=0).fit((x - mean) / scale)
    return SegmentModel.from_dict(
        {
            "schema_version": 1,
            "version": version,
            "as_of": as_of,
            "half_life_days": 30.0,
            "features": list(FEATURES),
            "transforms": dict.fromkeys(FEATURES, "log1p"),
            "imputation": dict.fromkeys(FEATURES, 0.0),
            "scaler": {"kind": "standard", "mean": mean.tolist(), "scale": scale.tolist()},
            "centroids": km.cluster_centers_.tolist(),
            "weights": np.bincount(km.labels_, minlength=k).astype(float).tolist(),
            "segments": [{"id": 100 + i, "name": f"Segment-{i}"} for i in range(k)],
            "algorithm": "kmeans",
        }
    )


def simulate(
    customers: int, n_events: int, *, start: float, span: float, seed: int, tag: str
) -> pd.DataFrame:
    """Checkouts of ``customers`` with heavy-tailed rates and spends, in time order.

    Deliberately independent of the producer's simulator: a small, fixed workload.
    """
    rng = np.random.default_rng(seed)
    rate = rng.pareto(1.5, customers) + 0.1
    spend_mu = rng.normal(3.5, 0.8, customers)
    who = rng.choice(customers, n_events, p=rate / rate.sum())
    ts = np.sort(start + rng.uniform(0, span, n_events).round(3))
    refund = rng.random(n_events) < 0.05
    amount = np.round(np.exp(rng.normal(spend_mu[who], 0.4)), 2)
    with_profile = rng.random(n_events) < 0.3
    age = np.where(with_profile, rng.integers(18, 80, customers)[who], np.nan)
    return pd.DataFrame(
        {
            "event_id": [f"{tag}{i}" for i in range(n_events)],
            "customer_id": [f"C{c:06d}" for c in who],
            "type": np.where(refund, "refund", "purchase"),
            "ts": ts,
            "amount": np.where(refund, np.round(amount / 2, 2), amount),
            "discount": np.where(rng.random(n_events) < 0.2, np.round(amount * 0.1, 2), 0.0),
            "items": rng.integers(1, 5, n_events),
            "age": age,
            "gender": None,
            "annual_income": np.nan,
        }
    )


def to_events(frame: pd.DataFrame) -> list[CheckoutEvent]:
    out = []
    for row in frame.itertuples(index=False):
        age = None if math.isnan(row.age) else float(row.age)
        out.append(
            CheckoutEvent(
                event_id=row.event_id,
                customer_id=row.customer_id,
                type=row.type,
                ts=float(row.ts),
                amount=float(row.amount),
                discount=float(row.discount),
                items=int(row.items),
                age=age,
            )
        )
    return out


def make_world(customers: int = 300, events: int = 3000, seed: int = 1) -> World:
    """History of ``3 * events`` over 120 days before :data:`END`, a stream of ``events``
    over the day after (some of its customers are new)."""
    history = simulate(customers, 3 * events, start=END - 120 * 86400, span=120 * 86400 - 1,
                       seed=seed, tag="h")  # fmt: skip
    stream = simulate(customers + customers // 10, events, start=END + 1, span=86400.0,
                      seed=seed + 1, tag="s")  # fmt: skip
    states = dict(iter_states(batch_states(history)))
    model = fit_model(states, as_of=END)
    seeds = []
    for cid, s in states.items():
        segment = model.assign(derive(s, END))
        seeds.append(
            CustomerSeed(
                customer_id=cid,
                state=s,
                segment_id=segment.id,
                segment_name=segment.name,
                model_version=model.version,
                updated_at=END,
                as_of=END,
            )
        )
    return World(history=history, model=model, seeds=seeds, stream=to_events(stream))


def partition_of(customer_id: str, partitions: int) -> int:
    return zlib.crc32(customer_id.encode()) % partitions


def records_for(
    events: Iterable[CheckoutEvent], *, topic: str = "events", partitions: int = 3
) -> list[SourceRecord]:
    """Records as a broker would deliver them: keyed by customer, offsets per partition."""
    next_offset = [0] * partitions
    out = []
    for e in events:
        p = partition_of(e.customer_id, partitions)
        out.append(
            SourceRecord(
                topic=topic,
                partition=p,
                offset=next_offset[p],
                key=e.customer_id.encode(),
                value=encode(e),
                timestamp_ms=int(e.ts * 1000),
            )
        )
        next_offset[p] += 1
    return out


def expected_states(world: World, stream: Sequence[CheckoutEvent]) -> dict[str, CustomerState]:
    """The batch computation (state/batch.py) over history and stream together."""
    frame = pd.concat([world.history, events_frame(stream)], ignore_index=True)
    return dict(iter_states(batch_states(frame, half_life_days=world.model.half_life_days)))


def assert_same_state(got: CustomerState, want: CustomerState, who: str = "") -> None:
    """Counts and cents exact; decayed values to a relative 1e-9."""
    for name in CustomerState.__slots__:
        a, b = getattr(got, name), getattr(want, name)
        if isinstance(a, float) and isinstance(b, float):
            assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9), (who, name, a, b)
        else:
            assert a == b, (who, name, a, b)
