"""`segstream consume` wiring that needs no server: flags, env, signals."""

from __future__ import annotations

import os
import signal

import pytest

from consumer.cli import _run_options, install_signal_handlers
from state.cli import build_parser


def test_help_lists_every_flag_with_its_env_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["consume", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for env in ("SEGSTREAM_MAX_POLL_RECORDS", "SEGSTREAM_IDLE_TIMEOUT", "KAFKA_BOOTSTRAP_SERVERS"):
        assert f"[env: {env}]" in text


def test_stop_flags_come_from_flags_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    args = build_parser().parse_args(["consume", "--max-events", "10"])
    monkeypatch.setenv("SEGSTREAM_IDLE_TIMEOUT", "2.5")
    opts = _run_options(args)
    assert opts["max_events"] == 10 and opts["idle_timeout"] == 2.5 and opts["timeout"] is None


def test_first_signal_stops_after_the_batch_second_sigint_exits_at_once() -> None:
    stops: list[int] = []
    exits: list[int] = []
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        install_signal_handlers(lambda: stops.append(1), hard_exit=exits.append)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stops == [1] and exits == []
        os.kill(os.getpid(), signal.SIGINT)
        assert stops == [1, 1] and exits == []
        os.kill(os.getpid(), signal.SIGINT)
        assert exits == [130]
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
