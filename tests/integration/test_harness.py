"""The harness itself: real servers answer, names are unique, Redis can restart in place."""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from state.devstack import (
    RedisServer,
    ServerProcess,
    kafka_api_versions_ok,
    process_identity,
    redis_ping,
)
from state.devstack_cli import load_state
from state.errors import DevStackError

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


class _Silent(ServerProcess):
    """A process that runs but never answers: exercises the readiness timeout."""

    kind = "silent"

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-c",
            "import time; print('no protocol here', flush=True); time.sleep(60)",
        ]

    def ping(self) -> bool:
        return False


def test_readiness_timeout_names_the_server_shows_its_log_and_leaves_no_process(
    tmp_path: Path,
) -> None:
    server = _Silent(workdir=tmp_path)
    with pytest.raises(DevStackError, match="did not answer") as raised:
        server.start(timeout=0.5)
    assert "no protocol here" in str(raised.value)
    assert server.pid is None and not server.is_running()


def test_a_taken_port_fails_fast_with_the_server_log(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        server = RedisServer(port=holder.getsockname()[1], workdir=tmp_path)
        with pytest.raises(DevStackError, match="exited before answering") as raised:
            server.start(timeout=10)
    assert "in use" in str(raised.value).lower()


def test_stop_never_signals_a_pid_that_is_another_process_now(tmp_path: Path) -> None:
    server = RedisServer(workdir=tmp_path)
    server.adopt({"pid": os.getpid(), "identity": "proc:0", "port": 1})  # our PID, not its start
    assert not server.is_running()
    server.stop()  # must not SIGTERM the test process
    assert process_identity(os.getpid()) is not None


# -- segstream dev: the real CLI, and outside clients against what it started ----------------


def _segstream() -> list[str]:
    script = Path(sys.executable).with_name("segstream")
    return [str(script)] if script.exists() else [sys.executable, "-m", "state.cli"]


def _dev(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_segstream(), "--log-level", "WARNING", "dev", *args, "--state-dir", str(state_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _exports(stdout: str) -> dict[str, str]:
    env = {}
    for line in stdout.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = shlex.split(value)[0]
    return env


def _librdkafka_round_trip(bootstrap: str) -> tuple[bytes | None, bytes | None]:
    """Create and list a topic, produce and consume one message with librdkafka.

    The clients live only inside this function: Tansu waits ~5 s for open connections
    when stopped, so they must be gone before ``dev down``.
    """
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    conf: dict[str, str | int | float | bool] = {"bootstrap.servers": bootstrap}
    admin = AdminClient(conf)
    topic = f"interop-{uuid.uuid4().hex[:8]}"
    for future in admin.create_topics([NewTopic(topic, num_partitions=1)]).values():
        future.result(10)
    assert topic in admin.list_topics(timeout=10).topics
    producer = Producer(conf)
    producer.produce(topic, key=b"cust-1", value=b'{"hello": "tansu"}')
    assert producer.flush(10) == 0
    consumer = Consumer({**conf, "group.id": topic, "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    message = None
    deadline = time.monotonic() + 20
    while message is None and time.monotonic() < deadline:
        message = consumer.poll(0.2)
    consumer.close()
    assert message is not None and message.error() is None
    return message.key(), message.value()


def test_dev_up_serves_outside_clients_and_dev_down_leaves_nothing(tmp_path: Path) -> None:
    state_dir = tmp_path / "dev"
    up = _dev(state_dir, "up", "--redis-password", "s3cret")
    assert up.returncode == 0, up.stderr
    env = _exports(up.stdout)
    assert sorted(env) == ["KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL"]  # stdout is only exports
    pids = [
        record["pid"]
        for record in (load_state(state_dir / "dev.json")).values()
        if isinstance(record, dict)
    ]
    try:
        again = _dev(state_dir, "up")  # reuses the running servers
        assert again.returncode == 0 and again.stdout == up.stdout, again.stderr
        assert _dev(state_dir, "status").returncode == 0

        assert _librdkafka_round_trip(env["KAFKA_BOOTSTRAP_SERVERS"]) == (
            b"cust-1",
            b'{"hello": "tansu"}',
        )
        pong = subprocess.run(
            ["redis-cli", "-u", env["REDIS_URL"], "ping"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert pong.stdout.strip() == "PONG", pong.stderr
    finally:
        down = _dev(state_dir, "down")
    assert down.returncode == 0, down.stderr
    assert [process_identity(pid) for pid in pids] == [None, None]  # gone (zombie at most)
    assert _dev(state_dir, "status").returncode == 1
    assert not (state_dir / "dev.json").exists()
