"""Sampling throughput of the vLLM and transformers backends of `Sampler`.

Builds an untrained toy policy in a temp dir (optionally also measures a safetensors model dir,
e.g. SmolLM2-135M-Instruct) and times `generate` per backend: generated tokens (eos included)
per second, median over the repeats with min and max. Prints a table; asserts nothing.
Throughput on shared cores varies a lot: compare rows from one run only.

    .venv/bin/python bench/sampling.py [--prompts 8] [--n 8] [--max-tokens 64] [--repeats 3]
        [--threads 1] [--smollm2 DIR] [--backends vllm transformers]

The vLLM engine runs in-process unless VLLM_ENABLE_V1_MULTIPROCESSING=1 is set outside.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import tempfile
import time
from pathlib import Path
from statistics import median

from didray.sampling.sampler import Sampler
from didray.worlds import toy

GENERIC_PROMPTS = (
    "Name three colours.", "What is the capital of France?", "Write a haiku about rain.",
    "Explain gravity in one sentence.", "List two animals that can fly.",
    "What is 7 times 8?", "Give a synonym for happy.", "Describe the sea in five words.",
)  # fmt: skip


def toy_model(out: Path) -> tuple[Path, list[str]]:
    spec = toy.ToyWorldSpec(n_open_prompts=12, n_fact_prompts=12)
    tokenizer = toy.build_tokenizer()
    toy.build_model(spec, tokenizer).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out, [p.text for p in toy.build_world(spec).prompts]


def measure(model_dir: Path, backend: str, prompts: list[str], opts) -> dict:
    started = time.perf_counter()
    sampler = Sampler(model_dir, backend=backend, threads=opts.threads)
    startup = time.perf_counter() - started
    sampler.generate(prompts[:1], 1, max_tokens=opts.max_tokens)  # warm-up
    rates = []
    for seed in range(opts.repeats):
        started = time.perf_counter()
        out = sampler.generate(prompts, opts.n, max_tokens=opts.max_tokens, seed=seed)
        seconds = time.perf_counter() - started
        tokens = sum(len(c.token_logprobs) for row in out for c in row)
        rates.append(tokens / seconds)
    del sampler
    gc.collect()  # free the engine before the next one starts
    return {"startup_s": startup, "median": median(rates), "min": min(rates), "max": max(rates),
            "tokens": tokens}


def cycle(prompts: list[str] | tuple[str, ...], count: int) -> list[str]:
    return [prompts[i % len(prompts)] for i in range(count)]


def main() -> None:
    args = argparse.ArgumentParser()
    args.add_argument("--prompts", type=int, default=8)
    args.add_argument("--n", type=int, default=8)
    args.add_argument("--max-tokens", type=int, default=64)
    args.add_argument("--repeats", type=int, default=3)
    args.add_argument("--threads", type=int, default=1, help="0: the backend's own choice")
    args.add_argument("--smollm2", type=Path, default=None, help="a safetensors model dir")
    args.add_argument("--backends", nargs="+", default=["vllm", "transformers"])
    opts = args.parse_args()
    backends = [b for b in opts.backends
                if b != "vllm" or importlib.util.find_spec("vllm") is not None]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path, prompts = toy_model(Path(tmp))
        models = [("toy", path, cycle(prompts, opts.prompts))]
        if opts.smollm2:
            models.append((opts.smollm2.name, opts.smollm2, cycle(GENERIC_PROMPTS, opts.prompts)))
        for name, model_dir, model_prompts in models:
            for backend in backends:
                rows.append((name, backend, measure(model_dir, backend, model_prompts, opts)))
    print(f"\n{opts.prompts} prompts x n={opts.n}, max_tokens={opts.max_tokens}, "
          f"{opts.repeats} runs, threads={opts.threads}")
    print(f"{'model':<24} {'backend':<13} {'start s':>8} {'tokens':>7} "
          f"{'tok/s med':>10} {'min':>9} {'max':>9}")
    for name, backend, r in rows:
        print(f"{name:<24} {backend:<13} {r['startup_s']:>8.1f} {r['tokens']:>7} "
              f"{r['median']:>10.0f} {r['min']:>9.0f} {r['max']:>9.0f}")


if __name__ == "__main__":
    main()
