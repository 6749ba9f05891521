"""A trained policy at hand: a trial's final checkpoint, found through trials.parquet, loaded as
a model and tokenizer or sampled from (`didray sample`)."""

from __future__ import annotations

import argparse
from pathlib import Path, PurePosixPath

import polars as pl

from didray.analysis.load import Results, load
from didray.errors import BadInput
from didray.files import damage
from didray.storage import Storage, is_uri


def checkpoint_dir(results: Results | str | Path, trial_id: str) -> Path:
    """The final checkpoint directory of `trial_id` (weights and tokenizer), as recorded in
    trials.parquet and checked against its integrity index; BadInput naming the trial when it
    is unknown or its checkpoint is gone or damaged."""
    if not isinstance(results, Results):
        results = load(results)
    rows = (results.trials.filter(pl.col("trial_id") == trial_id)
            .select("sweep", "status", "checkpoint_path").collect())
    if rows.height == 0:
        known = results.trials.select("trial_id").collect()["trial_id"].sort().to_list()
        shown = ", ".join(known[:3]) + (", ..." if len(known) > 3 else "")
        raise BadInput(f"trial {trial_id!r} is not in these results ({len(known)} trials: "
                       f"{shown or 'none yet'}; see trials.parquet's trial_id column)")
    if rows.height > 1:
        raise BadInput(f"trial {trial_id!r} is in several sweeps ({', '.join(rows['sweep'])}): "
                       "load the one you mean alone")
    status, recorded = rows["status"][0], rows["checkpoint_path"][0]
    if recorded is None:
        raise BadInput(f"trial {trial_id!r} has no final checkpoint (status {status}): only a "
                       "trial that finished training records one")
    path = _found(recorded, results.locations.get(rows["sweep"][0]), trial_id)
    if problem := damage(path):  # a flipped byte loads as other weights, a cut one not at all
        raise BadInput(f"trial {trial_id!r}: its checkpoint {path} is not what training wrote "
                       f"({problem}); restore the checkpoint directory from a copy of the sweep")
    return path


# A checkpoint lies three levels below its sweep: <Tune experiment, or train>/<trial>/<name>.
BELOW_SWEEP = 3


def _candidates(recorded: str, sweep: str | None) -> list[str]:
    """Where the recorded checkpoint may be, best first. A path relative to the sweep (what
    didray records) joins the sweep's directory or URI; an absolute one (an older didray's)
    is first looked for at its tail in the sweep as it is now, so a moved or copied sweep
    reads its own weights, never those left where it was."""
    if sweep is None:  # Results built in memory: the recorded path is all there is
        return [recorded]
    relative = not (is_uri(recorded) or Path(recorded).is_absolute())
    tail = recorded if relative else "/".join(
        PurePosixPath(recorded.partition("?")[0]).parts[-BELOW_SWEEP:])
    base, mark, query = sweep.partition("?")
    own = f"{base.rstrip('/')}/{tail}{mark}{query}"
    return [own] if relative else [own, recorded]


def _found(recorded: str, sweep: str | None, trial_id: str) -> Path:
    """The checkpoint directory on this machine (pulled into the mirror from a URI)."""
    for where in _candidates(recorded, sweep):
        path = Path(where)
        if is_uri(where):  # a sweep on a remote storage: Ray wrote the checkpoint there
            storage = Storage.of(where)
            storage.pull(storage.local)
            path = storage.local
        if (path / "config.json").is_file():
            return path
    raise BadInput(f"trial {trial_id!r}: its checkpoint {where} is missing (was its tune/ or "
                   "train/ folder deleted?)")


def load_policy(results: Results | str | Path, trial_id: str,
                dtype: str = "float32") -> tuple[object, object]:
    """(model, tokenizer) of a trial's final checkpoint. `results` is a sweep's results
    directory or `load`ed Results. A toy policy's config carries its response mask: its exact
    law applies `didray.worlds.toy.response_hook(model, tokenizer)` to the logits (the
    `Sampler` does this itself)."""
    from didray.worlds.policy import load_policy as load_dir

    model, tokenizer, _ = load_dir(checkpoint_dir(results, trial_id), dtype)
    return model, tokenizer


def add_sample_command(subparsers: argparse._SubParsersAction) -> None:
    """Register `sample` on the `didray` subparsers."""
    sample = subparsers.add_parser(
        "sample", help="print samples of a trial's trained policy, one a line (newlines as \\n)")
    sample.add_argument("results", help="the sweep's results directory (a path or a URI)")
    sample.add_argument("trial", help="trial id (the trial_id column of trials.parquet)")
    sample.add_argument("prompt")
    sample.add_argument("-n", type=int, default=4, help="samples to print (default 4)")
    sample.add_argument("--temperature", type=float, default=1.0, help="0: greedy")
    sample.add_argument("--max-tokens", type=int, default=64)
    sample.add_argument("--seed", type=int, default=0)
    sample.set_defaults(func=cmd_sample)


def cmd_sample(args: argparse.Namespace) -> int:
    from didray.sampling.sampler import Sampler

    if args.n < 1 or args.max_tokens < 1 or args.temperature < 0:
        raise BadInput("sample: -n and --max-tokens must be >= 1, --temperature >= 0")
    sampler = Sampler(checkpoint_dir(args.results, args.trial), backend="transformers")
    drawn = sampler.generate([args.prompt], args.n, args.temperature,
                             max_tokens=args.max_tokens, seed=args.seed)[0]
    for sample in drawn:  # one line each, so the output counts and greps as samples
        print(sample.text.replace("\n", "\\n"))
    return 0
