"""`segstream consume` as a process: kill -9 mid-stream, SIGTERM, restart; still equal."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaAdminClient

from state.config import Settings
from state.devstack import wait_until
from tests.consumer_support import World, make_world
from tests.integration.test_consumer_e2e import assert_redis_equals_batch, keyed, produce, publish

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world() -> World:
    return make_world(customers=1000, events=12_000, seed=21)


def segstream() -> list[str]:
    script = Path(sys.executable).with_name("segstream")
    return [str(script)] if script.exists() else [sys.executable, "-m", "state.cli"]


def start(settings: Settings, log: Path, *extra: str) -> subprocess.Popen[str]:
    args = [
        *segstream(),
        "--log-level", "INFO",
        "consume",
        "--bootstrap-servers", settings.kafka_bootstrap_servers,
        "--redis-url", settings.redis_url,
        "--redis-prefix", settings.redis_prefix,
        "--events-topic", settings.events_topic,
        "--dlq-topic", settings.dlq_topic,
        "--changes-topic", settings.changes_topic,
        "--group-id", settings.group_id,
        "--metrics-port", "0",
        "--max-poll-records", "250",
        "--session-timeout-ms", "6000",
        *extra,
    ]  # fmt: skip
    return subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=log.open("a"), text=True, start_new_session=True
    )


def committed(admin: KafkaAdminClient, group: str) -> int:
    offsets = admin.list_group_offsets(group).get(group) or {}
    return sum(max(o.offset, 0) for o in offsets.values())


def test_kill_9_sigterm_and_restarts_leave_redis_as_if_each_event_applied_once(
    settings: Settings, world: World, create_topic: Callable[..., str], tmp_path: Path
) -> None:
    create_topic(settings.events_topic, 3)
    store = publish(settings, world)
    produce(settings, keyed(world.stream))
    total = len(world.stream)
    log = tmp_path / "consumer.log"
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    try:
        # 1. kill -9 once a quarter is committed
        proc = start(settings, log)
        assert wait_until(lambda: committed(admin, settings.group_id) >= total // 4, 60, 0.02), (
            log.read_text()[-3000:]
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        at_kill = committed(admin, settings.group_id)
        assert at_kill < total, "the stream ended before the kill: make it longer"

        # 2. restart, SIGTERM mid-stream: finishes its batch, commits, exits 0 within 10 s
        proc = start(settings, log)
        assert wait_until(lambda: committed(admin, settings.group_id) > at_kill, 60, 0.02)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode == 0 and time.monotonic() - t0 < 10, log.read_text()[-3000:]
        summary = json.loads(out.strip().splitlines()[-1])
        assert summary["stopped_by"] == "signal"

        # 3. restart to the end of the stream
        proc = start(settings, log, "--idle-timeout", "4")
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, log.read_text()[-3000:]
        assert committed(admin, settings.group_id) == total
    finally:
        if proc.poll() is None:
            proc.kill()
        admin.close()
    assert_redis_equals_batch(store, world, world.stream)


def test_endpoints_answer_and_sigint_stops_cleanly(
    settings: Settings, world: World, create_topic: Callable[..., str], tmp_path: Path
) -> None:
    create_topic(settings.events_topic, 1)
    publish(settings, world)
    log = tmp_path / "consumer.log"
    proc = start(settings, log)
    try:

        def port() -> int | None:
            for line in log.read_text().splitlines():
                if "consumer starting metrics_port=" in line:
                    return int(line.rsplit("=", 1)[1])
            return None

        assert wait_until(lambda: port() is not None, 30, 0.05), log.read_text()[-2000:]
        base = f"http://127.0.0.1:{port()}"
        assert urllib.request.urlopen(f"{base}/healthz", timeout=5).status == 200
        body = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
        assert "segstream_model_info" in body and 'version="m1"' in body

        def ready() -> bool:
            try:
                return urllib.request.urlopen(f"{base}/readyz", timeout=5).status == 200
            except Exception:
                return False

        assert wait_until(ready, 30, 0.1)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode == 0 and time.monotonic() - t0 < 10
        assert json.loads(out.strip().splitlines()[-1])["stopped_by"] == "signal"
    finally:
        if proc.poll() is None:
            proc.kill()
