"""Lookup client for downstream Python services: a customer's segment and features.

>>> client = SegmentClient("redis://localhost:6379/0", prefix="seg")  # connects on first use
>>> client.get("not a valid id")
Traceback (most recent call last):
...
state.errors.InvalidCustomerId: customer id must be 1-64 characters of [A-Za-z0-9._:-], got 'not a valid id'

``get`` answers ``None`` for a customer the store does not know; ``require`` raises
:class:`state.errors.UnknownCustomer` instead. Features include the derived values
(recency, rates brought forward, ...) evaluated at lookup time, with the half-life of the
model version that wrote the customer (models are immutable, so it is cached).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from types import TracebackType
from typing import Any

import redis

from state.errors import UnknownCustomer, UnknownSchemaVersion
from state.features import DEFAULT_HALF_LIFE_DAYS, CustomerState, FeatureValue, derive
from state.ids import validate_customer_id
from state.keys import DEFAULT_PREFIX
from state.redis_store import RedisStore
from state.registry import ModelRegistry, UnknownModelVersion
from state.store import StoredCustomer


@dataclass(frozen=True, kw_only=True)
class SegmentLookup:
    """A known customer's segment, with state and features evaluated at ``evaluated_at``."""

    customer_id: str
    segment_id: int | None
    segment_name: str | None
    model_version: str | None
    updated_at: float | None
    evaluated_at: float
    half_life_days: float
    features: dict[str, FeatureValue] = field(default_factory=dict)
    state: CustomerState = field(default_factory=CustomerState)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``known: true`` tells it from an unknown customer's answer)."""
        d = asdict(self)
        return {"known": True, **d}


def unknown_dict(customer_id: str) -> dict[str, Any]:
    """JSON form of the "unknown customer" answer.

    >>> unknown_dict("c9")
    {'known': False, 'customer_id': 'c9'}
    """
    return {"known": False, "customer_id": customer_id}


class SegmentClient:
    """Read customers' segments from the Redis written by segstream (schema v1).

    Extra keyword arguments go to :meth:`redis.Redis.from_url` (e.g.
    ``Settings.redis_client_options()``). ``half_life_days`` overrides the model's.
    """

    def __init__(
        self,
        redis_url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        half_life_days: float | None = None,
        clock: Callable[[], float] = time.time,
        **redis_options: Any,
    ) -> None:
        self.redis_url = redis_url
        self.prefix = prefix
        self.half_life_days = half_life_days
        self.clock = clock
        self.redis_options = redis_options
        self._client: redis.Redis | None = None
        self._store: RedisStore | None = None
        self._half_lives: dict[str, float] = {}

    # -- connection ---------------------------------------------------------------------------

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            self._client = redis.Redis.from_url(self.redis_url, **self.redis_options)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
            self._store = None

    def __enter__(self) -> SegmentClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- lookups ------------------------------------------------------------------------------

    def get(self, customer_id: str) -> SegmentLookup | None:
        """The customer's segment and features, or ``None`` if the customer is unknown."""
        return self.get_many([customer_id])[customer_id]

    def require(self, customer_id: str) -> SegmentLookup:
        """Like :meth:`get`, but raises :class:`UnknownCustomer` for an unknown customer."""
        found = self.get(customer_id)
        if found is None:
            raise UnknownCustomer(customer_id)
        return found

    def get_many(self, customer_ids: Sequence[str]) -> dict[str, SegmentLookup | None]:
        """Every asked customer (one round trip), ``None`` for unknown ones."""
        ids = [validate_customer_id(c) for c in customer_ids]  # before any I/O
        if self._store is None:
            self._store = RedisStore(self.client, prefix=self.prefix, remember=0)  # read-only
        stored = self._store.get_many(ids)
        at = float(self.clock())
        return {cid: None if s is None else self._lookup(s, at) for cid, s in stored.items()}

    def _lookup(self, s: StoredCustomer, at: float) -> SegmentLookup:
        half_life = self._half_life(s.model_version)
        return SegmentLookup(
            customer_id=s.customer_id,
            segment_id=s.segment_id,
            segment_name=s.segment_name,
            model_version=s.model_version,
            updated_at=s.updated_at,
            evaluated_at=at,
            half_life_days=half_life,
            features=derive(s.state, at, half_life_days=half_life),
            state=s.state,
        )

    def _half_life(self, model_version: str | None) -> float:
        if self.half_life_days is not None:
            return self.half_life_days
        if model_version is None:
            return DEFAULT_HALF_LIFE_DAYS
        if model_version not in self._half_lives:
            try:
                model = ModelRegistry(self.client, prefix=self.prefix).get(model_version)
                value = model.half_life_days
            except (UnknownModelVersion, UnknownSchemaVersion):
                value = DEFAULT_HALF_LIFE_DAYS
            self._half_lives[model_version] = value
        return self._half_lives[model_version]
