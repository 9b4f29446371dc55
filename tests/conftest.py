"""Shared fixtures: a real Redis and a real Kafka-protocol broker, chosen once per session.

Backend order, for each of Kafka and Redis independently:

1. ``KAFKA_BOOTSTRAP_SERVERS`` / ``REDIS_URL`` in the environment: used as given.
2. testcontainers (Kafka in KRaft mode, Redis) when a Docker engine answers.
3. Local processes from :mod:`state.devstack`: the Tansu broker and ``redis-server``.

Servers start lazily, the first time an integration test asks, and stop at session end.
The header of the run says which backend was chosen, the summary what actually ran.

Per-test helpers: ``unique`` (uuid-scoped topic, group and key-prefix names),
``redis_client`` (keys under ``unique.prefix`` are deleted afterwards), ``create_topic``,
``settings`` (a :class:`~state.config.Settings` pointing at the test servers, with unique
names), and ``restartable_redis`` (a private ``redis-server`` a test may stop and start).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from state.config import KAFKA_SECURITY, REDIS_SECURITY, Settings, env_names, mask_url
from state.devstack import RedisServer, TansuBroker, wait_until

logger = logging.getLogger(__name__)

# Tansu makes a consumer-group join wait about half of session_timeout_ms (see
# docs/development.md): tests use a short session so the first poll returns in ~3 s.
CONSUMER_GROUP_OPTIONS: dict[str, Any] = {
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 2000,
}


@dataclass
class Backend:
    """Where one server comes from, and how to reach it once started."""

    kind: str  # "redis" or "kafka"
    source: str  # "env", "docker" or "local"
    address: str = ""
    detail: str = ""
    _stop: Callable[[], None] | None = field(default=None, repr=False)

    def describe(self) -> str:
        return f"{self.kind}: {self.source} {self.detail} {mask_url(self.address)}".rstrip()


_STARTED: dict[str, Backend] = {}


def _docker_answers() -> bool:
    """True if a Docker engine answers a ping (cheap no when there is no socket)."""
    host = os.environ.get("DOCKER_HOST", "")
    if not host and not Path("/var/run/docker.sock").exists():
        return False
    try:
        import docker

        return bool(docker.from_env(timeout=3).ping())
    except Exception as exc:  # any failure means "no usable engine"
        logger.info("docker not usable: %s", exc)
        return False


def _choice(env_name: str) -> str:
    if os.environ.get(env_name):
        return "env"
    return "docker" if _docker_answers() else "local"


_CHOICE: dict[str, str] = {}


def _backend_choice(kind: str) -> str:
    if kind not in _CHOICE:
        _CHOICE[kind] = _choice("REDIS_URL" if kind == "redis" else "KAFKA_BOOTSTRAP_SERVERS")
    return _CHOICE[kind]


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [
        "segstream backends (started lazily, only if an integration test needs them): "
        f"redis={_backend_choice('redis')} kafka={_backend_choice('kafka')}"
    ]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _STARTED:
        terminalreporter.write_line("segstream backends: none started (no integration test ran)")
        return
    for backend in _STARTED.values():
        terminalreporter.write_line(f"segstream backend used: {backend.describe()}")


# For servers given in the environment, their security settings are carried over too (your
# own Kafka/Redis may need SASL, TLS or a password); nothing else is, so tunables in your
# shell cannot bend the tests, and servers the fixtures start get no security at all.
_SECURITY = {"kafka": KAFKA_SECURITY, "redis": REDIS_SECURITY}


@pytest.fixture(scope="session")
def client_security() -> Settings:
    """Settings holding only the security options, from the environment, of env backends."""
    names = env_names()
    wanted = {
        names[name]
        for kind, fields in _SECURITY.items()
        if _backend_choice(kind) == "env"
        for name in fields
    }
    return Settings.from_env({k: v for k, v in os.environ.items() if k in wanted})


@pytest.fixture(scope="session")
def devstack_dir() -> Iterator[Path]:
    """A private directory for the logs and data of locally started servers."""
    path = Path(tempfile.mkdtemp(prefix="segstream-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url(devstack_dir: Path) -> Iterator[str]:
    """URL of the session's Redis (env, testcontainers or a local redis-server)."""
    source = _backend_choice("redis")
    if source == "env":
        backend = Backend("redis", "env", os.environ["REDIS_URL"], "REDIS_URL")
    elif source == "docker":  # pragma: no cover - no Docker engine on our machines
        from testcontainers.community.redis import RedisContainer

        container = RedisContainer("redis:7").start()
        host, port = container.get_container_host_ip(), container.get_exposed_port(6379)
        backend = Backend("redis", "docker", f"redis://{host}:{port}/0", "redis:7", container.stop)
    else:
        server = RedisServer(workdir=devstack_dir / "redis").start()
        backend = Backend(
            "redis", "local", server.url, f"redis-server pid={server.pid}", server.stop
        )
    _STARTED["redis"] = backend
    yield backend.address
    if backend._stop is not None:
        backend._stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(devstack_dir: Path) -> Iterator[str]:
    """Bootstrap servers of the session's broker (env, testcontainers or local Tansu)."""
    source = _backend_choice("kafka")
    if source == "env":
        addr = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
        backend = Backend("kafka", "env", addr, "KAFKA_BOOTSTRAP_SERVERS")
    elif source == "docker":  # pragma: no cover - no Docker engine on our machines
        from testcontainers.community.kafka import KafkaContainer

        container = KafkaContainer("confluentinc/cp-kafka:7.6.0").with_kraft().start()
        addr = container.get_bootstrap_server()
        backend = Backend("kafka", "docker", addr, "cp-kafka 7.6 KRaft", container.stop)
    else:
        broker = TansuBroker(workdir=devstack_dir / "kafka").start()
        backend = Backend(
            "kafka", "local", broker.bootstrap, f"tansu pid={broker.pid}", broker.stop
        )
    _STARTED["kafka"] = backend
    yield backend.address
    if backend._stop is not None:
        backend._stop()


@pytest.fixture(scope="session")
def kafka_is_tansu() -> bool:
    """True when the broker is the local Tansu (tests may design around its quirks)."""
    return _backend_choice("kafka") == "local"


class Unique:
    """uuid-scoped names for one test: topics, consumer groups, Redis key prefixes.

    >>> u = Unique("test_x[1]")
    >>> u.topic.startswith("t-test-x-1-") and u.topic != Unique("test_x[1]").topic
    True
    >>> u("dlq").startswith("dlq-test-x-1-")
    True
    """

    def __init__(self, test_name: str) -> None:
        slug = re.sub(r"[^a-z0-9]+", "-", test_name.lower()).strip("-")[:40]
        self.token = f"{slug}-{uuid.uuid4().hex[:10]}"

    def __call__(self, kind: str) -> str:
        return f"{kind}-{self.token}"

    @property
    def topic(self) -> str:
        return self("t")

    @property
    def group(self) -> str:
        return self("g")

    @property
    def prefix(self) -> str:
        """A Redis key prefix (no trailing separator)."""
        return self("p")


@pytest.fixture
def unique(request: pytest.FixtureRequest) -> Unique:
    return Unique(request.node.name)


@pytest.fixture
def redis_client(redis_url: str, unique: Unique, client_security: Settings) -> Iterator[Any]:
    """A ``redis.Redis`` (bytes replies) on the session's Redis; cleans ``unique.prefix*``."""
    import redis

    client = redis.Redis.from_url(redis_url, **client_security.redis_client_options())
    yield client
    keys = list(client.scan_iter(match=f"{unique.prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str, client_security: Settings) -> Iterator[Any]:
    from kafka import KafkaAdminClient

    options = client_security.replace(
        kafka_bootstrap_servers=kafka_bootstrap
    ).kafka_client_options()
    admin = KafkaAdminClient(client_id="segstream-tests", **options)
    yield admin
    admin.close()


@pytest.fixture
def create_topic(kafka_admin: Any) -> Callable[..., str]:
    """``create_topic(name, partitions=1) -> name``; returns once the topic is listed."""
    from kafka.admin import NewTopic

    def create(name: str, partitions: int = 1) -> str:
        kafka_admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        if not wait_until(lambda: name in kafka_admin.list_topics(), timeout=10.0, interval=0.05):
            raise TimeoutError(f"topic {name} not listed 10 s after creation")
        return name

    return create


@pytest.fixture(scope="session")
def consumer_group_options() -> dict[str, Any]:
    """kafka-python consumer options that keep group joins short (~3 s on Tansu)."""
    return dict(CONSUMER_GROUP_OPTIONS)


@pytest.fixture
def make_consumer(kafka_bootstrap: str, client_security: Settings) -> Iterator[Callable[..., Any]]:
    """``make_consumer(*topics, group_id=..., **opts)``: a ``KafkaConsumer`` with short
    group timeouts, manual commit and ``earliest`` reset; closed after the test."""
    from kafka import KafkaConsumer

    made: list[Any] = []

    def make(*topics: str, **opts: Any) -> Any:
        options = {
            **client_security.replace(
                kafka_bootstrap_servers=kafka_bootstrap
            ).kafka_client_options(),
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            **CONSUMER_GROUP_OPTIONS,
            **opts,
        }
        consumer = KafkaConsumer(*topics, **options)
        made.append(consumer)
        return consumer

    yield make
    for consumer in made:
        consumer.close(autocommit=False)


def poll_records(consumer: Any, count: int, timeout: float = 30.0) -> list[Any]:
    """Poll until ``count`` records arrived (drained is judged from the data, not from lag,
    which Tansu reports one batch late); raise ``TimeoutError`` with what did arrive."""
    records: list[Any] = []

    def enough() -> bool:
        for batch in consumer.poll(timeout_ms=200).values():
            records.extend(batch)
        return len(records) >= count

    if not wait_until(enough, timeout, interval=0):
        raise TimeoutError(f"{len(records)} of {count} records within {timeout} s")
    return records


@pytest.fixture(name="poll_records")
def poll_records_fixture() -> Callable[..., list[Any]]:
    """:func:`poll_records` as a fixture: ``poll_records(consumer, count, timeout=30)``."""
    return poll_records


@pytest.fixture
def settings(
    kafka_bootstrap: str, redis_url: str, unique: Unique, client_security: Settings
) -> Settings:
    """Settings on the test servers with this test's own topics, group and key prefix."""
    return client_security.replace(
        kafka_bootstrap_servers=kafka_bootstrap,
        redis_url=redis_url,
        events_topic=unique("events"),
        dlq_topic=unique("dlq"),
        changes_topic=unique("changes"),
        group_id=unique.group,
        redis_prefix=unique.prefix,
    )


@pytest.fixture
def restartable_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private ``redis-server`` (local process) a test may ``stop()``/``start()``/``restart()``
    on the same port; its URL is ``.url``."""
    server = RedisServer(workdir=tmp_path / "redis").start()
    yield server
    server.stop()
