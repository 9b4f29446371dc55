"""``segstream dev up|down|status``: a local broker and Redis for development, no Docker.

``up`` starts the Tansu broker and ``redis-server`` in the background (own session,
logs in the state directory), returns once both answer, and prints only shell
``export`` lines on stdout, so ``eval "$(segstream dev up)"`` works; messages go to
stderr. Servers still running from an earlier ``up`` are reused. ``down`` stops exactly
the processes recorded by ``up`` (by PID, and only if that PID is still the process that
was started). ``status`` reports and exits 0 only if both answer.

The state directory is ``.segstream`` in the current directory, or ``$SEGSTREAM_DEV_DIR``;
it holds ``dev.json`` (PIDs, ports, mode 0600 since it may hold the Redis password) and
the server logs.

>>> export_lines({"kafka": {"bootstrap": "127.0.0.1:9"}, "redis": {"url": "redis://h:1/0"}})
['export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9', 'export REDIS_URL=redis://h:1/0']
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any

STATE_DIR_ENV = "SEGSTREAM_DEV_DIR"
STATE_FILE = "dev.json"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dev",
        help="start/stop a local Kafka-protocol broker (Tansu) and Redis for development",
        description=__doc__.split("\n\n>>>")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=lambda args: p.print_help() or 2)
    dev = p.add_subparsers(dest="dev_command", metavar="ACTION", title="actions")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "--state-dir",
            default=os.environ.get(STATE_DIR_ENV) or ".segstream",
            help=f"where dev.json and the logs live [env: {STATE_DIR_ENV}] (default: .segstream)",
        )

    up = dev.add_parser("up", help="start both servers (or reuse running ones), print exports")
    common(up)
    up.add_argument("--kafka-port", type=int, default=0, help="broker port (default: a free one)")
    up.add_argument("--redis-port", type=int, default=0, help="Redis port (default: a free one)")
    up.add_argument(
        "--redis-password",
        default=None,
        type=_url_safe_password,
        help="require this Redis password (letters, digits and ._~- only)",
    )
    up.add_argument("--timeout", type=float, default=20.0, help="seconds to wait for readiness")
    up.set_defaults(func=cmd_up)

    down = dev.add_parser("down", help="stop exactly what 'dev up' started")
    common(down)
    down.set_defaults(func=cmd_down)

    status = dev.add_parser("status", help="show the servers; exit 0 only if both answer")
    common(status)
    status.set_defaults(func=cmd_status)


def _url_safe_password(value: str) -> str:
    """Passwords go into REDIS_URL unescaped (redis-cli -u does not decode %XX).

    >>> _url_safe_password("s3cret-1")
    's3cret-1'
    """
    if not re.fullmatch(r"[A-Za-z0-9._~-]+", value):
        raise argparse.ArgumentTypeError("use only letters, digits and ._~- in a dev password")
    return value


def _say(message: str) -> None:
    print(f"segstream dev: {message}", file=sys.stderr)


def _state_path(args: argparse.Namespace) -> Path:
    return Path(args.state_dir).resolve() / STATE_FILE


def load_state(path: Path) -> dict[str, Any]:
    """The recorded servers (empty if there is no state file)."""
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        from state.errors import DevStackError

        raise DevStackError(f"unreadable state file {path}: {exc}") from exc


def save_state(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"version": 1, **state}, f, indent=2)
    tmp.replace(path)


def export_lines(state: dict[str, Any]) -> list[str]:
    """Shell lines that point clients at the recorded servers."""
    return [
        f"export KAFKA_BOOTSTRAP_SERVERS={shlex.quote(state['kafka']['bootstrap'])}",
        f"export REDIS_URL={shlex.quote(state['redis']['url'])}",
    ]


def _servers(state_dir: Path, args: argparse.Namespace | None = None) -> dict[str, Any]:
    from state.devstack import RedisServer, TansuBroker

    return {
        "kafka": TansuBroker(port=getattr(args, "kafka_port", 0), workdir=state_dir / "kafka"),
        "redis": RedisServer(
            port=getattr(args, "redis_port", 0),
            workdir=state_dir / "redis",
            password=getattr(args, "redis_password", None),
        ),
    }


def cmd_up(args: argparse.Namespace) -> int:
    path = _state_path(args)
    state = load_state(path)
    servers = _servers(path.parent, args)
    for kind, server in servers.items():
        record = state.get(kind)
        if record:
            server.adopt(record)
            if server.is_running() and server.ping():
                _say(f"reusing {kind} pid={server.pid} port={server.port}")
                continue
            if server.is_running():  # alive but not answering: replace it
                _say(f"{kind} pid={server.pid} does not answer; restarting it")
                server.stop()
            server.pid = None
            server.port = getattr(args, f"{kind}_port")
            if kind == "redis":
                server.password = args.redis_password
        server.start(detach=True, timeout=args.timeout)
        state[kind] = server.to_record()
        save_state(path, state)  # record each server as soon as it runs: down can stop it
        _say(f"started {kind} pid={server.pid} port={server.port} log={server.log_path}")
    for kind, server in servers.items():
        state[kind] = server.to_record()
    save_state(path, state)
    print("\n".join(export_lines(state)))
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    path = _state_path(args)
    state = load_state(path)
    if not state:
        _say(f"nothing to stop (no {path})")
        return 0
    servers = _servers(path.parent)
    for kind, server in servers.items():
        record = state.get(kind)
        if not record:
            continue
        server.adopt(record)
        if server.is_running():
            server.stop()
            _say(f"stopped {kind} pid={record['pid']}")
        else:
            _say(f"{kind} pid={record['pid']} was not running (or the PID is another process now)")
    path.unlink(missing_ok=True)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    path = _state_path(args)
    state = load_state(path)
    servers = _servers(path.parent)
    healthy = True
    for kind, server in servers.items():
        record = state.get(kind)
        if not record:
            print(f"{kind}: not started")
            healthy = False
            continue
        server.adopt(record)
        running = server.is_running()
        answers = running and server.ping()
        healthy = healthy and answers
        where = record.get("bootstrap") or _masked(record.get("url", ""))
        word = "up" if answers else ("not answering" if running else "stopped")
        print(f"{kind}: {word} pid={record['pid']} {where} log={record['log']}")
    return 0 if healthy else 1


def _masked(url: str) -> str:
    from state.config import mask_url

    return mask_url(url)
