"""didray's DPO step against a plain hand-written PyTorch DPO loop, and TRL's `DPOTrainer` when
`trl` is installed, on the same batches with a precomputed reference.

Each contender trains its own copy of one randomly initialised Llama built in place (nothing is
downloaded), step for step on the same pair batches, so their losses must agree: the run fails
unless |didray - plain| <= 1e-5 at every step (float32; 1e-2 in bfloat16, where the two may
round differently and drift apart). Repeats are interleaved and their order rotates, so load
from other processes on a shared machine falls on every contender alike. Prints steps/s and
tokens/s (real tokens of the chosen + rejected rows) as median [min-max] over the repeats and
the ratio didray/plain; on CPU also steps per CPU-second of this process (less sensitive to
other processes), on CUDA the model FLOPs utilisation (MFU):

    FLOPs per step = 6 * N * tokens + 12 * layers * hidden * sum over rows of length^2

N counts every parameter except the input embedding (a lookup, not a matmul); the second term is
attention (QK^T and AV, forward and backward, without halving for causality, as in PaLM's MFU).
MFU = FLOPs per second / (--peak-tflops * 1e12); the default 989 is H100/H200 bf16 dense.
TRL's row times `DPOTrainer.training_step` (its collator, loss and backward) and an optimizer
step, not the `Trainer.train` loop around it.

    python bench/dpo_step.py --threads 1                              # tiny Llama on CPU
    python bench/dpo_step.py --device cuda --dtype bfloat16 --model 125m
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from statistics import median

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import LlamaConfig, LlamaForCausalLM

from didray.core.dpo import PreferenceLoss
from didray.data.tensors import PairTensors
from didray.train.loop import batch_indices, dpo_step, make_optimizer, row_lengths
from didray.worlds.text import Encoded, batched_response_logps

# Llama shapes and the range of row lengths (prompt + response tokens) of each benchmark model.
MODELS = {
    "tiny": (dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=256, vocab_size=512), (40, 90)),
    "125m": (dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                  intermediate_size=3072, vocab_size=32000), (128, 512)),
}
BETA, LR, WEIGHT_DECAY, PAD = 0.1, 1e-4, 0.0, 0
TOLERANCE = {"float32": 1e-5, "bfloat16": 1e-2}


@dataclass
class Contender:
    name: str
    step: Callable[[Tensor], Tensor]  # pair indices (host) -> the step's loss, a 0-d tensor
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    losses: list[Tensor] = field(default_factory=list)


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


def didray_contender(model, data: PairTensors) -> Contender:
    optimizer = make_optimizer(model.parameters(), "adamw", LR, WEIGHT_DECAY)
    lengths = row_lengths(data.enc)
    return Contender("didray dpo_step", lambda idx: dpo_step(
        model, optimizer, data, lengths, idx, PreferenceLoss(BETA))["loss"])


def plain_contender(model, data: PairTensors) -> Contender:
    """The DPO step as one writes it by hand, with no didray code."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY,
                                  fused=True)
    enc, n = data.enc, data.n
    lengths = enc.attention_mask.sum(-1).cpu()  # on the host: a batch's width needs no sync

    def step(idx: Tensor) -> Tensor:
        rows = torch.cat([idx, idx + n])
        width = int(lengths[rows].max())
        rows = rows.to(enc.input_ids.device, non_blocking=True)
        ids, mask = enc.input_ids[rows, :width], enc.attention_mask[rows, :width]
        logits = model(input_ids=ids, attention_mask=mask).logits.float()[:, :-1]
        logps = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        logps = (logps * enc.response_mask[rows, 1:width]).sum(-1)
        ratios = logps - data.ref_logps[rows]
        loss = -F.logsigmoid(BETA * (ratios[: len(idx)] - ratios[len(idx):])).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return Contender("plain PyTorch loop", step)


def trl_contender(model, data: PairTensors, out_dir: str) -> Contender:
    """TRL's DPO step on the same rows: its collator pads each batch and carries the
    precomputed reference; the trainer is built on a one-pair text dataset only to exist."""
    from datasets import Dataset, disable_progress_bars
    from trl import DPOConfig, DPOTrainer
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    from didray.worlds.toy import build_tokenizer

    config = DPOConfig(output_dir=out_dir, beta=BETA, loss_type=["sigmoid"], report_to="none",
                       precompute_ref_log_probs=True, max_length=None, bf16=False, fp16=False,
                       use_cpu=model.device.type == "cpu", disable_tqdm=True)
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

    def step(idx: Tensor) -> Tensor:
        loss = trainer.training_step(model, collate([example(i) for i in idx.tolist()]))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return Contender("TRL DPOTrainer", step)


def flops_per_step(model: LlamaForCausalLM, lengths: Tensor) -> float:
    """The formula in the module docstring, for one step's rows of `lengths` tokens."""
    config = model.config
    n = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
    attention = 12 * config.num_hidden_layers * config.hidden_size * lengths.double().pow(2)
    return 6 * n * float(lengths.sum()) + float(attention.sum())


def run(contenders: list[Contender], batches: list[Tensor], opts, sync: Callable[[], None]):
    """Warm-up steps, then `opts.repeats` timed runs of `opts.steps` steps per contender, the
    contenders' order rotating from repeat to repeat; every step's loss is kept."""
    for c in contenders:
        c.losses += [c.step(idx) for idx in batches[: opts.warmup]]
    for r in range(opts.repeats):
        chunk = batches[opts.warmup + r * opts.steps : opts.warmup + (r + 1) * opts.steps]
        for c in contenders[r % len(contenders):] + contenders[: r % len(contenders)]:
            sync()
            wall, cpu = time.perf_counter(), time.process_time()
            c.losses += [c.step(idx) for idx in chunk]
            sync()
            c.seconds.append(time.perf_counter() - wall)
            c.cpu_seconds.append(time.process_time() - cpu)
        pace = ", ".join(f"{c.name} {opts.steps / c.seconds[-1]:.2f}" for c in contenders)
        print(f"repeat {r + 1}/{opts.repeats}, steps/s: {pace}", flush=True)


def spread(values: list[float], digits: int) -> str:
    return f"{median(values):.{digits}f} [{min(values):.{digits}f}-{max(values):.{digits}f}]"


def report(contenders: list[Contender], per_step: list[Tensor], model, opts) -> None:
    """The table; `per_step` holds the row lengths of each timed step."""
    cuda = opts.device.startswith("cuda")
    tokens = sum(float(lengths.sum()) for lengths in per_step) / opts.repeats
    flops = sum(flops_per_step(model, lengths) for lengths in per_step) / opts.repeats
    print(f"\n{opts.model} Llama, {opts.device} {opts.dtype}, {opts.batch} pairs per step, "
          f"{opts.repeats} repeats x {opts.steps} steps, median [min-max]\n")
    extra = "MFU %" if cuda else "steps/CPU-s"
    print(f"| contender | steps/s | tokens/s | {extra} |\n|---|---|---|---|")
    for c in contenders:
        if cuda:
            last = spread([100 * flops / s / (opts.peak_tflops * 1e12) for s in c.seconds], 1)
        else:
            last = spread([opts.steps / s for s in c.cpu_seconds], 2)
        print(f"| {c.name} | {spread([opts.steps / s for s in c.seconds], 2)} "
              f"| {spread([tokens / s for s in c.seconds], 0)} | {last} |")
    if importlib.util.find_spec("trl") is None:
        print("| TRL DPOTrainer | skipped: trl not installed | | |")


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    args.add_argument("--model", choices=sorted(MODELS), default="tiny")
    args.add_argument("--device", default="cpu")
    args.add_argument("--dtype", choices=sorted(TOLERANCE), default="float32")
    args.add_argument("--batch", type=int, default=8, help="pairs per step")
    args.add_argument("--pairs", type=int, default=64, help="pairs in the dataset")
    args.add_argument("--steps", type=int, default=6, help="timed steps per repeat")
    args.add_argument("--repeats", type=int, default=15)
    args.add_argument("--warmup", type=int, default=3)
    args.add_argument("--seed", type=int, default=0)
    args.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args.add_argument("--peak-tflops", type=float, default=989.0)
    opts = args.parse_args()
    if opts.threads:
        torch.set_num_threads(opts.threads)
    sync = torch.cuda.synchronize if opts.device.startswith("cuda") else lambda: None

    torch.manual_seed(opts.seed)
    started = time.perf_counter()
    model = build_model(opts.model, getattr(torch, opts.dtype), opts.device)
    enc = pair_data(opts.pairs, MODELS[opts.model][1], model.config.vocab_size, opts.seed)
    enc = enc.to(opts.device)
    data = PairTensors(enc, batched_response_logps(model, enc, batch_size=2 * opts.batch))
    print(f"built a {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M-parameter Llama "
          f"and the reference in {time.perf_counter() - started:.1f} s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        contenders = [didray_contender(copy.deepcopy(model), data),
                      plain_contender(copy.deepcopy(model), data)]
        if importlib.util.find_spec("trl") is not None:
            contenders.append(trl_contender(copy.deepcopy(model), data, tmp))
        batches = [batch_indices(data.n, opts.batch, s, opts.seed)
                   for s in range(opts.warmup + opts.repeats * opts.steps)]
        run(contenders, batches, opts, sync)

    lengths = row_lengths(enc)
    report(contenders, [lengths[torch.cat([i, i + data.n])] for i in batches[opts.warmup:]],
           model, opts)
    didray, *others = contenders
    ratio = median(others[0].seconds) / median(didray.seconds)
    print(f"\ndidray/plain, median steps/s: {ratio:.3f}")
    gaps = [float((torch.stack(didray.losses) - torch.stack(c.losses)).double().abs().max())
            for c in others]
    for c, gap in zip(others, gaps, strict=True):
        print(f"max |loss didray - loss {c.name}| over {len(didray.losses)} steps: {gap:.1e}")
    if gaps[0] > TOLERANCE[opts.dtype]:
        raise SystemExit(f"didray's and the plain loop's losses differ by {gaps[0]:.1e}")

if __name__ == "__main__":
    main()
