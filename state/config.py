"""One place for configuration: a frozen :class:`Settings` read once at start.

Values come from, in order of precedence: command-line flags, environment
variables, then the defaults below. Every flag shows its environment name in
``--help`` (``[env: NAME]``). Secrets are masked whenever the settings are
logged or printed.

>>> s = Settings.from_env({"REDIS_URL": "redis://:hunter2@db:6379/0"})
>>> s.redis_url
'redis://:hunter2@db:6379/0'
>>> "hunter2" in str(s.masked())
False
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from state.errors import ConfigError

logger = logging.getLogger(__name__)

MASK = "***"


def _opt(env: str, flag: str, help: str, *, secret: bool = False, kind: type = str) -> Any:
    return {"env": env, "flag": flag, "help": help, "secret": secret, "kind": kind}


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Effective configuration of a segstream process (immutable)."""

    kafka_bootstrap_servers: str = field(
        default="localhost:9092",
        metadata=_opt("KAFKA_BOOTSTRAP_SERVERS", "--bootstrap-servers", "Kafka bootstrap servers"),
    )
    redis_url: str = field(
        default="redis://localhost:6379/0",
        metadata=_opt("REDIS_URL", "--redis-url", "Redis URL (redis:// or rediss:// for TLS)"),
    )
    events_topic: str = field(
        default="checkout-events",
        metadata=_opt("SEGSTREAM_EVENTS_TOPIC", "--events-topic", "topic of checkout events"),
    )
    dlq_topic: str = field(
        default="checkout-events-dlq",
        metadata=_opt("SEGSTREAM_DLQ_TOPIC", "--dlq-topic", "dead-letter topic"),
    )
    changes_topic: str = field(
        default="segment-changes",
        metadata=_opt("SEGSTREAM_CHANGES_TOPIC", "--changes-topic", "topic of segment changes"),
    )
    group_id: str = field(
        default="segstream",
        metadata=_opt("SEGSTREAM_GROUP_ID", "--group-id", "Kafka consumer group"),
    )
    redis_prefix: str = field(
        default="seg",
        metadata=_opt("SEGSTREAM_REDIS_PREFIX", "--redis-prefix", "prefix of every Redis key"),
    )
    metrics_port: int = field(
        default=9400,
        metadata=_opt(
            "SEGSTREAM_METRICS_PORT",
            "--metrics-port",
            "port of /metrics, /healthz, /readyz",
            kind=int,
        ),
    )
    currency: str = field(
        default="",
        metadata=_opt(
            "SEGSTREAM_CURRENCY", "--currency", "reject events in another ISO 4217 currency"
        ),
    )
    # consumer tunables (docs/consumer.md)
    topic_partitions: int = field(
        default=6,
        metadata=_opt(
            "SEGSTREAM_TOPIC_PARTITIONS",
            "--topic-partitions",
            "partitions of topics the consumer creates",
            kind=int,
        ),
    )
    auto_offset_reset: str = field(
        default="earliest",
        metadata=_opt(
            "SEGSTREAM_AUTO_OFFSET_RESET",
            "--auto-offset-reset",
            "where a new consumer group starts: earliest or latest",
        ),
    )
    max_poll_records: int = field(
        default=5000,
        metadata=_opt(
            "SEGSTREAM_MAX_POLL_RECORDS",
            "--max-poll-records",
            "records per batch at most",
            kind=int,
        ),
    )
    fetch_max_wait_ms: int = field(
        default=20,
        metadata=_opt(
            "SEGSTREAM_FETCH_MAX_WAIT_MS",
            "--fetch-max-wait-ms",
            "longest the broker holds a fetch that has no records yet (latency when idle)",
            kind=int,
        ),
    )
    online_half_life_seconds: int = field(
        default=30 * 86400,
        metadata=_opt(
            "SEGSTREAM_ONLINE_HALF_LIFE_SECONDS",
            "--online-half-life-seconds",
            "forgetting half-life of the online centroids, in event time",
            kind=int,
        ),
    )
    model_sync_seconds: int = field(
        default=10,
        metadata=_opt(
            "SEGSTREAM_MODEL_SYNC_SECONDS",
            "--model-sync-seconds",
            "interval of shared-model merges and new-model checks",
            kind=int,
        ),
    )
    # Kafka security
    kafka_security_protocol: str = field(
        default="PLAINTEXT",
        metadata=_opt(
            "KAFKA_SECURITY_PROTOCOL",
            "--kafka-security-protocol",
            "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL",
        ),
    )
    kafka_sasl_mechanism: str = field(
        default="",
        metadata=_opt(
            "KAFKA_SASL_MECHANISM",
            "--kafka-sasl-mechanism",
            "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
        ),
    )
    kafka_sasl_username: str = field(
        default="",
        metadata=_opt("KAFKA_SASL_USERNAME", "--kafka-sasl-username", "SASL user name"),
    )
    kafka_sasl_password: str = field(
        default="",
        metadata=_opt("KAFKA_SASL_PASSWORD", "--kafka-sasl-password", "SASL password", secret=True),
    )
    kafka_ssl_cafile: str = field(
        default="",
        metadata=_opt("KAFKA_SSL_CAFILE", "--kafka-ssl-cafile", "CA bundle for broker TLS"),
    )
    kafka_ssl_certfile: str = field(
        default="",
        metadata=_opt("KAFKA_SSL_CERTFILE", "--kafka-ssl-certfile", "client certificate (TLS)"),
    )
    kafka_ssl_keyfile: str = field(
        default="",
        metadata=_opt("KAFKA_SSL_KEYFILE", "--kafka-ssl-keyfile", "client key (TLS)"),
    )
    # Redis security
    redis_password: str = field(
        default="",
        metadata=_opt(
            "REDIS_PASSWORD",
            "--redis-password",
            "Redis password (overrides the URL's)",
            secret=True,
        ),
    )
    redis_tls_ca: str = field(
        default="",
        metadata=_opt("REDIS_TLS_CA", "--redis-tls-ca", "CA bundle for Redis TLS (rediss://)"),
    )

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``), then ``overrides``.

        ``overrides`` whose value is ``None`` are ignored, so parsed flags that were not
        given can be passed straight through.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            env = f.metadata["env"]
            if env in environ and environ[env] != "":
                values[f.name] = _convert(f.metadata["kind"], environ[env], env)
        for name, value in overrides.items():
            if value is not None:
                values[name] = value
        return cls(**values)

    @classmethod
    def from_args(
        cls, args: argparse.Namespace, environ: Mapping[str, str] | None = None
    ) -> Settings:
        """Settings from the environment with parsed flags on top (flags win)."""
        names = {f.name for f in fields(cls)}
        return cls.from_env(environ, **{k: v for k, v in vars(args).items() if k in names})

    def __post_init__(self) -> None:
        # The decoder compares currencies exactly; accept "eur" and mean "EUR".
        currency = self.currency.strip().upper()
        if currency and not re.fullmatch(r"[A-Z]{3}", currency):
            raise ConfigError(f"SEGSTREAM_CURRENCY must be an ISO 4217 code, got {self.currency!r}")
        object.__setattr__(self, "currency", currency)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    # -- presentation ---------------------------------------------------------------------------

    def masked(self) -> dict[str, Any]:
        """The settings as a dict with every secret (and URL password) masked."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.metadata["secret"] and value:
                value = MASK
            elif isinstance(value, str):
                value = mask_url(value)
            out[f.name] = value
        return out

    def log_effective(self, log: logging.Logger = logger) -> None:
        """Log the effective configuration once, secrets masked."""
        log.info(
            "effective configuration %s",
            " ".join(f"{k}={v!r}" for k, v in self.masked().items()),
        )

    def __repr__(self) -> str:  # never leak secrets through repr()
        body = ", ".join(f"{k}={v!r}" for k, v in self.masked().items())
        return f"Settings({body})"

    __str__ = __repr__

    # -- derived client options ---------------------------------------------------------------

    def kafka_client_options(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python clients (bootstrap and security)."""
        opts: dict[str, Any] = {
            "bootstrap_servers": self.kafka_bootstrap_servers.split(","),
            "security_protocol": self.kafka_security_protocol,
        }
        if self.kafka_sasl_mechanism:
            opts["sasl_mechanism"] = self.kafka_sasl_mechanism
            opts["sasl_plain_username"] = self.kafka_sasl_username
            opts["sasl_plain_password"] = self.kafka_sasl_password
        for key, value in (
            ("ssl_cafile", self.kafka_ssl_cafile),
            ("ssl_certfile", self.kafka_ssl_certfile),
            ("ssl_keyfile", self.kafka_ssl_keyfile),
        ):
            if value:
                opts[key] = value
        return opts

    def redis_client_options(self) -> dict[str, Any]:
        """Keyword arguments for ``redis.Redis.from_url(self.redis_url, **opts)``."""
        opts: dict[str, Any] = {}
        if self.redis_password:
            opts["password"] = self.redis_password
        if self.redis_tls_ca:
            opts["ssl_ca_certs"] = self.redis_tls_ca
        return opts


def _convert(kind: type, raw: str, env: str) -> Any:
    if kind is int:
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{env} must be an integer, got {raw!r}") from None
    return raw


_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:@/]*):(?P<pw>[^@/]+)@")


def mask_url(value: str) -> str:
    """Hide the password of a URL.

    >>> mask_url("rediss://user:s3cret@host:6380/0")
    'rediss://user:***@host:6380/0'
    >>> mask_url("localhost:9092")
    'localhost:9092'
    """
    return _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", value)


def add_settings_flags(parser: argparse.ArgumentParser, names: Iterable[str]) -> None:
    """Add flags for the named settings, each showing its env name and default in help.

    Flags default to ``None`` so that :meth:`Settings.from_args` can tell "not given".
    """
    by_name = {f.name: f for f in fields(Settings)}
    for name in names:
        f = by_name[name]
        meta = f.metadata
        shown = MASK if meta["secret"] else f.default
        parser.add_argument(
            meta["flag"],
            dest=name,
            type=meta["kind"],
            default=None,
            help=f"{meta['help']} [env: {meta['env']}] (default: {shown!r})",
        )


#: Security settings of each client (SASL/TLS, password/TLS): the ones a deployment must give.
KAFKA_SECURITY = (
    "kafka_security_protocol",
    "kafka_sasl_mechanism",
    "kafka_sasl_username",
    "kafka_sasl_password",
    "kafka_ssl_cafile",
    "kafka_ssl_certfile",
    "kafka_ssl_keyfile",
)
REDIS_SECURITY = ("redis_password", "redis_tls_ca")
KAFKA_FLAGS = ("kafka_bootstrap_servers", *KAFKA_SECURITY)
REDIS_FLAGS = ("redis_url", *REDIS_SECURITY, "redis_prefix")
TOPIC_FLAGS = ("events_topic", "dlq_topic", "changes_topic")


def env_names() -> dict[str, str]:
    """Map of setting name to environment variable name (used by docs and tests)."""
    return {f.name: f.metadata["env"] for f in fields(Settings)}
