"""``segstream offline fit`` and ``segstream offline publish`` (cheap to import).

>>> parse_k_range("2..10") == tuple(range(2, 11)), parse_k_range("3,5"), parse_k_range("4")
(True, (3, 5), (4,))
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from state.config import REDIS_FLAGS, Settings, add_settings_flags
from state.errors import ConfigError

logger = logging.getLogger(__name__)


def parse_k_range(text: str) -> tuple[int, ...]:
    """``2..10`` / ``2-10`` (inclusive), ``3,5,7`` or ``5``."""
    try:
        for sep in ("..", "-"):
            if sep in text:
                lo, hi = (int(v) for v in text.split(sep, 1))
                return tuple(range(lo, hi + 1))
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--k wants 2..10, 3,5 or 5, got {text!r}") from None


def _csv(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("offline", help="fit the segmentation offline and publish it to Redis")
    p.set_defaults(func=lambda args: p.print_help() or 2)
    off = p.add_subparsers(dest="offline_command", metavar="ACTION", title="actions")

    fit = off.add_parser(
        "fit",
        help="clean, compare algorithms, pick k, name segments; write DIR/model.json, "
        "assignments.parquet, states.parquet and report.html",
    )
    fit.add_argument("--customers", type=Path, help="customers table (CSV or Parquet)")
    fit.add_argument("--transactions", type=Path, help="transactions table (CSV or Parquet)")
    fit.add_argument("--out", type=Path, required=True, help="output directory")
    fit.add_argument("--features", type=_csv, help="comma-separated feature/column names")
    fit.add_argument(
        "--algorithms",
        type=_csv,
        default=("kmeans", "agglomerative", "dbscan", "gmm"),
        help="comma-separated subset of kmeans,agglomerative,dbscan,gmm (default: all)",
    )
    fit.add_argument(
        "--k", type=parse_k_range, default=tuple(range(2, 11)), help="k range (default 2..10)"
    )
    fit.add_argument(
        "--as-of",
        help="snapshot time (ISO date/time or epoch s); default: the latest event time",
    )
    fit.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    fit.add_argument("--outliers", choices=["cap", "keep"], default="cap", help="default: cap")
    fit.add_argument(
        "--scaler",
        choices=["standard", "none"],
        default="standard",
        help="scaling after the transforms, stored in the model (default: standard)",
    )
    fit.add_argument(
        "--map",
        action="append",
        metavar="SRC=DST",
        help="rename input columns, e.g. 'Annual Income (k$)=annual_income,trans_date=ts' "
        "(repeatable)",
    )
    fit.add_argument("--mapping-file", type=Path, help="JSON/TOML: map, date_format, encoding, sep")
    fit.add_argument("--date-format", help="strftime format of dates, e.g. '%%d-%%b-%%y'")
    fit.add_argument("--encoding", help="input encoding (default: UTF-8, then latin-1)")
    fit.add_argument("--sep", help="CSV separator (default ',')")
    fit.add_argument("--half-life-days", type=float, default=30.0, help="decay half-life")
    fit.add_argument("--bootstrap", type=int, default=10, help="stability resamples (default 10)")
    fit.add_argument(
        "--silhouette-sample", type=int, default=5_000, help="rows for silhouette (default 5000)"
    )
    fit.add_argument("--previous", type=Path, help="previous fit DIR: stable ids and transitions")
    fit.add_argument("--model-version", help="model version (default: m<UTC time>-<fingerprint>)")
    fit.add_argument("--no-report", action="store_true", help="skip report.html")
    fit.set_defaults(func=cmd_fit)

    pub = off.add_parser("publish", help="model to the registry, customers to Redis, switch")
    pub.add_argument("dir", type=Path, help="a directory written by 'offline fit'")
    pub.add_argument(
        "--batch-size",
        type=int,
        default=10_000,  # offline.publish.DEFAULT_BATCH (not imported: pandas)
        help="customers per batch (default %(default)s)",
    )
    pub.add_argument(
        "--workers",
        type=int,
        default=2,
        help="processes writing batches in parallel (default %(default)s; 1: this process only)",
    )
    add_settings_flags(pub, REDIS_FLAGS)
    pub.set_defaults(func=cmd_publish)


def cmd_fit(args: argparse.Namespace) -> int:
    from rich.console import Console

    from offline.artifacts import read_assignments, read_model, write_artifacts
    from offline.fit import FitOptions, Previous, fit
    from offline.load import (
        LoadOptions,
        load_customers,
        load_transactions,
        parse_as_of,
        parse_mapping,
    )

    if args.customers is None and args.transactions is None:
        raise ConfigError("give --customers, --transactions or both")
    overrides = {
        "mapping": parse_mapping(args.map),
        "date_format": args.date_format,
        "encoding": args.encoding,
        "sep": args.sep,
    }
    if args.mapping_file:
        load_opts = LoadOptions.from_file(args.mapping_file, **overrides)
    else:
        load_opts = LoadOptions(**overrides)  # type: ignore[arg-type]
    console = Console(stderr=True)
    with console.status("loading") as status:
        customers = load_customers(args.customers, load_opts) if args.customers else None
        transactions = (
            load_transactions(args.transactions, load_opts) if args.transactions else None
        )
        previous = None
        if args.previous:
            prev_assign = read_assignments(args.previous)["segment_id"]
            previous = Previous(model=read_model(args.previous), assignments=prev_assign)
        options = FitOptions(
            features=args.features,
            algorithms=args.algorithms,
            k_range=args.k,
            as_of=parse_as_of(args.as_of, load_opts.date_format),
            seed=args.seed,
            outliers=args.outliers,
            scaler=args.scaler,
            half_life_days=args.half_life_days,
            n_bootstrap=args.bootstrap,
            silhouette_sample=args.silhouette_sample,
            version=args.model_version,
            meta={
                "customers_file": str(args.customers) if args.customers else None,
                "transactions_file": str(args.transactions) if args.transactions else None,
            },
        )
        result = fit(
            customers,
            transactions,
            options,
            previous=previous,
            progress=lambda what: status.update(what),
        )
        status.update("writing artefacts and report")
        paths = write_artifacts(result, args.out, report=not args.no_report)
    model = result.model
    print(result.selection_sentence)
    if result.weak_structure_message:
        print(f"WARNING: {result.weak_structure_message}")
    for seg, size in zip(model.segments, model.weights, strict=True):
        print(f"  segment {seg.id:>3}  {int(size):>9,}  {seg.name}")
    print(f"model {model.version} -> " + ", ".join(str(p) for p in paths))
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    import redis
    from rich.progress import Progress

    from offline.publish import publish
    from state.redis_store import RedisStore
    from state.registry import ModelRegistry

    settings = Settings.from_args(args)
    settings.log_effective(logger)
    client = redis.Redis.from_url(settings.redis_url, **settings.redis_client_options())
    store = RedisStore(client, prefix=settings.redis_prefix)
    registry = ModelRegistry(client, prefix=settings.redis_prefix)
    try:
        with Progress(transient=False) as bar:
            task = bar.add_task("seeding customers", total=None)

            def tick(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            summary = publish(
                args.dir, store, registry, batch_size=args.batch_size,
                workers=args.workers, progress=tick,
            )  # fmt: skip
    finally:
        store.close()
    print(
        f"published model {summary.model_version} "
        f"({'new' if summary.model_created else 'already in the registry'}); "
        f"{summary.customers:,} customers ({summary.written:,} written) in "
        f"{summary.seconds:.1f} s = {summary.rate:,.0f}/s; current pointer switched"
    )
    return 0
