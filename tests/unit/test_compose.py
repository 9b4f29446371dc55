"""docker-compose.yml cannot run here (no Docker engine), so these checks keep it from rotting:
images and build contexts exist, env names are Settings env names, ports match the defaults,
and Prometheus scrapes the consumer's metrics port."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from state.config import Settings, env_names

ROOT = Path(__file__).resolve().parents[2]
DEFAULTS = Settings()


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _built_here(service: dict[str, Any]) -> bool:
    return "build" in service


def _published(service: dict[str, Any]) -> dict[int, int]:
    """host port -> container port of a service."""
    out = {}
    for spec in service.get("ports", []):
        host, container = str(spec).split(":")[-2:]
        out[int(host)] = int(container.split("/")[0])
    return out


def test_every_service_has_a_pinned_image_or_a_build_context_in_the_repo(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        if _built_here(service):
            build = service["build"]
            context = ROOT / build["context"]
            assert context.is_dir(), name
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), name
        else:
            image = service["image"]
            repo, _, tag = image.partition(":")
            assert repo and tag and tag != "latest", f"{name}: pin a version of {image}"


def test_dockerfile_copies_only_paths_that_exist() -> None:
    copies = re.findall(r"^COPY\s+(.+?)\s+\S+$", (ROOT / "Dockerfile").read_text(), re.M)
    sources = [src for line in copies for src in line.split()]
    assert {"pyproject.toml", "state/"} <= set(sources)
    for src in sources:
        assert (ROOT / src).exists(), src


def test_segstream_services_use_only_settings_env_names(
    services: dict[str, dict[str, Any]],
) -> None:
    known = set(env_names().values())
    built = {n: s for n, s in services.items() if _built_here(s)}
    assert set(built) == {"consumer", "offline", "producer"}
    for name, service in built.items():
        env = service["environment"]
        assert set(env) <= known, f"{name}: unknown {set(env) - known}"
        assert {"KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "REDIS_PASSWORD"} <= set(env)
        Settings.from_env({k: str(v) for k, v in env.items()})  # every value parses


def test_consumer_runs_consume_and_one_shots_sit_behind_profiles(
    services: dict[str, dict[str, Any]],
) -> None:
    assert services["consumer"]["command"] == ["segstream", "consume"]
    assert "profiles" not in services["consumer"]
    for name in ("offline", "producer"):
        assert services[name]["profiles"] == [name]
        assert services[name]["command"][0] == "segstream"


def test_ports_match_the_settings_defaults(services: dict[str, dict[str, Any]]) -> None:
    consumer = services["consumer"]
    metrics = DEFAULTS.metrics_port
    assert int(consumer["environment"]["SEGSTREAM_METRICS_PORT"]) == metrics
    assert _published(consumer) == {metrics: metrics}

    kafka_port = int(DEFAULTS.kafka_bootstrap_servers.rsplit(":", 1)[1])
    assert _published(services["kafka"]) == {kafka_port: kafka_port}
    redis_port = urlsplit(DEFAULTS.redis_url).port
    assert _published(services["redis"]) == {redis_port: redis_port}


def test_segstream_reaches_kafka_and_redis_by_service_name(
    services: dict[str, dict[str, Any]],
) -> None:
    env = services["consumer"]["environment"]
    kafka = services["kafka"]["environment"]
    assert f"//{env['KAFKA_BOOTSTRAP_SERVERS']}" in kafka["KAFKA_ADVERTISED_LISTENERS"]
    assert set(kafka["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}  # KRaft
    assert services["kafka"]["image"].startswith("apache/kafka:")

    redis_url = urlsplit(env["REDIS_URL"])
    assert (redis_url.hostname, redis_url.port) == ("redis", 6379)
    command = services["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--requirepass") + 1] == env["REDIS_PASSWORD"]


def test_prometheus_scrapes_the_consumer_metrics_port(services: dict[str, dict[str, Any]]) -> None:
    prometheus = services["prometheus"]
    mount = next(
        v for v in prometheus["volumes"] if v.endswith("/etc/prometheus/prometheus.yml:ro")
    )
    config = yaml.safe_load((ROOT / mount.split(":")[0]).read_text())
    targets = [
        target
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    ]
    assert targets == [f"consumer:{DEFAULTS.metrics_port}"]
    assert config["scrape_configs"][0]["metrics_path"] == "/metrics"
