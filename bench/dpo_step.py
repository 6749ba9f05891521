"""didray's DPO step against plain hand-written PyTorch DPO loops, and TRL's `DPOTrainer` when
`trl` is installed, on the same batches with a precomputed reference.

Two recipes, each run by didray's loop (`train_dpo`, as a trial runs it) and by a plain loop:

- didray's: a sweep's defaults (constant learning rate, no clipping); its plain loop is written
  didray's way (fused AdamW, `zero_grad(set_to_none=True)` before the step).
- users': as TRL and most hand-written loops train, linear warmup (the first tenth of the steps)
  and linear decay by `LambdaLR`, `clip_grad_norm_(..., 1.0)`, torch's default AdamW and
  `zero_grad(set_to_none=True)` after the step; didray runs it as `train.lr_schedule: linear`,
  `warmup_steps` and `max_grad_norm: 1.0`.

Both loops pad each batch to its longest row, as a collator does. Each contender trains its own
copy of one randomly initialised Llama built in place (nothing is downloaded), step for step on
the same pair batches, so under the same recipe the losses must agree: the run fails unless
|didray - plain| <= 1e-5 at every step (float32; 1e-2 in bfloat16, where the two may round
differently and drift apart). Across recipes only the first step's loss is compared (the same
weights, before any update). Every repeat of every contender is a fresh process (imports, model,
reference), the contenders interleaved in an order that rotates from repeat to repeat, so load
from other processes on a shared machine falls on every contender alike. Prints steps/s and
tokens/s (real tokens of the chosen + rejected rows) as median [min-max] over the repeats and
the ratio didray/plain under the same recipe; on CPU also steps per CPU-second of the process
and that ratio (less sensitive to other processes), on CUDA the model FLOPs utilisation (MFU):

    FLOPs per step = 6 * N * tokens + 12 * layers * hidden * sum over rows of length^2

N counts every parameter except the input embedding (a lookup, not a matmul); the second term is
attention (QK^T and AV, forward and backward, without halving for causality, as in PaLM's MFU).
MFU = FLOPs per second / (--peak-tflops * 1e12); the default 989 is H100/H200 bf16 dense.
TRL's row (didray's recipe) times `DPOTrainer.training_step` (its collator, loss and backward)
and an optimizer step, not the `Trainer.train` loop around it.

    python bench/dpo_step.py --threads 1                              # tiny Llama on CPU
    python bench/dpo_step.py --device cuda --dtype bfloat16 --model 125m
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from statistics import median

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import LlamaConfig, LlamaForCausalLM

from didray.core.dpo import PreferenceLoss
from didray.data.tensors import PairTensors
from didray.train.loop import (
    Batches,
    batch_indices,
    lr_schedule,
    make_optimizer,
    row_lengths,
    train_dpo,
)
from didray.worlds.text import Encoded, batched_response_logps

# Llama shapes and the range of row lengths (prompt + response tokens) of each benchmark model.
MODELS = {
    "tiny": (dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=256, vocab_size=512), (40, 90)),
    "125m": (dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                  intermediate_size=3072, vocab_size=32000), (128, 512)),
}
LR, WEIGHT_DECAY, PAD = 1e-4, 0.0, 0
TOLERANCE = {"float32": 1e-5, "bfloat16": 1e-2}


@dataclass(frozen=True)
class Recipe:
    """How the optimizer steps: the learning rate's schedule (as `train.lr_schedule`), the
    share of the steps spent warming up, and the clipping norm (None: not clipped)."""

    name: str
    schedule: str
    warmup_share: float
    max_grad_norm: float | None

    def warmup_steps(self, total: int) -> int:
        return int(total * self.warmup_share)


DIDRAYS = Recipe("didray's", "constant", 0.0, None)
USERS = Recipe("users'", "linear", 0.1, 1.0)

# A contender trains on steps [a, b) and returns each step's loss (0-d tensors).
Steps = Callable[[range], list[Tensor]]


@dataclass(frozen=True)
class Setting:
    """What every contender of a run shares: its model's copy, the data, the loss, which pairs
    each step takes and how many steps the run has (the schedules' length)."""

    model: LlamaForCausalLM
    data: PairTensors
    loss: PreferenceLoss
    batches: Batches
    total: int


def didray_contender(s: Setting, recipe: Recipe) -> Steps:
    """didray's loop as a trial runs it (`run_rank` passes the same arguments)."""
    optimizer = make_optimizer(s.model.parameters(), "adamw", LR, WEIGHT_DECAY)
    lr_at = lr_schedule(LR, s.total, recipe.schedule, recipe.warmup_steps(s.total))

    def train(steps: range) -> list[Tensor]:
        losses = []
        train_dpo(s.model, optimizer, s.data, s.loss, s.batches, steps, lr_at=lr_at,
                  max_grad_norm=recipe.max_grad_norm,
                  on_step=lambda _, metrics: losses.append(metrics["loss"]))
        return losses

    return train


def plain_loss(s: Setting, lengths: Tensor, step: int) -> Tensor:
    """The DPO loss of step `step`'s pairs, written by hand with no didray code."""
    enc, n, idx = s.data.enc, s.data.n, s.batches.at(s.data.n, step)
    rows = torch.cat([idx, idx + n])
    width = int(lengths[rows].max())  # the batch padded to its longest row, as a collator does
    rows = rows.to(enc.input_ids.device, non_blocking=True)
    ids, mask = enc.input_ids[rows, :width], enc.attention_mask[rows, :width]
    logits = s.model(input_ids=ids, attention_mask=mask).logits.float()[:, :-1]
    logps = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    logps = (logps * enc.response_mask[rows, 1:width]).sum(-1)
    ratios = logps - s.data.ref_logps[rows]
    return -F.logsigmoid(s.loss.beta * (ratios[: len(idx)] - ratios[len(idx):])).mean()


def plain_didrays_contender(s: Setting) -> Steps:
    """A plain loop written didray's way: fused AdamW, no schedule, no clipping."""
    optimizer = torch.optim.AdamW(s.model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY,
                                  fused=True)
    lengths = s.data.enc.attention_mask.sum(-1).cpu()  # on the host: no sync for a width

    def step(i: int) -> Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = plain_loss(s, lengths, i)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return lambda steps: [step(i) for i in steps]


def plain_users_contender(s: Setting) -> Steps:
    """A plain loop as TRL and most PyTorch users write it (the module docstring's recipe)."""
    optimizer = torch.optim.AdamW(s.model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    warmup = USERS.warmup_steps(s.total)

    def factor(step: int) -> float:  # transformers' get_linear_schedule_with_warmup
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (s.total - step) / max(1, s.total - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    lengths = s.data.enc.attention_mask.sum(-1).cpu()

    def step(i: int) -> Tensor:
        loss = plain_loss(s, lengths, i)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(s.model.parameters(), USERS.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return lambda steps: [step(i) for i in steps]


def trl_contender(s: Setting, out_dir: str) -> Steps:
    """TRL's DPO step on the same rows: its collator pads each batch and carries the
    precomputed reference; the trainer is built on a one-pair text dataset only to exist."""
    from datasets import Dataset, disable_progress_bars
    from trl import DPOConfig, DPOTrainer
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    from didray.worlds.toy import build_tokenizer

    model, data = s.model, s.data
    config = DPOConfig(output_dir=out_dir, beta=s.loss.beta, loss_type=["sigmoid"],
                       report_to="none", precompute_ref_log_probs=True, max_length=None,
                       bf16=False, fp16=False, use_cpu=model.device.type == "cpu",
                       disable_tqdm=True)
    disable_progress_bars()
    os.environ.setdefault("TQDM_DISABLE", "1")  # TRL's reference pass over `text`
    text = Dataset.from_dict({"prompt": ["red"], "chosen": [" blue"], "rejected": [" cat"]})
    trainer = DPOTrainer(model, args=config, train_dataset=text, processing_class=build_tokenizer())
    trainer.current_gradient_accumulation_steps = 1  # otherwise set by `Trainer.train`
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY,
                                  fused=True)
    collate = DataCollatorForPreference(pad_token_id=PAD)
    ids, mask = data.enc.input_ids.tolist(), data.enc.response_mask.tolist()
    lengths, ref, n = row_lengths(data.enc).tolist(), data.ref_logps.tolist(), data.n

    def example(i: int) -> dict:
        prompt = mask[i].index(1)
        return {"prompt_ids": ids[i][:prompt], "chosen_ids": ids[i][prompt:lengths[i]],
                "rejected_ids": ids[i + n][prompt:lengths[i + n]],
                "ref_chosen_logps": ref[i], "ref_rejected_logps": ref[i + n]}

    def step(i: int) -> Tensor:
        batch = collate([example(j) for j in s.batches.at(n, i).tolist()])
        loss = trainer.training_step(model, batch)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return lambda steps: [step(i) for i in steps]


# Each contender's name, recipe and maker (a Setting and a scratch folder -> its loop).
CONTENDERS = {
    "didray (didray's recipe)": (DIDRAYS, lambda s, _: didray_contender(s, DIDRAYS)),
    "plain (didray's way)": (DIDRAYS, lambda s, _: plain_didrays_contender(s)),
    "didray (users' recipe)": (USERS, lambda s, _: didray_contender(s, USERS)),
    "plain (users')": (USERS, lambda s, _: plain_users_contender(s)),
    "TRL DPOTrainer": (DIDRAYS, trl_contender),
}
DIDRAY = {DIDRAYS: "didray (didray's recipe)", USERS: "didray (users' recipe)"}


def build_model(name: str, dtype: torch.dtype, device: str) -> LlamaForCausalLM:
    shape, (_, longest) = MODELS[name]
    config = LlamaConfig(**shape, max_position_embeddings=longest, pad_token_id=PAD)
    with torch.device(device):
        return LlamaForCausalLM(config).to(dtype)


def pair_data(n_pairs: int, length_range: tuple[int, int], vocab: int, seed: int) -> Encoded:
    """Random token pairs: rows [0, n) chosen, [n, 2n) rejected, a pair sharing its prompt;
    row lengths uniform in `length_range`, right-padded to the longest row of the dataset."""
    g = torch.Generator().manual_seed(seed)
    shortest, longest = length_range
    lengths = torch.randint(shortest, longest + 1, (2 * n_pairs,), generator=g)  # (2n,)
    prompts = torch.randint(shortest // 4, shortest // 2 + 1, (n_pairs,), generator=g).repeat(2)
    ids = torch.randint(1, vocab, (2 * n_pairs, longest), generator=g)  # (2n, T)
    ids[n_pairs:, : shortest // 2] = ids[:n_pairs, : shortest // 2]  # the shared prompts
    positions = torch.arange(longest)  # (T,)
    attention = positions < lengths[:, None]  # (2n, T)
    response = attention & (positions >= prompts[:, None])  # (2n, T)
    width = int(lengths.max())
    return Encoded(ids.masked_fill(~attention, PAD)[:, :width], attention[:, :width].long(),
                   response[:, :width].long())


def flops_per_step(model: LlamaForCausalLM, lengths: Tensor) -> float:
    """The formula in the module docstring, for one step's rows of `lengths` tokens."""
    config = model.config
    n = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
    attention = 12 * config.num_hidden_layers * config.hidden_size * lengths.double().pow(2)
    return 6 * n * float(lengths.sum()) + float(attention.sum())


def measure(name: str, opts: argparse.Namespace) -> dict:
    """One repeat of contender `name` in this process: the model, the data and pi_ref's
    log-probs built from the seed, `opts.warmup` untimed steps, then `opts.steps` timed ones.
    Returns the timed steps' count, wall and CPU seconds, tokens and FLOPs, and every step's
    loss."""
    torch.manual_seed(opts.seed)
    model = build_model(opts.model, getattr(torch, opts.dtype), opts.device)
    enc = pair_data(opts.pairs, MODELS[opts.model][1], model.config.vocab_size, opts.seed)
    enc = enc.to(opts.device)
    data = PairTensors(enc, batched_response_logps(model, enc, batch_size=2 * opts.batch))
    total = opts.warmup + opts.steps
    setting = Setting(model, data, PreferenceLoss(opts.beta), Batches(opts.batch, opts.seed),
                      total)
    sync = torch.cuda.synchronize if opts.device.startswith("cuda") else lambda: None
    with tempfile.TemporaryDirectory() as tmp:
        train = CONTENDERS[name][1](setting, tmp)
        losses = train(range(opts.warmup))
        sync()
        wall, cpu = time.perf_counter(), time.process_time()
        losses += train(range(opts.warmup, total))
        sync()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    lengths = [row_lengths(enc)[torch.cat([i, i + data.n])]
               for i in (batch_indices(data.n, opts.batch, s, opts.seed)
                         for s in range(opts.warmup, total))]
    return {"steps": opts.steps, "seconds": wall, "cpu_seconds": cpu,
            "losses": [float(x) for x in losses],
            "tokens": sum(float(x.sum()) for x in lengths),
            "flops": sum(flops_per_step(model, x) for x in lengths)}


def largest_gap(didray: list[float], plain: list[float], same_recipe: bool
                ) -> tuple[int, float]:
    """The step (0-based) where two runs' losses differ most, and by how much, among the steps
    that must agree: every step under the same recipe, the first (the same weights, before any
    update) across recipes."""
    compared = len(didray) if same_recipe else 1
    gaps = [abs(a - b) for a, b in zip(didray[:compared], plain[:compared], strict=True)]
    worst = max(range(compared), key=gaps.__getitem__)
    return worst, gaps[worst]


def disagreement(didray: list[float], plain: list[float], same_recipe: bool,
                 tolerance: float) -> str | None:
    """Why the two runs' losses disagree where they must (`largest_gap`), or None."""
    step, gap = largest_gap(didray, plain, same_recipe)
    if gap <= tolerance:
        return None
    return (f"step {step + 1}: loss {didray[step]:.7f} against {plain[step]:.7f}, "
            f"|gap| {gap:.1e} > {tolerance:.0e}")


def fresh_repeat(name: str, argv: list[str]) -> dict:
    """`measure(name)` in a new Python process, so no contender inherits another's warm
    allocator, caches or threads."""
    done = subprocess.run([sys.executable, __file__, *argv, "--worker", name],
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{name} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def run(names: list[str], argv: list[str], repeats: int) -> dict[str, list[dict]]:
    """`repeats` fresh-process runs of every contender, their order rotating each repeat."""
    results: dict[str, list[dict]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            results[name].append(fresh_repeat(name, argv))
        print(f"repeat {r + 1}/{repeats}, steps/s: " + ", ".join(
            f"{name} {pace(runs[-1:]):.2f}" for name, runs in results.items()), flush=True)
    return results


def spread(values: list[float], digits: int) -> str:
    return f"{median(values):.{digits}f} [{min(values):.{digits}f}-{max(values):.{digits}f}]"


def pace(runs: list[dict], clock: str = "seconds") -> float:
    """The median steps per second of `runs` (`clock`: "cpu_seconds" for steps per
    CPU-second of the process)."""
    return median(r["steps"] / r[clock] for r in runs)


def ratios(didray: list[dict], other: list[dict], cuda: bool) -> str:
    """didray's median pace over the other's: by the wall clock and, on CPU, per CPU-second,
    which other processes on a shared machine disturb less."""
    clocks = ["seconds"] if cuda else ["seconds", "cpu_seconds"]
    return " / ".join(f"{pace(didray, c) / pace(other, c):.3f}" for c in clocks)


def report(results: dict[str, list[dict]], opts: argparse.Namespace) -> None:
    """The table: each contender's pace and, for the others, didray's under the same recipe
    over theirs."""
    cuda = opts.device.startswith("cuda")
    print(f"\n{opts.model} Llama, {opts.device} {opts.dtype}, {opts.batch} pairs per step, "
          f"{opts.repeats} fresh-process repeats x {opts.steps} steps, median [min-max]\n")
    extra, ratio = ("MFU %", "didray/this") if cuda else ("steps/CPU-s",
                                                           "didray/this: wall / CPU")
    print(f"| contender | recipe | steps/s | tokens/s | {extra} | {ratio} |\n"
          "|---|---|---|---|---|---|")
    for name, runs in results.items():
        recipe = CONTENDERS[name][0]
        if cuda:
            last = spread([100 * r["flops"] / r["seconds"] / (opts.peak_tflops * 1e12)
                           for r in runs], 1)
        else:
            last = spread([r["steps"] / r["cpu_seconds"] for r in runs], 2)
        ratio = "" if name in DIDRAY.values() else ratios(results[DIDRAY[recipe]], runs, cuda)
        print(f"| {name} | {recipe.name} | {spread([r['steps'] / r['seconds'] for r in runs], 2)}"
              f" | {spread([r['tokens'] / r['seconds'] for r in runs], 0)} | {last} | {ratio} |")
    if "TRL DPOTrainer" not in results:
        print("| TRL DPOTrainer | | skipped: trl not installed | | | |")
    cross = ratios(results[DIDRAY[DIDRAYS]], results["plain (users')"], cuda)
    print(f"\ndidray (didray's recipe) / plain (users'): {cross} (different work per step: no "
          "clipping nor schedule on didray's side)")


# The plain loops must agree with didray (the same recipe at every step, a different one at
# the first); TRL's gap is printed, not enforced (its loss is its own code).
CHECKED = [(DIDRAY[DIDRAYS], "plain (didray's way)"), (DIDRAY[USERS], "plain (users')"),
           (DIDRAY[DIDRAYS], "plain (users')")]


def agreement(results: dict[str, list[dict]], tolerance: float) -> list[str]:
    """Print the largest loss gap of each pair compared; return the disagreements."""
    failures = []
    for didray, other in [*CHECKED, (DIDRAY[DIDRAYS], "TRL DPOTrainer")]:
        if other not in results:
            continue
        same = CONTENDERS[didray][0] == CONTENDERS[other][0]
        pairs = list(zip(results[didray], results[other], strict=True))
        gap = max(largest_gap(d["losses"], o["losses"], same)[1] for d, o in pairs)
        steps = len(pairs[0][0]["losses"]) if same else 1
        print(f"max |loss {didray} - loss {other}| over {steps} step(s): {gap:.1e}")
        problems = {disagreement(d["losses"], o["losses"], same, tolerance) for d, o in pairs}
        failures += [f"{didray} and {other}, {p}" for p in problems - {None}
                     if (didray, other) in CHECKED]
    return failures


def options(argv: list[str]) -> argparse.Namespace:
    args = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    args.add_argument("--model", choices=sorted(MODELS), default="tiny")
    args.add_argument("--device", default="cpu")
    args.add_argument("--dtype", choices=sorted(TOLERANCE), default="float32")
    args.add_argument("--batch", type=int, default=8, help="pairs per step")
    args.add_argument("--pairs", type=int, default=64, help="pairs in the dataset")
    args.add_argument("--beta", type=float, default=0.1, help="DPO's beta")
    args.add_argument("--steps", type=int, default=60, help="timed steps per repeat")
    args.add_argument("--repeats", type=int, default=5, help="fresh processes per contender")
    args.add_argument("--warmup", type=int, default=3, help="untimed steps before them")
    args.add_argument("--seed", type=int, default=0)
    args.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args.add_argument("--peak-tflops", type=float, default=989.0)
    args.add_argument("--worker", choices=sorted(CONTENDERS), help=argparse.SUPPRESS)
    return args.parse_args(argv)


def main() -> None:
    argv = sys.argv[1:]
    opts = options(argv)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    if opts.worker:  # one repeat of one contender, for `fresh_repeat`
        print(json.dumps(measure(opts.worker, opts)))
        return
    names = [n for n in CONTENDERS
             if n != "TRL DPOTrainer" or importlib.util.find_spec("trl") is not None]
    results = run(names, argv, opts.repeats)
    report(results, opts)
    failures = agreement(results, TOLERANCE[opts.dtype])
    if failures:
        raise SystemExit("losses that must agree do not:\n" + "\n".join(failures))


if __name__ == "__main__":
    main()
