"""Offline fit at scale: 1,000,000 customers x 20,000,000 synthetic transactions.

Prints wall time and peak resident memory (RSS, sampled every 20 ms) per stage:
features (cleaning + the state/ rules), model selection, profiles, report (+ artefacts),
publish (to a private ``redis-server`` started here, never the shared one). Not a test.

    .venv/bin/python bench/bench_offline.py                      # the full run (minutes)
    .venv/bin/python bench/bench_offline.py --customers 20000 --transactions 400000

Model selection runs on fixed-size samples (see offline/selection.py): K-Means sweep,
GMM on 50,000 / 20,000 rows, silhouette on 5,000, Ward on 5,000, DBSCAN on 10,000,
stability on 2,000; all customers are then labelled by nearest centroid.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

DAY = 86_400.0
END = 1_767_225_600.0  # 2026-01-01T00:00:00Z
FIT_STAGES = {"clean": "features", "features": "features", "model selection": "model selection",
              "profiles": "profiles"}  # fmt: skip
# archetype: share, orders/year, median order value, discount share, days since last, tenure
GROUPS = (
    ("loyal", 0.25, 30.0, 60.0, 0.05, 5, 700),
    ("big spenders", 0.10, 12.0, 300.0, 0.02, 20, 600),
    ("discount seekers", 0.20, 15.0, 35.0, 0.35, 15, 500),
    ("lapsed", 0.25, 6.0, 45.0, 0.08, 250, 700),
    ("new", 0.20, 20.0, 50.0, 0.10, 3, 45),
)


def synthetic_transactions(customers: int, transactions: int, seed: int = 0) -> pd.DataFrame:
    """Event-contract columns; customer_id and type are categorical (as a Parquet load gives)."""
    rng = np.random.default_rng(seed)
    share = np.array([g[1] for g in GROUPS])
    group = rng.choice(len(GROUPS), size=customers, p=share / share.sum())
    attr = np.array([g[2:] for g in GROUPS], dtype=float)[group]
    tenure = attr[:, 4] * rng.uniform(0.5, 1.5, customers)
    idle = np.minimum(attr[:, 3] * rng.uniform(0.2, 1.8, customers), tenure * 0.9)
    lam = attr[:, 0] * (tenure - idle) / 365.0 * rng.lognormal(0, 0.3, customers)
    lam *= transactions / lam.sum()
    counts = np.maximum(rng.poisson(lam), 1)
    owner = np.repeat(np.arange(customers, dtype=np.int32), counts)
    n = len(owner)
    last = END - idle * DAY
    first = END - tenure * DAY
    ts = first[owner] + rng.random(n) * (last - first)[owner]
    amount = np.round(attr[owner, 1] * rng.lognormal(0, 0.5, n), 2)
    discount = np.round(amount * attr[owner, 2] * rng.uniform(0, 2, n), 2)
    ids = pd.Categorical.from_codes(owner, categories=[f"C{i:07d}" for i in range(customers)])
    kinds = pd.Categorical.from_codes((rng.random(n) < 0.02).astype(np.int8),
                                      categories=["purchase", "refund"])  # fmt: skip
    return pd.DataFrame(
        {
            "customer_id": ids,
            "type": kinds,
            "ts": ts,
            "amount": amount,
            "discount": discount,
            "items": rng.integers(1, 5, n, dtype=np.int64),
        }
    )


class PeakRss:
    """Samples this process's RSS in a thread; keeps the peak per named stage."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.stage = "setup"
        self.peaks: dict[str, int] = {}
        self.cpu: dict[str, float] = {}  # CPU seconds (user + system, all threads) per stage
        self._cpu_mark = 0.0
        self._stop = threading.Event()
        self._proc = psutil.Process(os.getpid())
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = self._proc.memory_info().rss
            self.peaks[self.stage] = max(self.peaks.get(self.stage, 0), rss)
            time.sleep(self.interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.enter("done")
        self._stop.set()
        self._thread.join()

    def _cpu_now(self) -> float:
        t = self._proc.cpu_times()
        return t.user + t.system

    def enter(self, stage: str) -> None:
        now = self._cpu_now()
        self.cpu[self.stage] = self.cpu.get(self.stage, 0.0) + now - self._cpu_mark
        self._cpu_mark = now
        self.stage = stage
        rss = self._proc.memory_info().rss
        self.peaks[stage] = max(self.peaks.get(stage, 0), rss)


@contextmanager
def timed(rss: PeakRss, stage: str, timings: dict[str, float]) -> Iterator[None]:
    rss.enter(stage)
    t0 = time.perf_counter()
    yield
    timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--transactions", type=int, default=20_000_000)
    parser.add_argument("--no-publish", action="store_true")
    parser.add_argument("--no-report", action="store_true")
    parser.add_argument("--batch-size", type=int, default=10_000)  # offline.publish.DEFAULT_BATCH
    parser.add_argument("--workers", type=int, default=2, help="publish processes (CLI default)")
    args = parser.parse_args()

    from offline.artifacts import write_artifacts
    from offline.fit import FitOptions, fit

    timings: dict[str, float] = {}
    with PeakRss() as rss, tempfile.TemporaryDirectory(prefix="bench-offline-") as tmp:
        t0 = time.perf_counter()
        tx = synthetic_transactions(args.customers, args.transactions)
        print(f"generated {len(tx):,} transactions for {args.customers:,} customers "
              f"in {time.perf_counter() - t0:.1f} s")  # fmt: skip
        rss.enter("features")
        fit_t0 = time.perf_counter()
        result = fit(
            None,
            tx,
            FitOptions(seed=0),
            progress=lambda what: rss.enter(FIT_STAGES[what]) if what in FIT_STAGES else None,
        )
        fit_wall = time.perf_counter() - fit_t0
        for name, seconds in result.meta["timings"].items():
            stage = FIT_STAGES[name]
            timings[stage] = timings.get(stage, 0.0) + seconds
        out = Path(tmp) / "fit"
        with timed(rss, "report", timings):
            write_artifacts(result, out, report=not args.no_report)
        fit_total = fit_wall + timings["report"]
        del tx
        rss.enter("between")
        if not args.no_publish:
            publish_stage(out, Path(tmp), rss, timings, args.batch_size, args.workers)

    print(f"\nmachine: {platform.processor() or platform.machine()}, "
          f"{psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM")  # fmt: skip
    print(f"chosen: {result.selection_sentence}")
    print(
        f"segments: {[(s.name, int(w)) for s, w in zip(result.model.segments, result.model.weights, strict=True)]}"
    )
    print(f"silhouette sample: {result.silhouette_sample_size}, selection sample: "
          f"{result.meta['selection_sample_size']}, nearest-centroid agreement: "
          f"{result.nearest_centroid_agreement:.3f}\n")  # fmt: skip
    print(f"load average at the end: {os.getloadavg()}")
    print("| stage | wall time (s) | CPU time (s) | peak RSS (GiB) |")
    print("|---|---:|---:|---:|")
    for stage in ("features", "model selection", "profiles", "report", "publish"):
        if stage in timings:
            print(f"| {stage} | {timings[stage]:.1f} | {rss.cpu.get(stage, 0):.1f} "
                  f"| {rss.peaks.get(stage, 0) / 2**30:.2f} |")  # fmt: skip
    peak = max(v for k, v in rss.peaks.items() if k not in ("publish", "done"))
    cpu = sum(
        v for k, v in rss.cpu.items() if k in ("features", "model selection", "profiles", "report")
    )
    print(f"| **fit total** (features..report) | **{fit_total:.1f}** | **{cpu:.1f}** "
          f"| **{peak / 2**30:.2f}** |")  # fmt: skip
    if "publish" in timings:
        rate = args.customers / timings["publish"]
        print(
            f"\npublish: {args.customers:,} customers in {timings['publish']:.1f} s = {rate:,.0f}/s"
        )


def publish_stage(
    out: Path, tmp: Path, rss: PeakRss, timings: dict[str, float], batch_size: int, workers: int
) -> None:
    import redis

    from offline.publish import publish
    from state.devstack import RedisServer
    from state.redis_store import RedisStore
    from state.registry import ModelRegistry

    server = RedisServer(workdir=tmp / "redis").start()
    try:
        client = redis.Redis.from_url(server.url)
        store = RedisStore(client, prefix="bench")
        with timed(rss, "publish", timings):
            summary = publish(
                out, store, ModelRegistry(client, prefix="bench"), batch_size=batch_size,
                workers=workers,
            )  # fmt: skip
        used = client.info("memory")["used_memory"]
        print(
            f"publish wrote {summary.written:,} customers; Redis used_memory {used / 2**20:.0f} MiB"
        )
        store.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
