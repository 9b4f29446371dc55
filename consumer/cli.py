"""``segstream consume``: run the streaming consumer (one group member).

Cheap to import: the heavy modules load inside the command. Every flag can also be set
through its environment variable (shown as ``[env: NAME]`` in ``--help``). The stop
flags (``--max-events``, ``--idle-timeout``, ``--timeout``) make runs finite for tests
and benchmarks; without them the consumer runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import signal
import sys
import time
from contextlib import ExitStack
from typing import Any

from state.config import KAFKA_FLAGS, REDIS_FLAGS, TOPIC_FLAGS, Settings, add_settings_flags

logger = logging.getLogger(__name__)

CONSUMER_FLAGS = (
    "group_id",
    "metrics_port",
    "currency",
    "topic_partitions",
    "auto_offset_reset",
    "max_poll_records",
    "fetch_max_wait_ms",
    "online_half_life_seconds",
    "model_sync_seconds",
)
# name, env, type, help (stop conditions and client timeouts; not part of Settings)
RUN_FLAGS: tuple[tuple[str, str, type, str], ...] = (
    ("--max-events", "SEGSTREAM_MAX_EVENTS", int, "stop after this many records consumed"),
    (
        "--idle-timeout",
        "SEGSTREAM_IDLE_TIMEOUT",
        float,
        "stop after this many seconds without records",
    ),
    ("--timeout", "SEGSTREAM_TIMEOUT", float, "stop after this many seconds in all"),
    ("--session-timeout-ms", "SEGSTREAM_SESSION_TIMEOUT_MS", int, "Kafka group session timeout"),
    (
        "--sweep-seconds",
        "SEGSTREAM_SWEEP_SECONDS",
        float,
        "recency sweep interval, 0 = off (default 300)",
    ),
    (
        "--sweep-boundaries-days",
        "SEGSTREAM_SWEEP_BOUNDARIES_DAYS",
        str,
        "comma-separated idle times that trigger a re-evaluation (default 7,30,60,90,180,365)",
    ),
)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "consume",
        help="run the streaming consumer (Kafka -> features, segments -> Redis)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_settings_flags(p, (*KAFKA_FLAGS, *REDIS_FLAGS, *TOPIC_FLAGS, *CONSUMER_FLAGS))
    for flag, env, kind, text in RUN_FLAGS:
        p.add_argument(flag, type=kind, default=None, help=f"{text} [env: {env}]")
    p.set_defaults(func=run)


def _run_options(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for flag, env, kind, _ in RUN_FLAGS:
        name = flag.lstrip("-").replace("-", "_")
        value = getattr(args, name)
        if value is None and os.environ.get(env):
            value = kind(os.environ[env])
        out[name] = value
    return out


def _days(text: str) -> list[float]:
    """Comma-separated days, e.g. ``"7,30,90"``; a clear error otherwise.

    >>> _days("7, 30,90")
    [7.0, 30.0, 90.0]
    """
    from state.errors import ConfigError

    try:
        days = [float(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise ConfigError(f"sweep boundaries must be comma-separated days, got {text!r}") from None
    if not days or any(d <= 0 for d in days):
        raise ConfigError(f"sweep boundaries must be positive days, got {text!r}")
    return days


def install_signal_handlers(request_stop: Any, *, hard_exit: Any = os._exit) -> None:
    """SIGTERM/SIGINT: stop after the batch; a second SIGINT: ``hard_exit(130)`` at once."""
    interrupts = {"n": 0}

    def on_term(signum: int, frame: Any) -> None:
        logger.info("signal received signal=%s action=finish-batch", signal.Signals(signum).name)
        request_stop()

    def on_int(signum: int, frame: Any) -> None:
        interrupts["n"] += 1
        if interrupts["n"] >= 2:
            hard_exit(130)
            return
        on_term(signum, frame)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_int)


def run(args: argparse.Namespace) -> int:
    import redis

    from consumer.metrics import ConsumerMetrics, HealthServer, TimedStore
    from consumer.model_sync import ModelSync
    from consumer.service import ConsumerService
    from consumer.sweep import RecencySweep
    from state.redis_store import RedisStore, StoreError

    settings = Settings.from_args(args)
    opts = _run_options(args)
    settings.log_effective(logger)
    metrics = ConsumerMetrics()
    stopping = {"flag": False}
    install_signal_handlers(lambda: stopping.update(flag=True))
    with ExitStack() as stack:
        client = redis.Redis.from_url(settings.redis_url, **settings.redis_client_options())
        stack.callback(client.close)
        store = RedisStore(client, prefix=settings.redis_prefix)
        sync = ModelSync(
            client,
            prefix=settings.redis_prefix,
            half_life_seconds=float(settings.online_half_life_seconds),
            interval_seconds=float(settings.model_sync_seconds),
            metrics=metrics,
        )
        delay = 0.1
        while True:  # Redis may not be up yet: wait for it (capped backoff), stoppable
            try:
                processor = sync.initial()
                break
            except StoreError as exc:
                if stopping["flag"]:
                    return 0
                logger.warning(
                    "redis unavailable at start retry_in=%.1fs error=%r", delay, str(exc)
                )
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        overrides = {}
        if opts["session_timeout_ms"]:
            overrides["session_timeout_ms"] = opts["session_timeout_ms"]
            overrides["heartbeat_interval_ms"] = max(opts["session_timeout_ms"] // 3, 100)
        sweep_seconds = 300.0 if opts["sweep_seconds"] is None else opts["sweep_seconds"]
        sweep = None
        if sweep_seconds > 0:
            boundaries = opts["sweep_boundaries_days"] or "7,30,60,90,180,365"
            sweep = RecencySweep(
                client,
                prefix=settings.redis_prefix,
                interval_seconds=sweep_seconds,
                boundaries_days=_days(boundaries),
            )
        service = ConsumerService(
            settings,
            store=TimedStore(store, metrics),
            processor=processor,
            metrics=metrics,
            model_source=sync,
            sweep=sweep,
            consumer_overrides=overrides,
        )
        install_signal_handlers(service.request_stop)
        if stopping["flag"]:
            service.request_stop()
        health = stack.enter_context(
            HealthServer(metrics, service.ready, port=settings.metrics_port)
        )
        logger.info("consumer starting metrics_port=%d", health.port)
        # Start-up objects (modules, model, clients) live as long as the process: keep them
        # out of the collector's full scans, which otherwise pause a batch for tens of ms.
        gc.collect()
        gc.freeze()
        summary = service.run(
            max_events=opts["max_events"],
            idle_timeout=opts["idle_timeout"],
            timeout=opts["timeout"],
        )
    print(json.dumps(vars(summary)), file=sys.stdout, flush=True)
    return 0
