"""Writing and reading the artefacts of a fit directory.

* ``DIR/model.json``: exactly :meth:`state.model.SegmentModel.to_dict` (what the registry stores);
* ``DIR/assignments.parquet``: one row per customer: ``customer_id``, ``segment_id``,
  ``segment_name``, RFM columns (with transactions), every feature (raw units);
* ``DIR/states.parquet``: every customer's state fields (what ``publish`` seeds into Redis);
* ``DIR/report.html`` (+ PNGs) from :func:`offline.report.write_report` when that module exists.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import pandas as pd

from offline.result import FitResult
from state.errors import ConfigError
from state.model import SegmentModel

logger = logging.getLogger(__name__)

MODEL_FILE = "model.json"
ASSIGNMENTS_FILE = "assignments.parquet"
STATES_FILE = "states.parquet"


def _parquet_ready(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.reset_index()
    for col in out.columns:
        if out[col].dtype == object:
            out[col] = out[col].map(lambda v: None if v is None or v != v else str(v))
    return out


def write_artifacts(result: FitResult, out_dir: str | Path, *, report: bool = True) -> list[Path]:
    """Write the fit's files into ``out_dir`` (created if needed); returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / MODEL_FILE, out / ASSIGNMENTS_FILE]
    paths[0].write_text(
        json.dumps(result.model.to_dict(), indent=2, allow_nan=False) + "\n", encoding="utf-8"
    )
    front = ["segment_id", "segment_name"]
    assignments = result.customers[front + [c for c in result.customers.columns if c not in front]]
    _parquet_ready(assignments).to_parquet(paths[1], index=False)
    if result.states is not None:
        paths.append(out / STATES_FILE)
        _parquet_ready(result.states).to_parquet(paths[-1], index=False)
    if report and importlib.util.find_spec("offline.report") is not None:
        from offline.report import write_report

        paths.append(Path(write_report(result, out)))
    logger.info("artifacts written dir=%s files=%d", out, len(paths))
    return paths


def read_model(fit_dir: str | Path) -> SegmentModel:
    """The model of a fit directory."""
    path = Path(fit_dir) / MODEL_FILE
    if not path.exists():
        raise ConfigError(f"{path} does not exist: run 'segstream offline fit --out {fit_dir}'")
    return SegmentModel.from_dict(json.loads(path.read_text(encoding="utf-8")))


def read_assignments(fit_dir: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """The assignments of a fit directory (all columns, or ``columns``), indexed by
    customer id."""
    path = Path(fit_dir) / ASSIGNMENTS_FILE
    if not path.exists():
        raise ConfigError(f"{path} does not exist")
    wanted = None if columns is None else ["customer_id", *columns]
    return pd.read_parquet(path, columns=wanted).set_index("customer_id")


def read_states(fit_dir: str | Path) -> pd.DataFrame:
    """The customer states of a fit directory, indexed by customer id."""
    path = Path(fit_dir) / STATES_FILE
    if not path.exists():
        raise ConfigError(f"{path} does not exist (written by 'segstream offline fit')")
    return pd.read_parquet(path).set_index("customer_id")
