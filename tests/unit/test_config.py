"""Settings: one frozen object, environment then flags (flags win), secrets never shown."""

from __future__ import annotations

import argparse
import dataclasses
import logging

import pytest

from state.config import (
    KAFKA_FLAGS,
    REDIS_FLAGS,
    TOPIC_FLAGS,
    Settings,
    add_settings_flags,
    env_names,
)
from state.errors import ConfigError


def parse(argv: list[str], environ: dict[str, str]) -> Settings:
    parser = argparse.ArgumentParser()
    add_settings_flags(parser, (*KAFKA_FLAGS, *REDIS_FLAGS, *TOPIC_FLAGS))
    return Settings.from_args(parser.parse_args(argv), environ)


def test_defaults_are_the_documented_ones() -> None:
    s = Settings.from_env({})
    assert (s.events_topic, s.dlq_topic, s.changes_topic) == (
        "checkout-events",
        "checkout-events-dlq",
        "segment-changes",
    )
    assert (s.group_id, s.redis_prefix, s.metrics_port) == ("segstream", "seg", 9400)


def test_environment_is_read_and_flags_win() -> None:
    env = {"KAFKA_BOOTSTRAP_SERVERS": "envhost:9092", "SEGSTREAM_EVENTS_TOPIC": "from-env"}
    s = parse(["--events-topic", "from-flag"], env)
    assert s.kafka_bootstrap_servers == "envhost:9092"
    assert s.events_topic == "from-flag"


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings.from_env({}).group_id = "x"  # type: ignore[misc]


def test_integer_settings_reject_garbage_with_the_env_name() -> None:
    with pytest.raises(ValueError, match="SEGSTREAM_METRICS_PORT"):
        Settings.from_env({"SEGSTREAM_METRICS_PORT": "ninety"})


def test_secrets_never_appear_in_repr_masked_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    s = Settings.from_env(
        {
            "REDIS_URL": "rediss://default:redis-secret@db:6380/0",
            "REDIS_PASSWORD": "pw-secret",
            "KAFKA_SASL_PASSWORD": "sasl-secret",
        }
    )
    with caplog.at_level(logging.INFO):
        s.log_effective(logging.getLogger("test"))
    shown = repr(s) + str(s.masked()) + caplog.text
    for secret in ("redis-secret", "pw-secret", "sasl-secret"):
        assert secret not in shown
    assert s.redis_password == "pw-secret"  # the value itself is intact


def test_every_flag_help_names_its_environment_variable() -> None:
    parser = argparse.ArgumentParser()
    add_settings_flags(parser, (*KAFKA_FLAGS, *REDIS_FLAGS, *TOPIC_FLAGS))
    text = " ".join(parser.format_help().split())  # undo argparse line wrapping
    names = env_names()
    for name in (*KAFKA_FLAGS, *REDIS_FLAGS, *TOPIC_FLAGS):
        assert f"[env: {names[name]}]" in text


def test_security_options_reach_the_kafka_and_redis_clients() -> None:
    s = Settings.from_env(
        {
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_SASL_USERNAME": "u",
            "KAFKA_SASL_PASSWORD": "p",
            "KAFKA_SSL_CAFILE": "/ca.pem",
            "REDIS_PASSWORD": "rp",
            "REDIS_TLS_CA": "/rca.pem",
        }
    )
    k = s.kafka_client_options()
    assert k["security_protocol"] == "SASL_SSL" and k["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (k["sasl_plain_username"], k["sasl_plain_password"], k["ssl_cafile"]) == (
        "u",
        "p",
        "/ca.pem",
    )
    assert s.redis_client_options() == {"password": "rp", "ssl_ca_certs": "/rca.pem"}


def test_currency_is_normalised_and_checked() -> None:
    assert Settings.from_env({"SEGSTREAM_CURRENCY": " eur "}).currency == "EUR"
    assert Settings.from_env({}).currency == ""
    with pytest.raises(ConfigError):
        Settings.from_env({"SEGSTREAM_CURRENCY": "euro"})
