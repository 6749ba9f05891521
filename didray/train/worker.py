"""The Ray Train worker function: loads pi_ref and the shared data, runs `train_dpo`, reports.

Ray calls are marked `# Ray:`; everything else is the plain loop of `didray.train.loop`.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import ray
import ray.train
import ray.train.torch
import ray.tune
import torch
from transformers import AutoModelForCausalLM

from didray.config.trial import PairLaw, Trial
from didray.data.tensors import PairTensors, load_pair_tensors
from didray.eval.estimates import entropy_estimates
from didray.eval.optimum import distance, optimum_columns, optimum_table, training_law
from didray.eval.pairs import dataset_step_metrics, pair_metrics
from didray.eval.toy import ToyTables
from didray.files import damage, write_index
from didray.train.gauges import export_step_metrics
from didray.train.loop import (
    Batches,
    Population,
    as_floats,
    lr_schedule,
    make_optimizer,
    train_dpo,
)
from didray.worlds.policy import load_policy
from didray.worlds.text import batched_response_logps
from didray.worlds.toy.enumeration import Enumeration

HISTORY_FILE = "history.json"  # in every checkpoint: every report up to its step
EVALUATION_FILE = "evaluation.json"  # in the final checkpoint: the trial's final evaluation


def save_checkpoint(model: torch.nn.Module, tokenizer, optimizer, step: int,
                    history: list[dict], out: Path, extra: dict[str, object] | None = None
                    ) -> None:
    """Weights as safetensors with the tokenizer (a checkpoint loads on its own, in
    transformers or vLLM), the optimizer state to resume from, and the reports so far: a run
    resumed from this checkpoint (after a lost worker, node or driver) recomputes the steps
    after it, so its history is exactly the uninterrupted run's. The integrity index is
    written last."""
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    torch.save(optimizer.state_dict(), out / "optimizer.pt")
    (out / "state.json").write_text(json.dumps({"step": step}))
    for name, obj in {HISTORY_FILE: history, **(extra or {})}.items():
        (out / name).write_text(json.dumps(obj))
    write_index(out)


def intact_checkpoint(latest: Path) -> Path:
    """The newest checkpoint of the run that matches its integrity index: `latest`, or an
    older one kept beside it when `latest` was truncated or altered (said on stderr)."""
    for candidate in sorted(latest.parent.glob("checkpoint_*"), reverse=True):
        if candidate.is_dir() and candidate <= latest:
            problem = damage(candidate)
            if problem is None:
                return candidate
            print(f"[didray] checkpoint {candidate} is damaged ({problem}); trying an older "
                  "one", file=sys.stderr, flush=True)
    raise RuntimeError(f"no intact checkpoint in {latest.parent}: the run cannot resume")


def restore(model: torch.nn.Module, checkpoint: ray.train.Checkpoint | None
            ) -> tuple[int, dict | None, list[dict]]:
    """Weights, optimizer state, step and report history from the run's newest intact
    checkpoint, if there is one."""
    if checkpoint is None:
        return 0, None, []
    with checkpoint.as_directory() as latest:
        d = intact_checkpoint(Path(latest))
        model.load_state_dict(AutoModelForCausalLM.from_pretrained(d).state_dict())
        state = torch.load(d / "optimizer.pt")
        step = json.loads((d / "state.json").read_text())["step"]
        history = json.loads((d / HISTORY_FILE).read_text())
    return step, state, history


# Step metrics the exact toy evaluation gives at a report, and where they come from.
EXACT_STEP_METRICS = {"did/entropy": "did_entropy", "eval/instruction_score": "instruction_score",
                      "eval/qa_accuracy": "qa_accuracy"}


def exact_report(tables: ToyTables, table: torch.Tensor, optimum: torch.Tensor | None
                 ) -> dict:
    """A report's exact step metrics from the policy's enumerated table (P, R), with its
    distance to the cell's optimum where there is one (docs/design.md §1.11)."""
    exact = tables.evaluate(table)
    metrics = {name: exact[key] for name, key in EXACT_STEP_METRICS.items()}
    if optimum is not None:
        metrics |= distance(tables, table, optimum)
    return metrics


def reference_report(data: PairTensors, trial: Trial, tables: ToyTables | None,
                     optimum: torch.Tensor | None, workers: int) -> dict:
    """Step 0 of the history: pi_ref before any update, the curves' first point. The step
    metrics over the whole dataset with pi_ref as the policy (reward margins and accuracy 0
    and the sigmoid loss log 2 by construction; log-probs the dataset's reference ones) and,
    where reports carry the toy world's exact evaluation, pi_ref's from its enumeration.
    Computed from what the trial has loaded, with no forward pass; kept out of Tune's
    reports, since no training iteration happened (nothing for ASHA or the trackers)."""
    ref = data.ref_logps.cpu()
    report = {"step": 0, "node_id": ray.get_runtime_context().get_node_id(),
              "workers": workers,
              **dataset_step_metrics(ref, ref, trial.loss,
                                     data.enc.response_mask.sum(dim=-1).cpu())}
    if tables is not None and trial.evaluates_at(0):
        report |= exact_report(tables, tables.ref, optimum)
    return report


def final_evaluation(model: torch.nn.Module, tokenizer, hook, data: PairTensors, trial: Trial,
                     tables: ToyTables | None, table: torch.Tensor | None,
                     optimum: torch.Tensor | None = None) -> dict:
    """The trained policy's evaluation that needs no sampler: the dataset's pair metrics (both
    worlds, on exactly the tensors it trained on) and, in the toy world, the exact scores and
    K-sample DID-entropy estimates from the table the last report enumerated (the estimates
    on the training prompts, like the exact DID-entropy columns they are graded against),
    and the cell's optimum evaluated the same way (`optimum_*`, docs/design.md §1.11)."""
    model.eval()
    # 16 rows a chunk: SmolLM2's 96 pair rows took 10.0 s against 14.1 s in chunks of 64
    # padded to the dataset's longest row (fp32 logits over a 49k vocabulary are the cost;
    # docs/performance.md), and less memory.
    policy = batched_response_logps(model, data.enc, hook, batch_size=16).cpu()
    metrics = pair_metrics(policy, data.ref_logps.cpu(), trial.loss,
                           data.enc.response_mask.sum(dim=-1).cpu())
    estimates = []
    if tables is not None:
        # The weight instruction_score was read at, so analysis can name it next to the
        # verdict and recompute the score at any other (docs/design.md §3.6).
        metrics |= tables.evaluate(table) | {"judge_weight": tables.judge.diversity_weight}
        if optimum is not None:
            metrics |= optimum_columns(tables, optimum)
        estimates = entropy_estimates(tables.training_rows(table),
                                      tables.training_rows(tables.ref),
                                      trial.eval.did_samples,
                                      trial.eval.bootstrap, seed=trial.seed)
    return {"metrics": metrics, "estimates": estimates}


class TrainSession:
    """A rank of a Ray Train run (DDP over several workers)."""

    checkpoint_type = ray.train.Checkpoint

    def __init__(self) -> None:
        context = ray.train.get_context()  # Ray
        self.rank, self.world_size = context.get_world_rank(), context.get_world_size()

    def latest_checkpoint(self) -> ray.train.Checkpoint | None:
        return ray.train.get_checkpoint()  # Ray: the latest checkpoint of this run name

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        return ray.train.torch.prepare_model(model)  # Ray: DDP over gloo (CPU) or NCCL (GPU)

    def report(self, metrics: dict, checkpoint: ray.train.Checkpoint | None) -> None:
        ray.train.report(metrics, checkpoint=checkpoint)  # Ray: every rank must call it


class TuneSession:
    """The whole one-worker trial in the Tune trial's own process: no Train run to start.
    Reports and checkpoints go straight to Tune, which restores them the same way."""

    rank, world_size = 0, 1
    checkpoint_type = ray.tune.Checkpoint  # what ray.tune.report takes without a warning

    def latest_checkpoint(self) -> ray.train.Checkpoint | None:
        return ray.tune.get_checkpoint()  # Ray: this trial's latest (reported) checkpoint

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to("cuda" if torch.cuda.is_available() else "cpu")

    def report(self, metrics: dict, checkpoint: ray.train.Checkpoint | None) -> None:
        ray.tune.report(metrics, checkpoint=checkpoint)  # Ray


def train_worker(config: dict) -> None:
    """Ray Train's entry point: one DDP rank of the trial `config["trial"]` (a `Trial`)."""
    run_rank(config["trial"], TrainSession())


class Clock:
    """Seconds spent per phase of a run, for the trial's cost breakdown."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.spent = {"setup": 0.0, "eval": 0.0, "checkpoint": 0.0}

    def setup_done(self) -> None:
        """Loading the model, data and tables (and restoring) ends here."""
        self.spent["setup"] = time.perf_counter() - self.started

    @contextmanager
    def __call__(self, phase: str):
        began = time.perf_counter()
        try:
            yield
        finally:
            self.spent[phase] += time.perf_counter() - began

    def seconds(self) -> dict[str, float]:
        """setup, eval and checkpoint as timed; steps: the rest since the loop began."""
        total = time.perf_counter() - self.started
        steps = total - sum(self.spent.values())
        return {f"time/{k}_s": v for k, v in {**self.spent, "steps": steps}.items()}


def run_rank(trial: Trial, session: TrainSession | TuneSession) -> None:
    clock = Clock()
    spec, train = trial.spec, trial.train
    torch.set_num_threads(spec.threads)
    spec.fetch(trial.dataset)
    # Train V2 logs every report at INFO on a logger named by file path, which its
    # LoggingConfig does not reach; the root level does, and didray prints progress itself.
    logging.getLogger().setLevel(logging.WARNING)
    # Ray's own handler prints "Checkpoint successfully created at ..." at every report.
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    rank, world_size = session.rank, session.world_size
    torch.manual_seed(trial.seed)
    model, tokenizer, hook = load_policy(spec.world_dir, spec.dtype, spec.gradient_checkpointing)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    data = load_pair_tensors(trial.files.ref_file).to(device)
    # Rank 0 evaluates; toy responses can be enumerated, hf ones are sampled after training.
    tables = (ToyTables.load(spec.world_dir, spec.enum_file, trial.eval.judge)
              if spec.world == "toy" and rank == 0 else None)

    law = trial.files.law
    # The cell's optimum, once per trial: it depends on the regime and beta only.
    optimum = optimum_table(tables, law, trial.beta) if tables and law else None
    start, optimizer_state, history = restore(model, session.latest_checkpoint())
    if start == 0 and rank == 0:  # a resumed run has step 0 in its restored history
        history.append(reference_report(data, trial, tables, optimum, world_size))
    model = session.prepare(model)
    optimizer = make_optimizer(model.parameters(), train.optimizer, train.lr,
                               train.weight_decay)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    plain = model.module if hasattr(model, "module") else model

    def on_step(step: int, metrics: dict[str, torch.Tensor | float]) -> None:
        last = step == train.steps
        if step % train.report_every and not last:
            return
        # The node id shows where a sweep's trials ran on a multi-node cluster.
        metrics = {"step": step, "node_id": ray.get_runtime_context().get_node_id(),
                   "workers": world_size, **as_floats(metrics)}
        if last and rank == 0:
            # The last report waits on the final evaluation (seconds on a CPU for the toy
            # world's exact one): said, so a quiet console does not look like a stall.
            print(f"[didray]   {trial.trial_id} step {step}/{train.steps}: final evaluation",
                  file=sys.stderr, flush=True)
        table = None
        if tables is not None and trial.evaluates_at(step):
            with clock("eval"):
                table = tables.policy_table(plain, tokenizer)  # (P, R)
                metrics |= exact_report(tables, table, optimum)
        if rank == 0:
            export_step_metrics(metrics, trial.tags)
            history.append(metrics)
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if rank == 0 and (step % train.checkpoint_interval == 0 or last):
                extra = {}
                if last:
                    with clock("eval"):
                        evaluation = final_evaluation(plain, tokenizer, hook, data, trial,
                                                      tables, table, optimum)
                    evaluation["metrics"] |= clock.seconds()
                    extra = {EVALUATION_FILE: evaluation}
                with clock("checkpoint"):
                    save_checkpoint(plain, tokenizer, optimizer, step, history, Path(tmp),
                                    extra)
                checkpoint = session.checkpoint_type.from_directory(tmp)  # Ray
            session.report(metrics, checkpoint)

    clock.setup_done()
    train_dpo(model, optimizer, data, trial.loss,
              Batches(train.batch_size, trial.seed, micro_batches=train.grad_accum, rank=rank,
                      world_size=world_size),
              range(start, train.steps), hook=hook, on_step=on_step,
              lr_at=lr_schedule(train.lr, train.steps, train.lr_schedule, train.warmup_steps),
              max_grad_norm=train.max_grad_norm,
              population=population_objective(tables, law, tokenizer, device)
              if train.objective == "population" else None)


def population_objective(tables: ToyTables, law: PairLaw, tokenizer, device: str) -> Population:
    """The population objective's tables (docs/design.md §1.11); the sweep's rules made sure
    the world is toy, the regime tilted and this the only rank."""
    return Population(Enumeration.of(tables.world, tokenizer, training_only=True), tokenizer,
                      tables.training_rows(tables.ref).to(device),
                      training_law(tables, law).float().to(device))
