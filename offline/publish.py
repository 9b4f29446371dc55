"""``segstream offline publish DIR``: seed Redis from a fit directory.

Order: (1) the model goes into the registry (immutable; publishing the same model again
is a no-op), (2) every customer's initial state, segment and snapshot time ``as_of`` is
written with :meth:`state.store.CustomerStore.put_initial_columns` in batches (two pipelined
round trips each; new customers are created without a Lua call, see :mod:`state.redis_seed`), (3) the current-model pointer is switched. Re-running is harmless: the
registry accepts the identical model, seeds are idempotent and never overwrite a customer
that already holds a newer snapshot or a later event, and the pointer is set again.

Customers-only fits have no ``as_of``: seeds carry ``as_of = 0`` so that the consumer
applies every event it sees (none were counted offline).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from offline.artifacts import read_assignments, read_model, read_states
from state.model import SegmentModel
from state.store import CustomerStore, SeedColumns

logger = logging.getLogger(__name__)

DEFAULT_BATCH = 10_000


@dataclass(frozen=True, kw_only=True)
class PublishSummary:
    """What a publish did."""

    model_version: str
    model_created: bool  # False when the identical model was already in the registry
    customers: int
    written: int  # seeds applied (others were skipped: a newer snapshot or event was there)
    seconds: float

    @property
    def rate(self) -> float:
        return self.customers / self.seconds if self.seconds > 0 else float("inf")


def _column(frame: pd.DataFrame, name: str, kind: str) -> Sequence[Any]:
    """One state column as the store takes it: int64 / float64 arrays (NaN = unknown) or
    a list of str or None."""
    values = frame[name]
    if kind == "int":
        return values.fillna(0).to_numpy(dtype="int64")
    if kind == "str":
        return [None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
                for v in values.tolist()]  # fmt: skip
    return values.to_numpy(dtype="float64", na_value=np.nan)


def iter_seeds(
    states: pd.DataFrame,
    assignments: pd.DataFrame,
    model: SegmentModel,
    *,
    batch_size: int = DEFAULT_BATCH,
) -> Iterator[SeedColumns]:
    """Batches of seeds (as columns): state + segment of every customer, in file order."""
    from state.batch import INT_FIELDS, STR_FIELDS
    from state.features import STATE_FIELDS

    as_of = float(model.as_of) if model.as_of is not None else 0.0
    seg = assignments["segment_id"].reindex(states.index)
    names = {s.id: s.name for s in model.segments}
    updated_at = float(model.created_at)
    for lo in range(0, len(states), batch_size):
        part = states.iloc[lo : lo + batch_size]
        ids = seg.iloc[lo : lo + batch_size].astype("int64").tolist()
        yield SeedColumns(
            customer_ids=[str(c) for c in part.index],
            states={
                f: _column(part, f, "int" if f in INT_FIELDS else "str" if f in STR_FIELDS else "f")
                for f in STATE_FIELDS
            },
            segment_ids=ids,
            segment_names=[names[sid] for sid in ids],
            model_version=model.version,
            updated_at=updated_at,
            as_of=as_of,
        )


def publish(
    fit_dir: str | Path,
    store: CustomerStore,
    registry: object,
    *,
    batch_size: int = DEFAULT_BATCH,
    progress: Callable[[int, int], None] | None = None,
) -> PublishSummary:
    """Publish a fit directory: registry, seeds in batches, then the current pointer.

    ``registry`` is a :class:`state.registry.ModelRegistry` (``publish``, ``set_current``);
    ``progress(done, total)`` is called after each batch.
    """
    t0 = time.perf_counter()
    model = read_model(fit_dir)
    states = read_states(fit_dir)
    assignments = read_assignments(fit_dir)
    created = bool(registry.publish(model))  # type: ignore[attr-defined]
    total, done, written = len(states), 0, 0
    for batch in iter_seeds(states, assignments, model, batch_size=batch_size):
        results = store.put_initial_columns(batch)
        written += sum(r.applied for r in results)
        done += len(batch)
        if progress is not None:
            progress(done, total)
    registry.set_current(model.version)  # type: ignore[attr-defined]
    seconds = time.perf_counter() - t0
    logger.info(
        "publish model=%s customers=%d written=%d seconds=%.2f",
        model.version,
        total,
        written,
        seconds,
    )
    return PublishSummary(
        model_version=model.version,
        model_created=created,
        customers=total,
        written=written,
        seconds=seconds,
    )
