"""The README's first command, `make demo`, end to end in a short mode.

It runs on embedded defaults exactly as a newcomer's machine would: no
KAFKA_BOOTSTRAP_SERVERS/REDIS_URL, so the demo starts (and must stop) its own
Redis and Tansu broker. The demo checks its own results and exits 1 on failure.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _alive(pid: int) -> bool:
    """True while ``pid`` is a live (not zombie) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_make_demo_runs_end_to_end_and_cleans_up(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL"} and not k.startswith("MAKE")
    }
    out = tmp_path / "demo"
    proc = subprocess.run(
        [
            "make",
            "-C",
            str(ROOT),
            "demo",
            "DEMO_SECONDS=10",
            "DEMO_CUSTOMERS=1500",
            f"DEMO_ARGS=--out {out} --rate 200",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "demo finished: all checks passed" in proc.stdout
    assert "$ segstream offline fit" in proc.stdout
    assert "$ segstream offline publish" in proc.stdout
    assert "adjusted Rand index, online segments vs simulator truth:" in proc.stdout
    assert "segment=" in proc.stdout  # lookups answered
    assert (out / "fit" / "report.html").exists()
    assert (out / "fit" / "model.json").exists()
    assert "FAIL" not in proc.stdout
    # Every server the demo started (it logs their PIDs) is gone.
    started = [int(p) for p in re.findall(r"msg=started kind=\w+ pid=(\d+)", proc.stderr)]
    assert len(started) == 2, proc.stderr[-2000:]
    assert not [pid for pid in started if _alive(pid)]
