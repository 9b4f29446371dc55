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

import itertools
import logging
import math
import multiprocessing as mp
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from offline.artifacts import read_assignments, read_model, read_states
from state.errors import SegstreamError
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
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> PublishSummary:
    """Publish a fit directory: registry, seeds in batches, then the current pointer.

    ``registry`` is a :class:`state.registry.ModelRegistry` (``publish``, ``set_current``);
    ``progress(done, total)`` is called after each batch. With ``workers`` > 1 and a store
    that processes may share (:attr:`CustomerStore.shared_across_processes`: the Redis one),
    that many forked processes write the batches in turn, each on its own connection; the
    pointer switches once all of them are done. Seeds are independent of one another, so
    the order of batches does not matter.
    """
    t0 = time.perf_counter()
    model = read_model(fit_dir)
    states = read_states(fit_dir)
    assignments = read_assignments(fit_dir, columns=["segment_id"])
    created = bool(registry.publish(model))  # type: ignore[attr-defined]
    batches = iter_seeds(states, assignments, model, batch_size=batch_size)
    total = len(states)
    if workers > 1 and store.shared_across_processes and _can_fork():
        written = _publish_forked(batches, store, workers, total, progress)
    else:
        written = _publish_here(batches, store, total, progress)
    registry.set_current(model.version)  # type: ignore[attr-defined]
    seconds = time.perf_counter() - t0
    logger.info(
        "publish model=%s customers=%d written=%d seconds=%.2f workers=%d",
        model.version,
        total,
        written,
        seconds,
        workers,
    )
    return PublishSummary(
        model_version=model.version,
        model_created=created,
        customers=total,
        written=written,
        seconds=seconds,
    )


def _publish_here(
    batches: Iterable[SeedColumns],
    store: CustomerStore,
    total: int,
    progress: Callable[[int, int], None] | None,
) -> int:
    done = written = 0
    for batch in batches:
        written += sum(r.applied for r in store.put_initial_columns(batch))
        done += len(batch)
        if progress is not None:
            progress(done, total)
    return written


def _can_fork() -> bool:
    return "fork" in mp.get_all_start_methods()


def _publish_forked(
    batches: Iterator[SeedColumns],
    store: CustomerStore,
    workers: int,
    total: int,
    progress: Callable[[int, int], None] | None,
) -> int:
    """Worker k writes batches k, k + workers, ...; each reports (customers, written) per
    batch on a queue, then ``None`` (or the text of the exception that stopped it)."""
    ctx = mp.get_context("fork")  # children inherit the tables and the store, not sockets
    reports = ctx.SimpleQueue()

    def work(k: int) -> None:  # runs in a child, on its own copy of the batch generator
        try:
            for batch in itertools.islice(batches, k, None, workers):
                reports.put((len(batch), sum(r.applied for r in store.put_initial_columns(batch))))
            reports.put(None)
        except BaseException as exc:
            reports.put(f"{type(exc).__name__}: {exc}")

    procs = [ctx.Process(target=work, args=(k,), name=f"publish-{k}") for k in range(workers)]
    for proc in procs:
        proc.start()
    done = written = finished = 0
    failure: str | None = None
    try:
        while finished < workers:
            report = reports.get()
            if report is None or isinstance(report, str):
                finished += 1
                failure = failure or report
                continue
            done, written = done + report[0], written + report[1]
            if progress is not None:
                progress(done, total)
    finally:
        for proc in procs:
            proc.join()
    if failure is not None:
        raise SegstreamError(f"a publish worker failed: {failure}")
    return written
