"""``segstream offline publish``: a real Redis gets the model, every customer, the pointer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from offline.artifacts import read_model, read_states, write_artifacts
from offline.fit import FitOptions, fit
from state.cli import main
from state.redis_store import RedisStore
from state.registry import ModelRegistry

pytestmark = pytest.mark.integration
DAY = 86_400.0


@pytest.fixture
def fit_dir(tmp_path: Path) -> Path:
    rng = np.random.default_rng(5)
    n_customers, n_tx = 500, 4_000
    cust = rng.integers(0, n_customers, n_tx)
    heavy = cust < 150
    tx = pd.DataFrame(
        {
            "customer_id": [f"C{c:04d}" for c in cust],
            "type": np.where(rng.random(n_tx) < 0.03, "refund", "purchase"),
            "ts": 1.7e9 + rng.uniform(0, 365, n_tx) * DAY,
            "amount": np.round(np.where(heavy, 120.0, 25.0) * rng.lognormal(0, 0.3, n_tx), 2),
            "discount": np.round(np.where(heavy, 0.0, 3.0) * rng.random(n_tx), 2),
            "items": rng.integers(1, 4, n_tx),
        }
    )
    customers = pd.DataFrame(
        {"customer_id": [f"C{c:04d}" for c in range(n_customers)],
         "age": rng.integers(18, 80, n_customers), "gender": rng.choice(["F", "M"], n_customers)}
    )  # fmt: skip
    result = fit(
        customers, tx, FitOptions(k_range=(2, 3, 4), n_bootstrap=0, algorithms=("kmeans",))
    )
    write_artifacts(result, tmp_path, report=False)
    return tmp_path


def test_publish_seeds_every_customer_then_switches_the_pointer_and_is_rerunnable(
    fit_dir: Path, redis_url: str, redis_client, unique, capsys
) -> None:
    model = read_model(fit_dir)
    states = read_states(fit_dir)
    argv = ["offline", "publish", str(fit_dir), "--redis-url", redis_url,
            "--redis-prefix", unique.prefix, "--batch-size", "128"]  # fmt: skip
    assert main(argv) == 0
    assert f"published model {model.version} (new)" in capsys.readouterr().out

    registry = ModelRegistry(redis_client, prefix=unique.prefix)
    assert registry.current_version() == model.version
    assert registry.get(model.version) == model
    with RedisStore.from_url(redis_url, prefix=unique.prefix) as store:
        got = store.get_many(list(states.index))
        assert all(v is not None for v in got.values())
        c = got["C0001"]
        assert c.model_version == model.version and c.as_of == model.as_of
        assert c.state.orders == states.loc["C0001", "orders"]
        assert c.state.gross_cents == states.loc["C0001", "gross_cents"]
        assert (
            c.state.age == states.loc["C0001", "age"]
            and c.state.gender == states.loc["C0001", "gender"]
        )
        sizes = store.segment_sizes()
        assert sizes == {s.id: int(w) for s, w in zip(model.segments, model.weights, strict=True)}

        # re-running is harmless: same model accepted, same customers, same sizes
        assert main(argv) == 0
        assert "already in the registry" in capsys.readouterr().out
        assert store.segment_sizes() == sizes
        assert store.get("C0001") == c
    assert registry.current_version() == model.version


def test_forked_workers_publish_what_one_process_publishes(
    fit_dir: Path, redis_url: str, redis_client, unique
) -> None:
    """Two processes writing alternate batches leave the hashes (but for the write version
    ``_v``), the sizes and the index of one process; progress reaches the total."""
    from offline.publish import publish

    stores = {}
    for workers in (1, 2):
        seen: list[int] = []
        prefix = f"{unique.prefix}-w{workers}"
        store = RedisStore.from_url(redis_url, prefix=prefix)
        stores[workers] = store
        summary = publish(
            fit_dir, store, ModelRegistry(redis_client, prefix=prefix), batch_size=64,
            workers=workers, progress=lambda done, _total, seen=seen: seen.append(done),
        )  # fmt: skip
        assert summary.written == summary.customers == len(read_states(fit_dir))
        assert seen == sorted(seen) and seen[-1] == summary.customers  # one tick per batch
        assert len(seen) == -(-summary.customers // 64)
    one, two = stores[1], stores[2]
    for cid in read_states(fit_dir).index:
        a, b = one.raw_fields(cid), two.raw_fields(cid)
        assert {k: v for k, v in a.items() if k != "_v"} == {
            k: v for k, v in b.items() if k != "_v"
        }
    assert one.segment_sizes() == two.segment_sizes()
    assert one.idle_customers(2e9, limit=10_000) == two.idle_customers(2e9, limit=10_000)
    for store in stores.values():
        store.close()
    for workers in (1, 2):
        for key in redis_client.scan_iter(match=f"{unique.prefix}-w{workers}*", count=1000):
            redis_client.delete(key)


def test_a_failing_worker_fails_the_publish_and_leaves_the_pointer(
    fit_dir: Path, redis_url: str, redis_client, unique
) -> None:
    """A worker that cannot write (here: a Redis that refuses every command after the
    model went in) fails the publish; the current-model pointer is not switched."""
    from offline.publish import publish
    from state.errors import SegstreamError

    class Broken(RedisStore):
        def put_initial_columns(self, columns):  # type: ignore[no-untyped-def]
            raise ConnectionError("Redis went away")

    store = Broken.from_url(redis_url, prefix=unique.prefix)
    registry = ModelRegistry(redis_client, prefix=unique.prefix)
    with pytest.raises(SegstreamError, match="ConnectionError: Redis went away"):
        publish(fit_dir, store, registry, batch_size=64, workers=2)
    assert registry.current_version() is None
    store.close()
