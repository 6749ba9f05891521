#!/usr/bin/env bash
# The GPU check: bench/dpo_step.py on one CUDA GPU with a ~125M-parameter Llama built in place
# (bf16): didray's DPO step vs a plain PyTorch loop, steps/s, tokens/s and MFU. Needs only torch
# and transformers (no ray, polars, pydantic, datasets, vllm): run it from any checkout with
#
#     bench/gpu_check.sh                 # PYTHON=... picks the interpreter; extra flags go to
#     bench/gpu_check.sh --batch 16      # bench/dpo_step.py (see its --help)
#
# It takes about a minute on an H100/H200 and is stopped after 8 minutes whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python}"
"$python" -c 'import torch, transformers
assert torch.cuda.is_available(), "gpu_check: torch sees no CUDA GPU"
print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
      f"{torch.cuda.get_device_name()}", flush=True)'
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" exec timeout 480 "$python" bench/dpo_step.py \
    --device cuda --dtype bfloat16 --model 125m --repeats 5 --steps 20 "$@"
