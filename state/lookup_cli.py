"""``segstream lookup ID [ID ...] [--json]`` and ``segstream segments [--json]``.

Read-only views of what segstream keeps in Redis (docs/redis-schema.md): a customer's
segment and features, and the segments with their live sizes. Invalid ids and an
unreachable Redis end with exit status 1 and one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from state.config import REDIS_FLAGS, Settings, add_settings_flags


def register(sub: argparse._SubParsersAction) -> None:
    look = sub.add_parser(
        "lookup",
        help="show customers' segments and features (derived at lookup time)",
        description="Show customers' segments and features from Redis. "
        "Unknown customers are reported as such (exit 0).",
    )
    look.add_argument("customer_ids", nargs="+", metavar="ID", help="customer id(s)")
    look.add_argument("--json", action="store_true", help="one JSON array on stdout")
    add_settings_flags(look, REDIS_FLAGS)
    look.set_defaults(func=run_lookup)

    segs = sub.add_parser(
        "segments",
        help="list segments: ids, names, descriptions, live sizes, current model",
    )
    segs.add_argument("--json", action="store_true", help="one JSON object on stdout")
    add_settings_flags(segs, REDIS_FLAGS)
    segs.set_defaults(func=run_segments)


def _when(ts: float | None) -> str:
    """Epoch seconds as an ISO 8601 UTC time.

    >>> _when(1750000000.0), _when(None)
    ('2025-06-15T15:06:40Z', '-')
    """
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _fmt(value: Any) -> str:
    """A feature value for the text view.

    >>> _fmt(3.0), _fmt(0.123456), _fmt(None), _fmt("F")
    ('3', '0.1235', '-', 'F')
    """
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if not value.is_integer() else str(int(value))
    return str(value)


def run_lookup(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    from state.ids import validate_customer_id
    from state.lookup import SegmentClient, unknown_dict

    ids = [validate_customer_id(c) for c in args.customer_ids]  # before connecting
    settings = Settings.from_args(args)
    with SegmentClient(
        settings.redis_url, prefix=settings.redis_prefix, **settings.redis_client_options()
    ) as client:
        found = client.get_many(ids)
    if args.json:
        rows = [unknown_dict(c) if found[c] is None else found[c].to_dict() for c in ids]  # type: ignore[union-attr]
        json.dump(rows, out, indent=2)
        out.write("\n")
        return 0
    for cid in ids:
        hit = found[cid]
        if hit is None:
            out.write(f"{cid}  unknown customer\n")
            continue
        out.write(
            f"{cid}  segment={hit.segment_id} name={hit.segment_name!r} "
            f"model={hit.model_version} updated_at={_when(hit.updated_at)}\n"
        )
        feats = " ".join(f"{k}={_fmt(v)}" for k, v in hit.features.items())
        out.write(
            f"  {feats}  (at {_when(hit.evaluated_at)}, half-life {_fmt(hit.half_life_days)} d)\n"
        )
    return 0


def run_segments(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    import redis

    from state.registry import ModelRegistry

    settings = Settings.from_args(args)
    client = redis.Redis.from_url(settings.redis_url, **settings.redis_client_options())
    try:
        view = ModelRegistry(client, prefix=settings.redis_prefix).segments()
    finally:
        client.close()
    if args.json:
        json.dump(view.to_dict(), out, indent=2)
        out.write("\n")
        return 0
    out.write(f"current model: {view.current_model_version or '(none)'}\n")
    if view.metadata_model_version != view.current_model_version:
        out.write(f"segment metadata from model: {view.metadata_model_version or '(none)'}\n")
    out.write(f"{'id':>4}  {'name':<24} {'size':>10}  description\n")
    for s in view.segments:
        out.write(f"{s.id:>4}  {s.name:<24} {s.size:>10}  {s.description}\n")
    for sid, size in view.orphan_sizes.items():
        out.write(f"{sid:>4}  {'(not in current model)':<24} {size:>10}\n")
    return 0
