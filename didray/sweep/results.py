"""Results tables on disk: Parquet files, each replaced atomically and sealed with its size and
sha256 (`didray.files.sealed_write`), so a reader can tell a damaged file from a good one."""

from __future__ import annotations

import io
from pathlib import Path

import polars as pl

from didray.files import has_seals, read_sealed, sealed_write


def write_parquet(frame: pl.DataFrame, path: Path) -> None:
    sealed_write(path, frame.write_parquet)


def read_parquet(path: Path, sweep_dir: Path) -> pl.DataFrame:
    """A results table of the sweep in `sweep_dir`, refused (BadInput) if it no longer
    matches its seal, or has none while the sweep's other tables do."""
    return pl.read_parquet(io.BytesIO(read_sealed(path, has_seals(sweep_dir))))


def rows_frame(rows: list[dict]) -> pl.DataFrame:
    """Rows with differing keys (a failed trial has no eval scores) as one frame, nulls filled."""
    return pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()
