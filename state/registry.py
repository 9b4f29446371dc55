"""The model registry in Redis: immutable published versions and an atomic current pointer.

* ``<prefix>:v1:model:<version>``: the model's JSON, written once (``SET NX``); publishing
  a different model under an existing version is refused (:class:`ModelConflict`).
* ``<prefix>:v1:model:current``: the current version, switched by one ``SET``.
* ``<prefix>:v1:models``: set of published versions.
* ``<prefix>:v1:segments``: the current model's segment metadata (``meta:<id>``) next to
  the live sizes (``size:<id>``) that the store keeps, readable with one ``HGETALL``.

A model whose ``schema_version`` this code does not know is refused on load
(:class:`state.errors.UnknownSchemaVersion`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from state import keys as K
from state.errors import SegstreamError
from state.model import SegmentModel
from state.redis_store import StoreError


class ModelConflict(SegstreamError):
    """A different model is already published under this version (versions are immutable)."""


class UnknownModelVersion(SegstreamError, KeyError):
    """No model is published under this version."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


def canonical_json(model: SegmentModel) -> str:
    """The stored form of a model: sorted keys, no spaces (byte-identical on re-publish)."""
    return json.dumps(model.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True, kw_only=True)
class SegmentInfo:
    """One segment as ``segstream segments`` shows it."""

    id: int
    name: str
    description: str = ""
    action: str = ""
    size: int = 0


@dataclass(frozen=True, kw_only=True)
class SegmentsView:
    """Segment metadata and live sizes, read in one round trip."""

    current_model_version: str | None
    metadata_model_version: str | None
    segments: tuple[SegmentInfo, ...] = ()
    orphan_sizes: dict[int, int] = field(default_factory=dict)  # sizes of ids not in metadata

    def to_dict(self) -> dict[str, Any]:
        return {
            "current_model_version": self.current_model_version,
            "metadata_model_version": self.metadata_model_version,
            "segments": [vars(s) for s in self.segments],
            "orphan_sizes": {str(k): v for k, v in self.orphan_sizes.items()},
        }


def _sync(reply: Any) -> Any:
    """A reply of the synchronous client (redis-py types every reply as maybe-awaitable)."""
    return reply


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


class ModelRegistry:
    """Published models and the current pointer, under ``prefix`` (schema v1)."""

    def __init__(self, client: redis.Redis, *, prefix: str = K.DEFAULT_PREFIX) -> None:
        self.client = client
        self.prefix = prefix
        self._keys = K.Keys(prefix)

    def publish(self, model: SegmentModel) -> bool:
        """Store ``model`` under its version; True if new, False if the same was there.

        Raises :class:`ModelConflict` if a different model holds that version.
        """
        key = self._keys.model(model.version)
        body = canonical_json(model)
        try:
            created = bool(self.client.set(key, body, nx=True))
            self.client.sadd(self._keys.models, model.version)
            if created:
                return True
            existing = _text(_sync(self.client.get(key)))
        except redis.RedisError as exc:
            raise StoreError(f"Redis error publishing model {model.version}: {exc}") from exc
        if existing != body:
            raise ModelConflict(
                f"model version {model.version!r} is already published with different content; "
                "publish under a new version"
            )
        return False

    def get(self, version: str) -> SegmentModel:
        """The model published as ``version`` (UnknownModelVersion, UnknownSchemaVersion)."""
        try:
            raw = _sync(self.client.get(self._keys.model(version)))
        except redis.RedisError as exc:
            raise StoreError(f"Redis error reading model {version}: {exc}") from exc
        if raw is None:
            raise UnknownModelVersion(f"no model published as version {version!r}")
        return SegmentModel.from_dict(json.loads(raw))

    def current_version(self) -> str | None:
        try:
            return _text(_sync(self.client.get(self._keys.model_current)))
        except redis.RedisError as exc:
            raise StoreError(f"Redis error reading the current model: {exc}") from exc

    def current(self) -> SegmentModel | None:
        """The current model, or None when no model was made current yet."""
        version = self.current_version()
        return None if version is None else self.get(version)

    def versions(self) -> list[str]:
        """Every published version, sorted."""
        try:
            return sorted(_text(v) or "" for v in _sync(self.client.smembers(self._keys.models)))
        except redis.RedisError as exc:
            raise StoreError(f"Redis error listing models: {exc}") from exc

    def set_current(self, version: str) -> SegmentModel:
        """Make a published, loadable ``version`` current (one atomic ``SET``).

        Then rewrites the segment metadata from that model (idempotent; live sizes kept).
        """
        model = self.get(version)  # refuses unknown versions and schema versions first
        seg_key = self._keys.segments
        try:
            self.client.set(self._keys.model_current, model.version)
            meta = {
                K.segment_meta_field(s.id): json.dumps(
                    {"id": s.id, "name": s.name, "description": s.description, "action": s.action},
                    sort_keys=True,
                )
                for s in model.segments
            }
            stale = [
                f
                for f in (_text(x) or "" for x in _sync(self.client.hkeys(seg_key)))
                if f.startswith(K.SEGMENT_META_PREFIX) and f not in meta
            ]
            pipe = self.client.pipeline(transaction=False)
            if stale:
                pipe.hdel(seg_key, *stale)
            pipe.hset(seg_key, mapping={K.SEGMENTS_MODEL_FIELD: model.version, **meta})
            pipe.execute()
        except redis.RedisError as exc:
            raise StoreError(f"Redis error switching the current model: {exc}") from exc
        return model

    def segments(self) -> SegmentsView:
        """Segment metadata, live sizes and the current model version (one round trip)."""
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.get(self._keys.model_current)
            pipe.hgetall(self._keys.segments)
            current, fields = pipe.execute()
        except redis.RedisError as exc:
            raise StoreError(f"Redis error reading segments: {exc}") from exc
        return segments_view(
            _text(current), {_text(k) or "": _text(v) or "" for k, v in fields.items()}
        )


def segments_view(current: str | None, fields: Mapping[str, str]) -> SegmentsView:
    """Decode the segments hash.

    >>> v = segments_view("m2", {"model_version": "m2", "size:1": "5", "size:9": "2",
    ...     "meta:1": '{"id": 1, "name": "Loyal", "description": "", "action": ""}'})
    >>> [(s.id, s.name, s.size) for s in v.segments], v.orphan_sizes
    ([(1, 'Loyal', 5)], {9: 2})
    """
    sizes = {
        int(f[len(K.SEGMENT_SIZE_PREFIX) :]): int(v)
        for f, v in fields.items()
        if f.startswith(K.SEGMENT_SIZE_PREFIX)
    }
    infos = []
    for f, v in fields.items():
        if f.startswith(K.SEGMENT_META_PREFIX):
            meta = json.loads(v)
            sid = int(meta["id"])
            infos.append(
                SegmentInfo(
                    id=sid,
                    name=str(meta.get("name", "")),
                    description=str(meta.get("description", "")),
                    action=str(meta.get("action", "")),
                    size=sizes.pop(sid, 0),
                )
            )
    return SegmentsView(
        current_model_version=current,
        metadata_model_version=fields.get(K.SEGMENTS_MODEL_FIELD),
        segments=tuple(sorted(infos, key=lambda s: s.id)),
        orphan_sizes={k: v for k, v in sorted(sizes.items()) if v},
    )
