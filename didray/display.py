"""Printing Polars frames the same way everywhere: terminal table, markdown or CSV."""

from __future__ import annotations

import polars as pl


def print_frame(frame: pl.DataFrame, fmt: str, precision: int | None = None) -> None:
    if fmt == "csv":
        print(frame.write_csv(), end="")
        return
    with pl.Config(tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=80, tbl_width_chars=250,
                   float_precision=precision, tbl_formatting="MARKDOWN" if fmt == "md" else None,
                   tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
        print(frame)
