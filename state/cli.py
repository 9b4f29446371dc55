"""The ``segstream`` command: a thin dispatcher over subcommands.

Each subcommand lives in the package it belongs to, in a module that exposes
``register(subparsers)``; that module must be cheap to import (heavy imports go
inside the command's function) so that ``segstream --help`` stays fast.
Only commands listed in :data:`COMMANDS` exist, and only working ones are listed.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from state.errors import SegstreamError

# Subcommand name -> module exposing register(subparsers). Order is the order in --help.
COMMANDS: tuple[tuple[str, str], ...] = (
    ("dev", "state.devstack_cli"),
    ("produce", "producer.cli"),
    ("consume", "consumer.cli"),
    ("offline", "offline.cli"),
    ("lookup", "state.lookup_cli"),
    ("demo", "producer.demo"),
)


def package_version() -> str:
    try:
        return version("segstream")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segstream",
        description="Real-time customer segmentation: offline job, streaming consumer, tools.",
    )
    parser.add_argument("--version", action="version", version=f"segstream {package_version()}")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level (logs go to stderr as key=value lines)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for _name, module in COMMANDS:
        importlib.import_module(module).register(sub)
    return parser


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level),
        stream=sys.stderr,
        format="ts=%(asctime)s level=%(levelname)s logger=%(name)s msg=%(message)s",
    )
    # kafka-python narrates every connection at INFO; keep its warnings and errors only.
    if logging.getLogger().level > logging.DEBUG:
        logging.getLogger("kafka").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    configure_logging(args.log_level)
    try:
        return int(args.func(args) or 0)
    except SegstreamError as exc:
        print(f"segstream: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("segstream: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
