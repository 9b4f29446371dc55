"""Model registry, lookup client and the lookup/segments commands against a real Redis."""

from __future__ import annotations

import json
from typing import Any

import pytest

from state import keys as K
from state.cli import main
from state.devstack import free_port
from state.errors import InvalidCustomerId, UnknownCustomer, UnknownSchemaVersion
from state.features import CustomerState, derive
from state.lookup import SegmentClient
from state.model import SegmentModel
from state.redis_store import RedisStore, StoreError
from state.registry import ModelConflict, ModelRegistry, UnknownModelVersion
from state.store import CustomerSeed

pytestmark = pytest.mark.integration

NOW = 1_750_000_000.0


def model(
    version: str = "m1", *, half_life: float = 14.0, names: tuple[str, ...] = ("Low", "High")
) -> SegmentModel:
    return SegmentModel.from_dict(
        {
            "schema_version": 1, "version": version, "created_at": NOW, "as_of": NOW,
            "half_life_days": half_life, "features": ["orders", "gross"],
            "transforms": {"gross": "log1p"}, "imputation": {"orders": 0.0, "gross": 0.0},
            "scaler": {"kind": "none", "mean": [0.0, 0.0], "scale": [1.0, 1.0]},
            "centroids": [[0.0, 0.0], [10.0, 8.0]][: len(names)], "weights": [5.0, 5.0][: len(names)],
            "segments": [
                {"id": i + 1, "name": n, "description": f"{n} spenders"} for i, n in enumerate(names)
            ],
            "algorithm": "kmeans",
        }
    )  # fmt: skip


@pytest.fixture
def registry(redis_client: Any, unique: Any) -> ModelRegistry:
    return ModelRegistry(redis_client, prefix=unique.prefix)


STATE = CustomerState(
    orders=4, gross_cents=20000, discount_cents=1000, first_ts=NOW - 10 * 86400,
    last_ts=NOW - 86400, spend_decayed=15000.0, orders_decayed=3.0, decay_ts=NOW - 86400,
    age=33.0, gender="F",
)  # fmt: skip


def seed_customer(redis_url: str, prefix: str, cid: str = "C1", version: str = "m1") -> None:
    with RedisStore.from_url(redis_url, prefix=prefix) as store:
        store.put_initial_many(
            [
                CustomerSeed(
                    customer_id=cid, state=STATE, segment_id=2, segment_name="High",
                    model_version=version, updated_at=NOW - 60, as_of=NOW - 3600,
                )
            ]
        )  # fmt: skip


# -- registry ---------------------------------------------------------------------------------


def test_publishing_is_immutable_and_idempotent(registry: ModelRegistry) -> None:
    assert registry.publish(model("m1")) is True
    assert registry.publish(model("m1")) is False  # same content: fine
    with pytest.raises(ModelConflict):
        registry.publish(model("m1", half_life=7.0))
    assert registry.get("m1").to_dict() == model("m1").to_dict()
    registry.publish(model("m0"))
    assert registry.versions() == ["m0", "m1"]


def test_the_current_pointer_switches_only_to_loadable_models(
    registry: ModelRegistry, redis_client: Any, unique: Any
) -> None:
    assert registry.current() is None
    registry.publish(model("m1"))
    registry.set_current("m1")
    assert registry.current_version() == "m1"
    with pytest.raises(UnknownModelVersion):
        registry.set_current("m9")
    future = {**model("m2").to_dict(), "schema_version": 2}
    redis_client.set(K.Keys(unique.prefix).model("m2"), json.dumps(future))
    with pytest.raises(UnknownSchemaVersion):
        registry.get("m2")
    with pytest.raises(UnknownSchemaVersion):
        registry.set_current("m2")
    assert registry.current().version == "m1"  # type: ignore[union-attr]


def test_segments_show_current_metadata_with_live_sizes(
    registry: ModelRegistry, redis_url: str, unique: Any
) -> None:
    registry.publish(model("m1"))
    registry.set_current("m1")
    seed_customer(redis_url, unique.prefix, "C1")
    seed_customer(redis_url, unique.prefix, "C2")
    view = registry.segments()
    assert view.current_model_version == view.metadata_model_version == "m1"
    assert [(s.id, s.name, s.description, s.size) for s in view.segments] == [
        (1, "Low", "Low spenders", 0),
        (2, "High", "High spenders", 2),
    ]
    registry.publish(model("m2", names=("Only",)))
    registry.set_current("m2")
    view = registry.segments()
    assert [s.name for s in view.segments] == ["Only"]
    assert view.orphan_sizes == {2: 2}  # customers still in a segment m2 does not have


# -- lookup client ----------------------------------------------------------------------------


def test_lookup_returns_segment_and_features_derived_now(
    registry: ModelRegistry, redis_url: str, unique: Any
) -> None:
    registry.publish(model("m1", half_life=14.0))
    seed_customer(redis_url, unique.prefix)
    with SegmentClient(redis_url, prefix=unique.prefix, clock=lambda: NOW) as client:
        hit = client.get("C1")
        assert hit is not None
        assert (hit.segment_id, hit.segment_name, hit.model_version) == (2, "High", "m1")
        assert hit.updated_at == NOW - 60 and hit.evaluated_at == NOW
        assert hit.half_life_days == 14.0
        assert hit.state == STATE
        assert hit.features == derive(STATE, NOW, half_life_days=14.0)
        assert hit.features["recency_days"] == 1.0
        assert client.get("nobody") is None
        with pytest.raises(UnknownCustomer):
            client.require("nobody")
        many = client.get_many(["C1", "nobody"])
        assert many["nobody"] is None and many["C1"] == hit
        assert json.loads(json.dumps(hit.to_dict()))["known"] is True


def test_invalid_ids_fail_cleanly_before_any_redis_call() -> None:
    client = SegmentClient(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(InvalidCustomerId):
        client.get("no spaces allowed")
    with pytest.raises(InvalidCustomerId):
        client.get_many(["ok", "x" * 65])
    with pytest.raises(StoreError):
        client.get("ok")


# -- the commands -----------------------------------------------------------------------------


def test_lookup_command_text_and_json(
    registry: ModelRegistry, redis_url: str, unique: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    registry.publish(model("m1"))
    seed_customer(redis_url, unique.prefix)
    flags = ["--redis-url", redis_url, "--redis-prefix", unique.prefix]
    assert main(["lookup", "C1", "C404", *flags]) == 0
    text = capsys.readouterr().out
    assert "C1  segment=2 name='High' model=m1" in text
    assert "C404  unknown customer" in text
    assert main(["lookup", "C1", "C404", "--json", *flags]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["known"] for r in rows] == [True, False]
    assert rows[0]["segment_name"] == "High" and rows[0]["features"]["orders"] == 4.0


def test_segments_command_text_and_json(
    registry: ModelRegistry, redis_url: str, unique: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    registry.publish(model("m1"))
    registry.set_current("m1")
    seed_customer(redis_url, unique.prefix)
    flags = ["--redis-url", redis_url, "--redis-prefix", unique.prefix]
    assert main(["segments", *flags]) == 0
    text = capsys.readouterr().out
    assert "current model: m1" in text
    assert any(line.split()[:3] == ["2", "High", "1"] for line in text.splitlines())
    assert main(["segments", "--json", *flags]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["current_model_version"] == "m1"
    assert [(s["id"], s["size"]) for s in data["segments"]] == [(1, 0), (2, 1)]


def test_commands_fail_with_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    down = ["--redis-url", f"redis://127.0.0.1:{free_port()}/0"]
    assert main(["lookup", "bad id", *down]) == 1
    assert "customer id must be" in capsys.readouterr().err
    assert main(["lookup", "C1", *down]) == 1
    err = capsys.readouterr().err
    assert err.startswith("segstream: error: Redis error") and "Traceback" not in err
    assert main(["segments", *down]) == 1
    assert "Redis error" in capsys.readouterr().err
