"""``segstream dev up|down|status``: a local broker and Redis for development."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dev", help="start/stop a local Kafka-protocol broker and Redis")
    p.set_defaults(func=lambda args: p.print_help() or 2)
