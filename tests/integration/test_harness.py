"""The harness itself: real servers answer, names are unique, Redis can restart in place."""

from __future__ import annotations

import pytest

from state.devstack import RedisServer, kafka_api_versions_ok, redis_ping

pytestmark = pytest.mark.integration


def test_kafka_bootstrap_answers_api_versions(kafka_bootstrap: str) -> None:
    host, port = kafka_bootstrap.split(",")[0].rsplit(":", 1)
    assert kafka_api_versions_ok(host, int(port))


def test_redis_client_round_trips_under_the_unique_prefix(redis_client, unique) -> None:
    key = f"{unique.prefix}:hello"
    redis_client.set(key, b"world")
    assert redis_client.get(key) == b"world"


def test_unique_names_differ_between_tests(unique) -> None:
    assert len({unique.topic, unique.group, unique.prefix}) == 3


def test_restartable_redis_keeps_its_port_and_loses_memory(
    restartable_redis: RedisServer,
) -> None:
    import redis

    client = redis.Redis.from_url(restartable_redis.url)
    client.set("k", "v")
    port = restartable_redis.port
    restartable_redis.stop()
    assert not redis_ping(port)
    restartable_redis.start()
    assert restartable_redis.port == port
    assert client.get("k") is None  # no persistence: a restart starts empty
    client.close()
