"""A hand-built toy sweep whose instruction verdict flips with the judge weight (tests of
didray.analysis: the weight table, the verdict row, the figure, `didray analyze`)."""

import polars as pl


def judge_frame(own_weight: float) -> pl.DataFrame:
    """Six regimes (datasets, the independent units) at one beta whose judge part falls and
    coverage part rises with DID entropy: for i = 1..6, H = i, judge (7 - i) / 10, coverage
    0.12 i. At judge weight w the instruction score is 0.7 (1 - w) + i (0.22 w - 0.1): it ranks
    the trials against H by the sign of 0.22 w - 0.1, Spearman -1 below w = 5/11 and +1 above.
    The trials' instruction_score is read at `own_weight`, their pre-registered weight."""
    i = range(1, 7)
    return pl.DataFrame({
        "trial_id": [f"t{k}" for k in i], "regime": [f"r{k}" for k in i], "beta": [1.0] * 6,
        "seed": [0] * 6, "status": ["TERMINATED"] * 6, "did_entropy": [float(k) for k in i],
        "did_entropy_estimator": ["exact"] * 6, "instruction_judge": [(7 - k) / 10 for k in i],
        "instruction_coverage": [0.12 * k for k in i], "judge_weight": [own_weight] * 6,
    }).with_columns(instruction_score=(1 - own_weight) * pl.col("instruction_judge")
                    + own_weight * pl.col("instruction_coverage"))
