"""``segstream produce simulate|replay``: send simulated or replayed checkouts to Kafka.

Both commands produce to the events topic through :class:`~producer.client.CheckoutProducer`
unless ``--out FILE`` (write the events to JSON lines, CSV or Parquet) or ``--dry-run``
(count only) is given; neither of those needs a broker. SIGINT and SIGTERM stop the
stream cleanly: what was sent is flushed before the command exits.
Heavy imports happen inside the command functions so that ``segstream --help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from state.config import KAFKA_FLAGS, add_settings_flags

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``produce`` with its ``simulate`` and ``replay`` subcommands."""
    p = sub.add_parser("produce", help="send simulated or replayed checkout events to Kafka")
    p.set_defaults(func=lambda args: p.print_help() or 2)
    commands = p.add_subparsers(dest="produce_command", metavar="SUBCOMMAND")

    sim = commands.add_parser(
        "simulate",
        help="simulate a customer population: its history (file) and live checkouts (Kafka)",
        description="Simulate customers drawn from archetypes (High-Spenders, Discount Seekers, "
        "Infrequent Shoppers, Loyal Customers, New Customers, At-Risk). Without --rate, event "
        "time follows the customers' own purchase rates and runs as fast as possible; with "
        "--rate R, R events per second are sent in real time. Deterministic under --seed.",
    )
    sim.add_argument("--customers", type=int, required=True, help="population size")
    amount = sim.add_mutually_exclusive_group(required=True)
    amount.add_argument("--events", type=int, help="stop after this many live events (0: none)")
    amount.add_argument(
        "--duration", help="stop after this much event time: 90, 90s, 15m, 2h or 30d"
    )
    sim.add_argument("--rate", type=float, help="real time at R events per second")
    sim.add_argument(
        "--start",
        help="end of the history and start of the stream: RFC 3339, epoch seconds or 'now' "
        "(default: now)",
    )
    sim.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    sim.add_argument("--truth", help="write customer_id -> archetype to this CSV/Parquet file")
    sim.add_argument("--history", help="write the population's past to this CSV/Parquet file")
    sim.add_argument(
        "--history-days", type=float, default=365.0, help="length of the history (default: 365)"
    )
    _add_output_flags(sim)
    sim.set_defaults(func=run_simulate)

    rep = commands.add_parser(
        "replay",
        help="replay a transaction table (CSV, Parquet, whitespace text) as checkout events",
        description="Turn each row of a transaction table into a checkout event, in event-time "
        "order. FILE may be 'cdnow' for the CDNOW data set shipped with the lifetimes package. "
        "Rows that cannot become valid events are counted by reason and not sent.",
    )
    rep.add_argument("file", metavar="FILE", help="the table, or 'cdnow'")
    rep.add_argument(
        "--format", choices=["csv", "parquet", "whitespace"], help="default: by extension"
    )
    rep.add_argument(
        "--map",
        dest="mapping",
        help="columns of the contract fields, e.g. customer_id=CustomerID,ts=InvoiceDate,amount=Total",
    )
    rep.add_argument("--date-format", help="strptime format of the date column, e.g. %%d-%%b-%%y")
    rep.add_argument("--encoding", help="text encoding of a CSV file (e.g. latin-1)")
    pace = rep.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=float, help="event time runs X times faster than real time")
    pace.add_argument(
        "--as-fast-as-possible",
        action="store_true",
        help="no pacing (the default when --speed is not given)",
    )
    _add_output_flags(rep)
    rep.set_defaults(func=run_replay)


def _add_output_flags(parser: argparse.ArgumentParser) -> None:
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--out", help="write events to FILE (.jsonl, .csv or .parquet), no broker")
    out.add_argument("--dry-run", action="store_true", help="build and count events, send nothing")
    tuning = parser.add_argument_group("producer tuning")
    tuning.add_argument("--compression", choices=["gzip", "snappy", "lz4", "zstd"], default=None)
    tuning.add_argument("--linger-ms", type=int, default=None, help="default: 10")
    tuning.add_argument("--batch-size", type=int, default=None, help="bytes, default: 262144")
    tuning.add_argument(
        "--no-idempotence",
        action="store_true",
        help="disable the idempotent producer (for brokers without InitProducerId)",
    )
    add_settings_flags(parser, (*KAFKA_FLAGS, "events_topic", "currency"))


# -- commands -------------------------------------------------------------------------------------


def run_simulate(args: argparse.Namespace) -> int:
    import pandas as pd

    from producer.pacing import parse_duration, write_table
    from producer.simulate import make_population, simulate_history, simulate_stream

    start = _parse_time(args.start)
    duration = parse_duration(args.duration) if args.duration else None
    pop = make_population(args.customers, seed=args.seed, end=start, history_days=args.history_days)
    if args.truth:
        write_table(pop.truth(), args.truth)
    with _progress() as progress:
        if args.history:
            task = progress.add_task("history", total=len(pop))
            history = simulate_history(
                pop, seed=args.seed, progress=lambda n: progress.advance(task, n)
            )
            write_table(history, args.history)
            logger.info("history written path=%s rows=%d", args.history, len(history))
        if args.events == 0:
            print(f"customers={len(pop)} events=0 truth={args.truth} history={args.history}")
            return 0
        stream = simulate_stream(
            pop, seed=args.seed, events=args.events, duration=duration, rate=args.rate
        )
        total = args.events
        task = progress.add_task("stream", total=total)
        sent = _emit(
            stream, args, speed=1.0 if args.rate else None, on_event=lambda: progress.advance(task)
        )
    print(
        f"customers={len(pop)} start={pd.Timestamp(start, unit='s', tz='UTC').isoformat()} {sent}"
    )
    return 1 if sent.failed else 0


def run_replay(args: argparse.Namespace) -> int:
    from producer.replay import load_events, parse_mapping

    try:
        mapping = parse_mapping(args.mapping)
        result = load_events(
            args.file,
            fmt=args.format,
            mapping=mapping,
            date_format=args.date_format,
            encoding=args.encoding,
        )
    except (ValueError, FileNotFoundError) as exc:
        print(f"segstream produce replay: error: {exc}", file=sys.stderr)
        return 2
    for reason, (row, detail) in sorted(result.examples.items()):
        logger.warning(
            "rejected reason=%s rows=%d first_row=%d detail=%r",
            reason,
            result.rejected[reason],
            row,
            detail,
        )
    with _progress() as progress:
        task = progress.add_task("replay", total=len(result.events))
        sent = _emit(result.events, args, speed=args.speed, on_event=lambda: progress.advance(task))
    print(f"{result.summary()} {sent}")
    return 1 if sent.failed else 0


# -- shared plumbing ------------------------------------------------------------------------------


def _parse_time(text: str | None) -> float:
    """Epoch seconds from RFC 3339, a date, epoch seconds, or ``now``/``None`` (wall clock)."""
    import time

    import pandas as pd

    if text is None or text.strip().lower() == "now":
        return float(round(time.time()))
    try:
        return float(text)
    except ValueError:
        stamp = pd.Timestamp(text)
        if stamp.tzinfo is None:
            stamp = stamp.tz_localize("UTC")
        return stamp.timestamp()


def _progress() -> Any:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    )


class _StopFlag:
    """Set by SIGINT/SIGTERM while events are being sent; the loop then ends cleanly."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        logger.warning("stopping signal=%d", signum)
        self.event.set()

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _until(events: Iterable[Any], stop: threading.Event) -> Iterator[Any]:
    for event in events:
        if stop.is_set():
            return
        yield event


@dataclass(frozen=True)
class Outcome:
    """What a run did with its events; ``str()`` is a greppable ``key=value`` line."""

    where: str
    sent: int = 0
    delivered: int = 0
    written: int = 0
    failed: int = 0

    def __str__(self) -> str:
        return (
            f"{self.where} sent={self.sent} delivered={self.delivered} "
            f"written={self.written} failed={self.failed}"
        )


def _emit(
    events: Iterable[Any], args: argparse.Namespace, *, speed: float | None, on_event: Any
) -> Outcome:
    """Send (or write, or count) ``events``, paced at ``speed`` (None: as fast as possible)."""
    from producer.client import CheckoutProducer, ProducerOptions
    from producer.pacing import EventSink, paced
    from state.config import Settings

    with _StopFlag() as stop:
        timed = paced(events, lambda e: e.ts, speed=speed, sleep=stop.event.wait)
        stream = _until(timed, stop.event)
        if args.dry_run or args.out:
            sink = EventSink(args.out) if args.out else None
            count = 0
            for event in stream:
                if sink is not None:
                    sink.write(event)
                count += 1
                on_event()
            if sink is not None:
                sink.close()
            return Outcome(f"out={args.out}" if args.out else "dry_run=true", written=count)
        settings = Settings.from_args(args)
        settings.log_effective(logger)
        defaults = ProducerOptions()
        options = ProducerOptions(
            compression_type=args.compression,
            linger_ms=defaults.linger_ms if args.linger_ms is None else args.linger_ms,
            batch_size=defaults.batch_size if args.batch_size is None else args.batch_size,
            enable_idempotence=not args.no_idempotence,
        )
        with CheckoutProducer(settings, options=options) as producer:
            for event in stream:
                producer.send(event)
                on_event()
            producer.flush()
        return Outcome(
            f"topic={producer.target_topic}",
            sent=producer.sent,
            delivered=producer.delivered,
            failed=producer.failed,
        )
