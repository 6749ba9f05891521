"""One exact evaluation of the demo world (sweeps/toy.yaml's world: 32 prompts x 819
responses), before and after the tree enumeration (`didray.worlds.toy.Enumeration`).

    python bench/eval_tree.py [--repeats 5] [--threads 1 2]

Before: the previous enumeration ("prefix-v1"), kept here only to be timed: per prompt, the
A^L full-length responses rendered with the chat template, tokenised and run whole, each
shorter response read from its prefix. After: the prompts tokenised once per world, each run
once, its continuations scored as a tree on its key-value cache. Both then compute the scores
(`evaluate_tables`). Prints the median [min-max] seconds of each on each thread count
(interleaved, so a passing load falls on both) and their largest |log-prob difference|.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import torch

from didray.config.schema import Judge
from didray.eval.toy import evaluate_tables, prompt_tables
from didray.worlds import toy
from didray.worlds.text import encode
from didray.worlds.toy.mask import response_hook, response_steps


@torch.no_grad()
def prefix_logprobs(model, tokenizer, world: toy.ToyWorld, prompt: str) -> torch.Tensor:
    """(R,) the previous code's log-probs of one prompt's responses (see the module doc)."""
    big_l, a = world.max_response_tokens, len(world.alphabet)
    full = [" ".join(words) for words in itertools.product(world.alphabet, repeat=big_l)]
    enc = encode(tokenizer, [prompt] * len(full), full)
    hook = response_hook(model, tokenizer)
    laws = []  # per chunk (b, L+1, V): the masked next-token law at response steps 0..L
    for at in range(0, len(full), 256):
        rows = enc.rows(slice(at, at + 256))
        logits = model(input_ids=rows.input_ids, attention_mask=rows.attention_mask).logits
        logp = hook(logits.float(), rows.response_mask).log_softmax(-1)  # (b, T, V)
        at_steps = response_steps(rows.response_mask) >= 0  # (b, T)
        laws.append(logp[at_steps].view(len(rows.input_ids), big_l + 1, -1))
    law = torch.cat(laws)  # (A^L, L+1, V)
    words = enc.input_ids[enc.response_mask.bool()].view(len(full), big_l + 1)[:, :big_l]
    prefix = law[:, :big_l].gather(-1, words.unsqueeze(-1)).squeeze(-1).cumsum(-1)  # (A^L, L)
    stop = law[:, 1:, tokenizer.eos_token_id]  # (A^L, L)
    return torch.cat([(prefix + stop)[:: a ** (big_l - k), k - 1] for k in range(1, big_l + 1)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    spec = toy.ToyWorldSpec(n_open_prompts=8, n_fact_prompts=8)  # sweeps/toy.yaml's world
    world, tokenizer = toy.build_world(spec), toy.build_tokenizer()
    model = toy.build_model(spec, tokenizer).eval()
    tables, judge = prompt_tables(world), Judge()
    enumeration = toy.Enumeration.of(world, tokenizer)  # once per world, as ToyTables does
    ref = enumeration.logps(model, tokenizer)

    def before() -> torch.Tensor:
        return torch.stack([prefix_logprobs(model, tokenizer, world, p.text)
                            for p in world.all_prompts])

    def after() -> torch.Tensor:
        return enumeration.logps(model, tokenizer)

    runs = {"before (prefix-v1)": before, "after (tree-v1)": after}
    seconds = {(name, t): [] for name in runs for t in args.threads}
    for _ in range(args.repeats):
        for threads in args.threads:
            torch.set_num_threads(threads)
            for name, run in runs.items():
                start = time.perf_counter()
                evaluate_tables(run(), ref, tables, judge)
                seconds[name, threads].append(time.perf_counter() - start)
    print(f"one exact evaluation: {len(world.all_prompts)} prompts x "
          f"{toy.response_space_size(world)} responses, median of {args.repeats} [min-max]")
    print("| method | threads | seconds |\n|---|---|---|")
    for (name, threads), values in seconds.items():
        print(f"| {name} | {threads} | {statistics.median(values):.3f} "
              f"[{min(values):.3f}-{max(values):.3f}] |")
    print(f"largest |log-prob difference|: {float((before() - after()).abs().max()):.2e}")


if __name__ == "__main__":
    main()
