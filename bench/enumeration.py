"""Exact toy evaluation's enumeration: scoring every response on its own against scoring the
responses as a tree on each prompt's key-value cache (`didray.worlds.toy.enumerate_logps`).

    python bench/enumeration.py [--repeats 5] [--threads 1]

Prints the median [min-max] seconds to enumerate the demo world's table (training and held-out
prompts x 819 responses) both ways, interleaved, and their largest log-prob difference.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from didray.worlds import toy
from didray.worlds.toy.reference import response_logprobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = toy.ToyWorldSpec(n_open_prompts=8, n_fact_prompts=8)  # sweeps/toy.yaml's world
    world, tokenizer = toy.build_world(spec), toy.build_tokenizer()
    model = toy.build_model(spec, tokenizer).eval()
    responses = toy.enumerate_responses(world)

    def each() -> torch.Tensor:
        return torch.stack([response_logprobs(model, tokenizer, p.text, responses)
                            for p in world.all_prompts])

    def tree() -> torch.Tensor:
        return toy.enumerate_logps(model, tokenizer, world)

    runs = {"every response scored": each, "tree enumeration": tree}
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    print(f"{len(world.all_prompts)} prompts x {len(responses)} responses, {args.threads} "
          f"thread(s), median of {args.repeats} [min-max]")
    print("| method | seconds |\n|---|---|")
    for name, values in seconds.items():
        print(f"| {name} | {statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}] |")
    print(f"largest |log-prob difference|: {float((each() - tree()).abs().max()):.2e}")


if __name__ == "__main__":
    main()
