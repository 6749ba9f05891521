#!/usr/bin/env bash
# The GPU check: bench/dpo_step.py on one CUDA GPU with a ~125M-parameter Llama built in place
# (bf16): didray's DPO step vs two plain PyTorch loops (written didray's way and as TRL/PyTorch
# users write them, each against didray under the same recipe), steps/s, tokens/s and MFU.
# Needs only torch and transformers (no ray, polars, pydantic, datasets, vllm): run it from any
# checkout with
#
#     bench/gpu_check.sh                 # PYTHON=... picks the interpreter; extra flags go to
#     bench/gpu_check.sh --batch 16      # bench/dpo_step.py (see its --help)
#
# Each of its 5 repeats runs every contender in a fresh process (imports, model and reference
# each time: 20 processes, not yet timed on a GPU); it is stopped after 8 minutes whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python}"
"$python" -c 'import torch, transformers
assert torch.cuda.is_available(), "gpu_check: torch sees no CUDA GPU"
print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
      f"{torch.cuda.get_device_name()}", flush=True)'
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" exec timeout 480 "$python" bench/dpo_step.py \
    --device cuda --dtype bfloat16 --model 125m --repeats 5 --steps 20 "$@"
