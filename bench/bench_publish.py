"""Benchmark of ``offline publish`` alone (not a test): seeds/s, client and Redis CPU per seed.

Fits a synthetic data set once (``bench_offline.synthetic_transactions``, no report) into
``--fit-dir`` (reused when it already holds a fit), then publishes it ``--repeat`` times,
each into a fresh ``redis-server`` started here. With ``--baseline TREE`` (another checkout
of segstream, e.g. ``git archive HEAD | tar -x -C /tmp/base``) the two trees publish in turn,
so both see the same machine load. Each publish runs in a subprocess of its tree's code;
client CPU is that process's CPU time (building the seeds + the store; with ``--workers``
> 1 the forked writers' CPU is not in it), Redis CPU is ``INFO cpu``. A baseline tree whose
``publish`` has no ``workers`` argument needs ``--workers 1``.

Run: ``.venv/bin/python bench/bench_publish.py --customers 200000 --baseline /tmp/base``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import redis
from offline.publish import publish
from state.redis_store import RedisStore
from state.registry import ModelRegistry
client = redis.Redis.from_url(sys.argv[3])
cpu0, t0 = time.process_time(), time.perf_counter()
summary = publish(sys.argv[2], RedisStore(client, prefix="bench"), ModelRegistry(client, prefix="bench"),
                  workers=int(sys.argv[4]))
print(json.dumps({"wall": time.perf_counter() - t0, "cpu": time.process_time() - cpu0,
                  "customers": summary.customers, "written": summary.written}))
"""


def ensure_fit(fit_dir: Path, customers: int, transactions: int) -> None:
    if (fit_dir / "states.parquet").exists():
        return
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_offline import synthetic_transactions

    from offline.artifacts import write_artifacts
    from offline.fit import FitOptions, fit

    result = fit(None, synthetic_transactions(customers, transactions), FitOptions(seed=0))
    write_artifacts(result, fit_dir, report=False)


def publish_once(tree: Path, fit_dir: Path, workers: int = 1) -> dict[str, float]:
    import redis

    from state.devstack import RedisServer

    with tempfile.TemporaryDirectory(prefix="bench-publish-") as tmp:
        server = RedisServer(workdir=Path(tmp)).start()
        try:
            client: Any = redis.Redis.from_url(server.url)
            info = client.info("cpu")
            srv0 = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(tree), str(fit_dir), server.url, str(workers)],
                check=True, capture_output=True, text=True, cwd=tree,
            )  # fmt: skip
            got = json.loads(out.stdout.strip().splitlines()[-1])
            info = client.info("cpu")
            got["redis"] = float(info["used_cpu_user"]) + float(info["used_cpu_sys"]) - srv0
            got["used_memory"] = float(client.info("memory")["used_memory"])
            client.close()
            return got
        finally:
            server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=200_000)
    parser.add_argument("--transactions", type=int, default=0, help="default: 20 per customer")
    parser.add_argument(
        "--fit-dir", type=Path, default=Path(tempfile.gettempdir()) / "segstream-publish-fit"
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--workers", type=int, default=2, help="publish processes (the CLI's default)"
    )
    parser.add_argument("--baseline", type=Path, help="another segstream tree to compare with")
    args = parser.parse_args()
    ensure_fit(args.fit_dir, args.customers, args.transactions or 20 * args.customers)
    trees = {"this tree": ROOT} | ({"baseline": args.baseline} if args.baseline else {})
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for r in range(args.repeat):
        names = list(trees)[r % len(trees) :] + list(trees)[: r % len(trees)]
        for name in names:
            runs[name].append(publish_once(trees[name], args.fit_dir, args.workers))
            print(f"  {name}: {runs[name][-1]}  load {os.getloadavg()[0]:.1f}", flush=True)
    for name, got in runs.items():
        n = got[0]["customers"]
        wall = statistics.median(g["wall"] for g in got)
        cpu = statistics.median(g["cpu"] for g in got) / n * 1e6
        srv = statistics.median(g["redis"] for g in got) / n * 1e6
        mem = statistics.median(g["used_memory"] for g in got) / n
        print(
            f"{name}: {n:,} customers, median of {len(got)}: {n / wall:,.0f} customers/s, "
            f"CPU per customer: client {cpu:.1f} us, redis {srv:.1f} us; "
            f"used_memory {mem:.0f} bytes/customer (incl. index)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
