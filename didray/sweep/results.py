"""Results tables on disk: Parquet files, each replaced atomically (`didray.files`)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from didray.files import atomic_write


def write_parquet(frame: pl.DataFrame, path: Path) -> None:
    atomic_write(path, frame.write_parquet)


def rows_frame(rows: list[dict]) -> pl.DataFrame:
    """Rows with differing keys (a failed trial has no eval scores) as one frame, nulls filled."""
    return pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()
