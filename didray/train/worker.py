"""The Ray Train worker function: loads pi_ref and the shared data, runs `train_dpo`, reports.

Ray calls are marked `# Ray:`; everything else is the plain loop of `didray.train.loop`.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

import ray
import ray.train
import ray.train.torch
import torch
from transformers import AutoModelForCausalLM

from didray.data.prepare import load_pair_tensors
from didray.eval.toy import evaluate_tables, score_table
from didray.sweep.metrics import export_step_metrics
from didray.train.loop import as_floats, make_optimizer, train_dpo
from didray.worlds import toy
from didray.worlds.policy import load_policy


def save_checkpoint(model: torch.nn.Module, tokenizer, optimizer, step: int, out: Path) -> None:
    """Weights as safetensors with the tokenizer (a checkpoint loads on its own, in
    transformers or vLLM), plus the optimizer state to resume from."""
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    torch.save(optimizer.state_dict(), out / "optimizer.pt")
    (out / "state.json").write_text(json.dumps({"step": step}))


def restore(model: torch.nn.Module) -> tuple[int, dict | None]:
    """Weights, optimizer state and step from the run's latest checkpoint, if there is one."""
    checkpoint = ray.train.get_checkpoint()  # Ray: the latest checkpoint of this run name
    if checkpoint is None:
        return 0, None
    with checkpoint.as_directory() as d:
        model.load_state_dict(AutoModelForCausalLM.from_pretrained(d).state_dict())
        state = torch.load(Path(d) / "optimizer.pt")
        step = json.loads((Path(d) / "state.json").read_text())["step"]
    return step, state


def exact_reporter(cfg: dict, tokenizer) -> Callable[[torch.nn.Module], dict[str, float]]:
    """DID entropy and scores of the current policy by enumeration (toy world only); the
    world's tables are loaded once per run, not at every report."""
    world = toy.load_world(cfg["world_dir"])[0]
    ref_table = torch.load(cfg["enum_file"])  # (P, R)
    scores = score_table(world)

    def report(model: torch.nn.Module) -> dict[str, float]:
        model.eval()
        table = toy.enumerate_logps(model, tokenizer, world)  # (P, R)
        model.train()
        out = evaluate_tables(table, ref_table, *scores)
        return {"did/entropy": out["did_entropy"],
                "eval/instruction_score": out["instruction_score"],
                "eval/qa_accuracy": out["qa_accuracy"]}

    return report


def train_worker(cfg: dict) -> None:
    """One DDP rank of one trial. `cfg` carries the trial's axes and the prepared file paths."""
    torch.set_num_threads(cfg["threads"])
    # Train V2 logs every report at INFO on a logger named by file path, which its
    # LoggingConfig does not reach; the root level does, and didray prints progress itself.
    logging.getLogger().setLevel(logging.WARNING)
    context = ray.train.get_context()  # Ray
    rank, world_size = context.get_world_rank(), context.get_world_size()
    torch.manual_seed(cfg["seed"])
    model, tokenizer, hook = load_policy(cfg["world_dir"], cfg["dtype"],
                                         cfg["gradient_checkpointing"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    data = load_pair_tensors(Path(cfg["ref_file"])).to(device)
    toy_exact = cfg["world"] == "toy" and cfg["eval"]["exact"]  # hf responses cannot be enumerated
    exact = exact_reporter(cfg, tokenizer) if toy_exact and rank == 0 else None
    train = cfg["train"]

    start, optimizer_state = restore(model)
    model = ray.train.torch.prepare_model(model)  # Ray: DDP over gloo (CPU) or NCCL (GPU)
    optimizer = make_optimizer(model.parameters(), train["optimizer"], train["lr"],
                               train["weight_decay"])
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    plain = model.module if hasattr(model, "module") else model

    def on_step(step: int, metrics: dict[str, torch.Tensor | float]) -> None:
        last = step == train["steps"]
        if step % train["report_every"] and not last:
            return
        # The node id shows where a sweep's trials ran on a multi-node cluster.
        metrics = {"step": step, "node_id": ray.get_runtime_context().get_node_id(),
                   "workers": world_size, **as_floats(metrics)}
        if exact is not None:
            metrics |= exact(plain)
        if rank == 0:
            export_step_metrics(metrics, {"sweep": cfg["sweep"], "trial": cfg["trial_id"],
                                          "beta": cfg["beta"], "regime": cfg["regime"]})
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if rank == 0 and (step % train["checkpoint_every"] == 0 or last):
                save_checkpoint(plain, tokenizer, optimizer, step, Path(tmp))
                checkpoint = ray.train.Checkpoint.from_directory(tmp)  # Ray
            ray.train.report(metrics, checkpoint=checkpoint)  # Ray: every rank must call it

    train_dpo(model, optimizer, data, beta=cfg["beta"], loss_type=train["loss_type"],
              steps=train["steps"], batch_size=train["batch_size"],
              grad_accum=train["grad_accum"], seed=cfg["seed"], start_step=start, rank=rank,
              world_size=world_size, hook=hook, on_step=on_step)
