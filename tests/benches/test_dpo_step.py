"""bench/dpo_step.py keeps its promise: under one recipe didray's loop and the plain one lose
the same at every step, and a planted difference (the plain loop at another beta) fails the run.
Each contender runs in this process (the bench's `measure`, what every fresh process runs) on a
tiny setting: 16 pairs, 4 a step, 4 untimed and 6 timed steps."""

import importlib.util
import math
import sys

import pytest
import torch
from support.sweeps import ROOT

spec = importlib.util.spec_from_file_location("dpo_step", ROOT / "bench" / "dpo_step.py")
bench = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = bench  # its dataclasses look their module up there
spec.loader.exec_module(bench)

TINY = ["--pairs", "16", "--batch", "4", "--warmup", "4", "--steps", "6", "--repeats", "1"]
PLANTED = "plain (users') at beta 0.2"


@pytest.fixture(scope="module")
def runs():
    """Every plain-loop contender and didray under both recipes, and the planted run, on one
    thread: two spin-wait on a loaded 2-core machine, 30 times slower (seen at load 20)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        opts = bench.options(TINY)
        found = {name: bench.measure(name, opts) for name in list(bench.CONTENDERS)[:4]}
        yield found | {PLANTED: bench.measure("plain (users')",
                                              bench.options([*TINY, "--beta", "0.2"]))}
    finally:
        torch.set_num_threads(threads)


def test_the_users_recipe_warms_up_from_zero_and_both_loops_agree(runs):
    """10 steps, so one warmup step at learning rate 0: the first two steps see pi_ref's own
    weights, where every margin is 0 and the loss log 2."""
    didray, plain = runs["didray (users' recipe)"]["losses"], runs["plain (users')"]["losses"]
    assert didray[:2] == pytest.approx([math.log(2)] * 2, abs=1e-6)
    assert plain[:2] == pytest.approx([math.log(2)] * 2, abs=1e-6)
    assert abs(didray[2] - math.log(2)) > 1e-4  # trained from the second step on
    assert bench.disagreement(didray, plain, True, 1e-5) is None
    assert bench.agreement({k: [v] for k, v in runs.items() if k != PLANTED}, 1e-5) == []


def test_a_beta_mismatch_fails_the_run_under_the_same_recipe_only(runs):
    """At beta 0.2 the plain loop agrees until the first update (margins 0), then not: the
    same-recipe check names the step; across recipes only the first step is compared."""
    didray, planted = runs["didray (users' recipe)"]["losses"], runs[PLANTED]["losses"]
    problem = bench.disagreement(didray, planted, True, 1e-5)
    assert problem is not None and problem.startswith("step ") and "> 1e-05" in problem
    assert int(problem.split()[1].rstrip(":")) >= 3
    assert bench.disagreement(runs["didray (didray's recipe)"]["losses"], planted, False,
                              1e-5) is None
    results = {k: [v] for k, v in runs.items() if k not in (PLANTED, "plain (users')")}
    failures = bench.agreement(results | {"plain (users')": [runs[PLANTED]]}, 1e-5)
    assert len(failures) == 1 and failures[0].startswith(
        "didray (users' recipe) and plain (users'), step ")


def test_the_table_gives_didray_over_each_plain_loop_under_its_recipe(runs, capsys):
    results = {k: [v] for k, v in runs.items() if k != PLANTED}
    bench.report(results, bench.options(TINY))
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in capsys.readouterr().out
            .splitlines() if line.startswith("| ")}
    for didray, plain in (("didray (didray's recipe)", "plain (didray's way)"),
                          ("didray (users' recipe)", "plain (users')")):
        wall, cpu = ({name: runs[name]["steps"] / runs[name][clock] for name in (didray, plain)}
                     for clock in ("seconds", "cpu_seconds"))
        assert rows[plain][-1] == (f"{wall[didray] / wall[plain]:.3f} / "
                                   f"{cpu[didray] / cpu[plain]:.3f} |")
        assert rows[didray][-1] == " |"
