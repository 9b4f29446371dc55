"""The README's commands exist: every `segstream ...` example parses with the real CLI,
and the configuration table lists exactly the settings' environment names."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from state.cli import build_parser
from state.config import env_names

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def readme_commands() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", README, flags=re.S)
    lines = [line.split("#", 1)[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith("segstream ")]


@pytest.mark.parametrize("line", readme_commands())
def test_readme_command_parses(line: str) -> None:
    args = build_parser().parse_args(shlex.split(line)[1:])
    assert callable(args.func)


def test_readme_has_the_two_commands() -> None:
    assert "make demo" in README and "make test" in README
    assert len(readme_commands()) >= 8


def test_every_setting_is_documented_in_the_readme_or_the_consumer_doc() -> None:
    names = set(env_names().values())
    in_readme = set(re.findall(r"`((?:KAFKA|REDIS|SEGSTREAM)_[A-Z_]+)`", README))
    assert in_readme <= names  # no stale names in the README's table
    consumer_doc = (Path(__file__).resolve().parents[2] / "docs" / "consumer.md").read_text()
    # The consumer's own tunables live in docs/consumer.md (and `segstream consume --help`).
    undocumented = {n for n in names - in_readme if n not in consumer_doc}
    assert not undocumented
