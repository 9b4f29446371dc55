"""A real Redis: pipelined hash writes with TTL read back in one round trip."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.integration


def test_pipelined_hash_with_ttl_round_trips(redis_client: Any, unique: Any) -> None:
    keys = [f"{unique.prefix}:customer:{i}" for i in range(3)]
    with redis_client.pipeline(transaction=False) as pipe:
        for i, key in enumerate(keys):
            pipe.hset(key, mapping={"segment": str(i), "score": f"{i / 2}"})
            pipe.expire(key, 3600)
        pipe.execute()

    with redis_client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hgetall(key)
            pipe.ttl(key)
        replies = pipe.execute()

    hashes, ttls = replies[0::2], replies[1::2]
    assert hashes == [
        {b"segment": str(i).encode(), b"score": f"{i / 2}".encode()} for i in range(3)
    ]
    assert all(0 < ttl <= 3600 for ttl in ttls)


def test_settings_fixture_points_at_the_test_servers(
    settings: Any, redis_url: str, unique: Any
) -> None:
    import redis

    assert settings.redis_url == redis_url
    assert settings.redis_prefix == unique.prefix
    assert settings.group_id == unique.group
    client = redis.Redis.from_url(settings.redis_url, **settings.redis_client_options())
    try:
        assert client.ping() is True
    finally:
        client.close()
