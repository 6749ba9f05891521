"""A trial's trained policy from the CI sweep's results: `load_policy` and `didray sample`."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from didray.analysis import load_policy
from didray.analysis.policy import checkpoint_dir
from didray.errors import BadInput
from didray.sampling.sampler import Sampler
from didray.sweep.results import read_parquet, write_parquet
from didray.worlds.text import batched_response_logps, encode_ids
from didray.worlds.toy import load_world, response_hook

ROOT = Path(__file__).parents[2]


def final_trial(results_dir: Path) -> tuple[str, Path]:
    """A finished trial and the checkpoint directory trials.parquet records for it (relative
    to the sweep)."""
    row = (pl.read_parquet(results_dir / "trials.parquet")
           .filter(pl.col("status") == "TERMINATED").sort("trial_id").row(0, named=True))
    return row["trial_id"], results_dir / row["checkpoint_path"]


def test_load_policy_is_the_trials_last_checkpoint(ci_sweep):
    _, results_dir = ci_sweep
    trial_id, recorded = final_trial(results_dir)
    # The recorded checkpoint is the trial's last one (ci.yaml: 6 steps, one every 2).
    assert recorded.name == max(p.name for p in recorded.parent.glob("checkpoint_*"))
    (ref_dir,) = (results_dir.parent / "cache" / "toy").iterdir()
    world, _, _ = load_world(ref_dir)
    prompts = [p.text for p in world.all_prompts]
    drawn = Sampler(ref_dir, "transformers").generate(prompts, n=2, max_tokens=8)
    pairs = [(p, list(c.token_ids)) for p, draws in zip(prompts, drawn, strict=True)
             for c in draws]
    prompts, responses = [p for p, _ in pairs], [r for _, r in pairs]

    model, tokenizer = load_policy(results_dir, trial_id)
    enc = encode_ids(tokenizer, prompts, responses)
    loaded = batched_response_logps(model, enc, response_hook(model, tokenizer)).tolist()
    direct = Sampler(recorded, "transformers").score_ids(prompts, responses)
    ref = Sampler(ref_dir, "transformers").score_ids(prompts, responses)
    assert loaded == direct
    assert max(abs(a - b) for a, b in zip(loaded, ref, strict=True)) > 1e-3


def test_load_policy_names_an_unknown_trial(ci_sweep):
    with pytest.raises(BadInput, match="trial 'nope' is not in these results"):
        load_policy(ci_sweep[1], "nope")


def test_load_policy_names_a_trial_whose_checkpoint_is_gone(ci_sweep, tmp_path):
    _, results_dir = ci_sweep
    trial_id, _ = final_trial(results_dir)
    moved = tmp_path / "ci"
    moved.mkdir()
    trials = pl.read_parquet(results_dir / "trials.parquet")
    # Sealed as didray writes it: the copied manifest says the sweep's tables are sealed.
    write_parquet(trials.with_columns(checkpoint_path=pl.lit(str(tmp_path / "gone"))),
                  moved / "trials.parquet")
    (moved / "manifest.json").write_bytes((results_dir / "manifest.json").read_bytes())
    with pytest.raises(BadInput, match=f"trial '{trial_id}': its checkpoint .*gone is missing"):
        load_policy(moved, trial_id)


def sample(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "didray", "sample", *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_sample_prints_n_lines(ci_sweep):
    trial_id, _ = final_trial(ci_sweep[1])
    done = sample(str(ci_sweep[1]), trial_id, "name 2 colours", "-n", "5", "--max-tokens", "8")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 5 and all(lines)


def test_sample_of_an_unknown_trial_exits_2_with_one_paragraph(ci_sweep):
    done = sample(str(ci_sweep[1]), "nope", "name 2 colours")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("didray: trial 'nope' is not in these results")
    assert "\n\n" not in done.stderr.strip() and "Traceback" not in done.stderr


def copied(results_dir: Path, tmp_path: Path) -> Path:
    """The sweep copied elsewhere, its original left in place."""
    copy = tmp_path / "moved" / "ci"
    shutil.copytree(results_dir, copy)
    return copy


def test_a_moved_sweep_reads_its_own_checkpoints(ci_sweep, tmp_path):
    _, results_dir = ci_sweep
    copy = copied(results_dir, tmp_path)
    trials = read_parquet(copy / "trials.parquet", copy)
    recorded = trials["checkpoint_path"].drop_nulls()
    assert recorded.len() == 4 and not any(Path(p).is_absolute() for p in recorded)
    # An older didray recorded absolute paths: the first trial's names the original sweep,
    # which still exists; the copy's own checkpoint must be read all the same.
    first = trials["trial_id"].sort()[0]
    write_parquet(trials.with_columns(checkpoint_path=pl.when(pl.col("trial_id") == first)
                                      .then(pl.lit(f"{results_dir}/") + pl.col("checkpoint_path"))
                                      .otherwise(pl.col("checkpoint_path"))),
                  copy / "trials.parquet")
    for trial_id in trials["trial_id"]:
        found = checkpoint_dir(copy, trial_id)
        assert found.is_relative_to(copy) and (found / "model.safetensors").is_file(), found


def test_a_damaged_or_truncated_checkpoint_is_refused_in_one_paragraph(ci_sweep, tmp_path):
    copy = copied(ci_sweep[1], tmp_path)
    trial_id, path = final_trial(copy)
    assert path.is_relative_to(copy)  # never damage the session's sweep
    weights = path / "model.safetensors"
    good = weights.read_bytes()
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x01  # loads as other weights: only the index tells
    weights.write_bytes(bytes(flipped))
    refused = (f"trial '{trial_id}': its checkpoint {re.escape(str(path))} is not what "
               "training wrote \\(model.safetensors ")
    with pytest.raises(BadInput, match=refused + "differs from what was written"):
        load_policy(copy, trial_id)
    done = sample(str(copy), trial_id, "name 2 colours")
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert re.match("didray: " + refused, done.stderr)
    assert "\n\n" not in done.stderr.strip() and "Traceback" not in done.stderr
    weights.write_bytes(good[: len(good) // 2])  # a copy cut short
    with pytest.raises(BadInput, match=refused + f"has {len(good) // 2} bytes, {len(good)} were"):
        load_policy(copy, trial_id)
