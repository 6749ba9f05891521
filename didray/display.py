"""Printing Polars frames the same way everywhere (terminal table, markdown or CSV), and the
progress of long phases."""

from __future__ import annotations

import math
import shutil
import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:  # imported where used: Train workers import `Progress`, never polars
    import polars as pl


def number(value: float, precision: int) -> str:
    """`value` with `precision` decimals (0.5 as 0.500), or `precision` significant digits
    where the decimals would keep fewer than two of them: a learning rate of 0.0003 prints as
    0.0003, not 0.000."""
    if value != 0 and abs(value) < 10 ** (1 - precision):
        return f"{value:.{precision}g}"
    return f"{value:.{precision}f}"


def readable_numbers(frame: pl.DataFrame, precision: int | None) -> pl.DataFrame:
    """Float columns as right-aligned text by `number` (None: as they are)."""
    import polars as pl

    if precision is None:
        return frame
    floats = [c for c, dtype in frame.schema.items() if dtype.is_float()]
    texts = frame.select(pl.col(c).map_elements(lambda v: number(v, precision),
                                                return_dtype=pl.String) for c in floats)
    return frame.with_columns(
        texts[c].str.pad_start(texts[c].str.len_chars().max() or 0) for c in floats)


def column_width(frame: pl.DataFrame, name: str) -> int:
    """An upper bound of a column's printed width: its longest header or value, plus
    borders."""
    import polars as pl

    values = frame[name].cast(pl.String).str.len_chars().max() if frame.height else 0
    return max(len(name), values or 4) + 3  # 4: "null"


# Columns that say which row is which: repeated at the head of every continuation block.
ROW_KEYS = ("sweep", "regime", "beta", "seed", "step", "score", "claim")


def column_blocks(frame: pl.DataFrame, width: int) -> list[list[str]]:
    """The columns in consecutive runs that each fit `width` (a column wider alone gets its
    own run): a wide table prints as several narrower ones instead of wrapping every cell.
    Every run after the first starts with the row keys, so its rows can still be read.

    Not rich's Table: it fits a wide table by shrinking every column, folding cells (the
    demo's 17-column table at 100 columns printed 5.495 as "5.4" over "95") or, with no_wrap,
    cutting them ("5…"); it has no way to split the columns into several tables."""
    keys = [c for c in frame.columns if c in ROW_KEYS]
    key_width = sum(column_width(frame, k) for k in keys)
    blocks: list[list[str]] = [[]]
    used = 1
    for name in frame.columns:
        need = column_width(frame, name)
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
    frame = readable_numbers(frame, precision)
    # A table on a terminal fits it, split into column blocks; piped, in a file or a Ray job
    # log (the dashboard scrolls sideways) it stays one table, as markdown always does.
    on_terminal = fmt == "table" and sys.stdout.isatty()
    blocks = (column_blocks(frame, shutil.get_terminal_size().columns) if on_terminal
              else [frame.columns])
    with pl.Config(tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=1000, tbl_width_chars=65_000,
                   tbl_formatting="MARKDOWN" if fmt == "md" else None,
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
    A context manager; `update(n)` counts n more units done.

    The quarter lines are not tqdm's or rich's own modes for a non-terminal: tqdm's
    `disable=None` prints nothing there, and otherwise (even with `miniters`) writes its
    redraws joined by carriage returns on one line, which a Ray job log and the `(pid=...)`
    relay of a task's output show as a single line; rich's Progress prints only the final
    state."""

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
