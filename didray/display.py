"""Printing Polars frames the same way everywhere (terminal table, markdown or CSV), and the
progress of long phases."""

from __future__ import annotations

import math
import shutil
import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:  # imported where used: Train workers import `Progress`, never polars
    import polars as pl


def column_width(frame: pl.DataFrame, name: str, precision: int | None = None) -> int:
    """An upper bound of a column's printed width: its longest header or value, plus borders.
    Floats print with `precision` decimals where it is given (0.5 as 0.500)."""
    import polars as pl

    column = frame[name]
    if precision is not None and column.dtype.is_float():
        column = column.map_elements(lambda v: f"{v:.{precision}f}", return_dtype=pl.String)
    values = column.cast(pl.String).str.len_chars().max() if frame.height else 0
    return max(len(name), values or 4) + 3  # 4: "null"


# Columns that say which row is which: repeated at the head of every continuation block.
ROW_KEYS = ("sweep", "regime", "beta", "seed", "step", "score", "claim")


def column_blocks(frame: pl.DataFrame, width: int,
                  precision: int | None = None) -> list[list[str]]:
    """The columns in consecutive runs that each fit `width` (a column wider alone gets its
    own run): a wide table prints as several narrower ones instead of wrapping every cell.
    Every run after the first starts with the row keys, so its rows can still be read."""
    keys = [c for c in frame.columns if c in ROW_KEYS]
    key_width = sum(column_width(frame, k, precision) for k in keys)
    blocks: list[list[str]] = [[]]
    used = 1
    for name in frame.columns:
        need = column_width(frame, name, precision)
        if blocks[-1] and used + need > width:
            blocks.append(list(keys))
            used = 1 + key_width
        if name not in blocks[-1]:
            blocks[-1].append(name)
            used += need
    return blocks


def print_frame(frame: pl.DataFrame, fmt: str, precision: int | None = None) -> None:
    import polars as pl

    if fmt == "csv":
        print(frame.write_csv(), end="")
        return
    # Terminal tables fit the terminal (80 columns when not a terminal); markdown is for
    # files and stays one table.
    width = shutil.get_terminal_size().columns
    blocks = column_blocks(frame, width, precision) if fmt == "table" else [frame.columns]
    with pl.Config(tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=80, tbl_width_chars=10_000,
                   float_precision=precision, tbl_formatting="MARKDOWN" if fmt == "md" else None,
                   tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
        print("\n".join(str(frame.select(block)) for block in blocks))


def checkpoints(total: int, parts: int = 4) -> list[int]:
    """The counts at which plain progress prints: each 1/parts of `total` (25%, 50%, ...),
    once each (a total below `parts` prints at each unit)."""
    return sorted({math.ceil(total * i / parts) for i in range(1, parts + 1)} - {0})


class Progress:
    """Progress of a long phase of `total` units: a tqdm bar (count, rate, ETA) on a terminal;
    elsewhere (Ray job logs, a Ray task's output relayed to the driver with a prefix) a plain
    "[didray] what: k/N" line at each quarter, so a log gets four lines, not a bar's redraws.
    A context manager; `update(n)` counts n more units done."""

    def __init__(self, what: str, total: int, stream: TextIO | None = None) -> None:
        self.what, self.total, self.done = what, total, 0
        self.stream = stream or sys.stderr
        self.marks = checkpoints(total)
        self.bar = None
        if self.stream.isatty():
            from tqdm import tqdm  # a transformers dependency

            self.bar = tqdm(total=total, desc=f"[didray] {what}", file=self.stream,
                            leave=False, dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        before, self.done = self.done, self.done + n
        if self.bar is not None:
            self.bar.update(n)
        elif any(before < mark <= self.done for mark in self.marks):
            print(f"[didray] {self.what}: {self.done}/{self.total}", file=self.stream,
                  flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()
