"""A resumed trial starts from its newest intact checkpoint: a damaged newest one falls back
to the one before it (docs/design.md §3.3), through `restore` as a resumed trial calls it."""

from pathlib import Path

import ray.train
import torch
from support.builders import save_plain
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from didray.train.worker import restore, save_checkpoint
from didray.worlds import toy


def saved(run: Path, step: int, model: torch.nn.Module, tokenizer) -> Path:
    """A checkpoint as a trial writes it at `step`, named as Tune and Train name them."""
    out = run / f"checkpoint_{step:06d}"
    out.mkdir(parents=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    save_checkpoint(model, tokenizer, optimizer, step, [{"step": s} for s in range(1, step + 1)],
                    out)
    return out


def test_a_damaged_newest_checkpoint_resumes_from_the_one_before(tmp_path, capsys):
    tokenizer = toy.build_tokenizer()
    init = save_plain(LlamaForCausalLM, tmp_path / "init", tokenizer)
    model = AutoModelForCausalLM.from_pretrained(init)
    before = saved(tmp_path / "run", 2, model, tokenizer)
    with torch.no_grad():
        for weight in model.parameters():
            weight.add_(1.0)
    newest = saved(tmp_path / "run", 4, model, tokenizer)
    weights = newest / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01  # still loads, as other weights: only the index tells
    weights.write_bytes(bytes(data))

    resumed = AutoModelForCausalLM.from_pretrained(init)
    step, optimizer_state, history = restore(resumed, ray.train.Checkpoint.from_directory(newest))
    assert step == 2 and [h["step"] for h in history] == [1, 2]
    assert optimizer_state is not None
    want = AutoModelForCausalLM.from_pretrained(before).state_dict()
    assert all(torch.equal(got, want[name]) for name, got in resumed.state_dict().items())
    assert (f"checkpoint {newest} is damaged (model.safetensors differs from what was written"
            in capsys.readouterr().err)
