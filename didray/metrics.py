"""The one list of every column didray writes: its name, type, meaning, unit and world.

Producers (the Train worker, the evaluations), the Prometheus gauges, Tune's progress table,
`didray.analysis.load` and `didray analyze --columns` all read their names from here; a
contract test runs a real sweep and checks that every column it writes is registered and that
`load` keeps it. Pure Python, so every layer may import it.

Tables: `steps` (steps.parquet, one row per report), `trials` (trials.parquet, one row per
trial; the last report's step metrics appear there as `final/<name>`), `evals` (evals.parquet,
one row per (trial, prompt, estimator)).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

BOTH = ("toy", "hf")
PLACEHOLDER = "{K}"  # in a registered name: any positive integer (eval.did_samples)
SETTING = "{setting}"  # in a registered name: a dotted setting name (a search axis)
PLACEHOLDERS = {PLACEHOLDER: "[1-9][0-9]*", SETTING: "[a-z_]+(?:\\.[a-z_]+)*"}
TOY = ("toy",)


@dataclass(frozen=True)
class Metric:
    name: str
    dtype: str  # "float", "int" or "str"
    meaning: str
    tables: tuple[str, ...]
    unit: str = ""
    worlds: tuple[str, ...] = BOTH
    label: str = ""  # a short header for progress tables; empty: not shown there
    axis: str = ""  # how a figure names it (its unit is added); empty: the column name

    @property
    def patterned(self) -> bool:
        """A name with `{K}` stands for one column per value of K (did_entropy_plugin_k32),
        one with `{setting}` for one column per swept setting (train.lr)."""
        return any(p in self.name for p in PLACEHOLDERS)


def _m(name: str, dtype: str, tables: str, meaning: str, unit: str = "",
       worlds: tuple[str, ...] = BOTH, label: str = "", axis: str = "") -> Metric:
    return Metric(name, dtype, meaning, tuple(tables.split()), unit, worlds, label, axis)


AXES = (
    _m("sweep", "str", "trials steps evals", "sweep name (the results directory's name)"),
    _m("trial_id", "str", "trials steps evals", "Tune trial id; also names its Train run"),
    _m("beta", "float", "trials steps evals", "training beta of DPO", label="beta", axis="β"),
    _m("regime", "str", "trials steps evals", "regime name from the sweep file",
       label="regime"),
    _m("seed", "int", "trials steps evals", "training seed (batch order, estimator draws)",
       label="seed"),
    _m("regime_kind", "str", "trials steps evals", "offpolicy, pg or powerlaw"),
    _m("tau", "float", "trials steps evals", "tilted regimes: temperature of pi_star = "
       "pi_ref exp(score/tau), given or solved from the requested DID entropy"),
    _m("beta_data", "float", "trials steps evals", "tilted regimes: exponent that built the "
       "data"),
    _m("data.seed", "int", "trials steps evals", "the seed of the trial's dataset where "
       "data.seed is a search axis (replicate datasets of every regime, the independent unit "
       "of the analysis; docs/design.md §3.7)"),
    # Written for the search axes a sweep has (`search: {train.lr: ...}`), typed as the setting.
    _m("train.{setting}", "setting", "trials steps evals", "a swept train setting: the "
       "trial's value"),
    _m("eval.{setting}", "setting", "trials steps evals", "a swept eval setting: the trial's "
       "value"),
)

# What a regime's data encode (didray.data.regimes.Built.stats), on every row of its trials.
DATA = (
    _m("data_did_entropy", "float", "trials steps", "DID entropy H(q_{pi*/pi_ref}) the data "
       "encode, mean over training prompts (toy offpolicy: the tau -> 0 limit)", "nats"),
    _m("data_did_entropy_method", "str", "trials steps", "how data_did_entropy was computed: "
       "exact (toy, by enumeration) or snis_ref_k{K} (hf)"),
    _m("data_pairs", "int", "trials steps", "preference pairs in the regime's dataset"),
    _m("data_chosen_higher", "float", "trials steps", "fraction of pairs whose chosen has the "
       "higher data score", "fraction"),
    _m("data_margin_abs", "float", "trials steps", "tilted regimes: mean |R(chosen) - "
       "R(rejected)|, the Bradley-Terry label strength", "nats"),
    _m("data_ess", "float", "trials steps", "tilted regimes: mean effective sample size of "
       "the importance resampling (1 to candidates)"),
)

STEP = (
    _m("step", "int", "steps trials evals", "optimizer steps done at this report (0: pi_ref "
       "before any update; the whole dataset's values, no tokens_per_s)", label="step"),
    _m("node_id", "str", "steps trials", "Ray node the trial's rank 0 trained on"),
    _m("workers", "int", "steps", "Train workers (DDP ranks) of the trial"),
    _m("loss", "float", "steps", "DPO loss, mean over the reported step's batch", "nats",
       label="loss", axis="DPO loss"),
    _m("rewards/chosen", "float", "steps", "implicit reward beta*log(pi/pi_ref) of chosen",
       "nats"),
    _m("rewards/rejected", "float", "steps", "implicit reward of rejected", "nats"),
    _m("rewards/margins", "float", "steps", "mean reward margin chosen - rejected", "nats",
       label="margin", axis="reward margin"),
    _m("rewards/accuracies", "float", "steps", "fraction of pairs with chosen reward > "
       "rejected", "fraction", label="acc", axis="reward accuracy"),
    _m("logps/chosen", "float", "steps", "mean log-prob of the batch's chosen under pi", "nats",
       axis="log π(chosen)"),
    _m("logps/rejected", "float", "steps", "mean log-prob of the batch's rejected under pi",
       "nats", axis="log π(rejected)"),
    _m("tokens_per_s", "float", "steps", "training throughput of rank 0", "tokens/s"),
    _m("did/entropy", "float", "steps", "exact DID entropy H(q_{pi/pi_ref}), mean over "
       "prompts", "nats", TOY, label="DID H", axis="DID entropy"),
    _m("eval/instruction_score", "float", "steps", "exact instruction_score (held-out open "
       "prompts)", "", TOY, axis="instruction score"),
    _m("eval/qa_accuracy", "float", "steps", "exact qa_accuracy (held-out fact prompts)",
       "fraction", TOY, axis="QA accuracy"),
    _m("optimum_tv", "float", "steps", "tilted regimes: total variation between the policy "
       "and the population DPO optimum of its cell (docs/design.md §1.11), mean over training "
       "prompts", "fraction", TOY, axis="TV to the optimum"),
    _m("optimum_kl", "float", "steps", "tilted regimes: KL(optimum || policy) to the "
       "population DPO optimum of its cell, mean over training prompts", "nats", TOY,
       axis="KL(optimum ‖ π)"),
)

# Means over prompts of the K-sample estimates in evals.parquet (not exact values). Their names
# carry K, so sweeps at different K never share a column (docs/design.md §1.8).
TRIAL_ESTIMATES = (
    _m("did_entropy_plugin_k{K}", "float", "trials", "deduplicated plug-in DID-entropy "
       "estimate over the policy's K samples, mean over prompts (the paper's estimate; at "
       "most log K)", "nats"),
    _m("did_entropy_snis_policy_k{K}", "float", "trials", "SNIS DID-entropy estimate over the "
       "policy's K samples, mean over prompts; read with its _ess and _reliable", "nats"),
    _m("did_entropy_snis_policy_k{K}_ess", "float", "trials", "effective sample size (sum "
       "w)^2 / sum w^2 of that SNIS estimate's weights, mean over prompts (1 to K)"),
    _m("did_entropy_snis_policy_k{K}_reliable", "float", "trials", "fraction of prompts whose "
       "SNIS weights have an effective sample size of at least 2; below it the estimate is "
       "one sample's, unreliable", "fraction"),
    _m("did_entropy_snis_ref_k{K}", "float", "trials", "SNIS DID-entropy estimate over "
       "pi_ref's K samples, mean over prompts; read with its _ess and _reliable", "nats"),
    _m("did_entropy_snis_ref_k{K}_ess", "float", "trials", "effective sample size of that "
       "SNIS estimate's weights, mean over prompts (1 to K)"),
    _m("did_entropy_snis_ref_k{K}_reliable", "float", "trials", "fraction of prompts whose "
       "SNIS weights have an effective sample size of at least 2", "fraction"),
)

TRIAL = (
    _m("status", "str", "trials", "TERMINATED (finished), STOPPED (cut early by the "
       "search.scheduler), ERROR or RUNNING"),
    _m("error", "str", "trials", "where the failed trial's traceback is"),
    _m("checkpoint_path", "str", "trials", "the trial's final checkpoint (weights, tokenizer)"),
    _m("did_entropy", "float", "trials", "DID entropy of the final policy for tables and "
       "plots: did_entropy_exact where the world has it, else did_entropy_plugin_k{K}",
       "nats", label="final DID H", axis="DID entropy"),
    _m("did_entropy_estimator", "str", "trials", "what did_entropy holds: exact, or the "
       "estimate's name with its K (e.g. plugin_k32)"),
    _m("did_entropy_exact", "float", "trials", "exact DID entropy of the final policy, mean "
       "over prompts", "nats", TOY),
    _m("did_entropy_open", "float", "trials", "exact DID entropy on open prompts (never an "
       "estimate)", "nats", TOY),
    _m("did_entropy_fact", "float", "trials", "exact DID entropy on fact prompts (never an "
       "estimate)", "nats", TOY),
    *TRIAL_ESTIMATES,
    _m("did_samples_cut_policy", "float", "trials", "fraction of the policy's DID samples cut "
       "at sampler.max_tokens (no eos): their DID is between truncated laws", "fraction",
       ("hf",)),
    _m("did_samples_cut_ref", "float", "trials", "fraction of pi_ref's DID samples cut at "
       "sampler.max_tokens (no eos)", "fraction", ("hf",)),
    _m("instruction_score", "float", "trials", "toy: (1-w) judge + w coverage, w from "
       "eval.judge; hf: greedy scorer value", axis="instruction score"),
    _m("judge_weight", "float", "trials", "w of instruction_score: eval.judge.diversity_weight, "
       "the pre-registered weight its verdict is read at (didray analyze: every w)", "", TOY,
       axis="judge weight w"),
    _m("instruction_judge", "float", "trials", "expected judge verdict of the policy's "
       "samples, held-out open prompts", "fraction", TOY),
    _m("instruction_coverage", "float", "trials", "distinct acceptable responses in k samples / "
       "min(k, #acceptable), held-out", "fraction", TOY),
    _m("instruction_winrate", "float", "trials", "win rate against pi_ref, ties half; derived "
       "from the judge, no verdict of its own (toy: 1/2 + (instruction_judge - pi_ref's) / 2 "
       "exactly; hf: the same greedy scores as instruction_score)", "fraction",
       axis="win rate vs π_ref"),
    _m("instruction_score_seen", "float", "trials", "instruction_score on the training open "
       "prompts", "", TOY),
    _m("qa_accuracy", "float", "trials", "knowledge-QA accuracy (toy: greedy exact match, "
       "held-out; hf: eval.qa.mode)", "fraction", label="QA", axis="QA accuracy"),
    _m("qa_accuracy_known", "float", "trials", "qa_accuracy on held-out facts the SFT teacher "
       "knew", "fraction", TOY),
    _m("qa_accuracy_unknown", "float", "trials", "qa_accuracy on held-out facts the SFT "
       "teacher did not know", "fraction", TOY),
    _m("qa_accuracy_teachable", "float", "trials", "qa_accuracy on held-out facts the pairs "
       "can teach: a training fact of the same relation has the same answer word",
       "fraction", TOY),
    _m("qa_accuracy_unteachable", "float", "trials", "qa_accuracy on held-out facts no "
       "training fact of the same relation shares the answer of", "fraction", TOY),
    _m("qa_expected", "float", "trials", "mean p(answer) over held-out fact prompts",
       "fraction", TOY, axis="expected QA p(answer)"),
    _m("qa_accuracy_seen", "float", "trials", "qa_accuracy on the training fact prompts",
       "fraction", TOY),
    _m("chosen_displacement", "float", "trials", "mean log pi - log pi_ref of the regime's "
       "chosen responses", "nats", axis="chosen log π/π_ref"),
    _m("rejected_displacement", "float", "trials", "mean log pi - log pi_ref of the regime's "
       "rejected responses", "nats", axis="rejected log π/π_ref"),
    _m("dpo_loss", "float", "trials", "the trained loss over the whole regime dataset",
       "nats"),
    _m("reward_accuracy", "float", "trials", "fraction of the dataset's pairs with chosen "
       "reward > rejected", "fraction", axis="reward accuracy"),
)

# The cell's population DPO optimum, evaluated as a trained policy is (didray/eval/optimum.py):
# one column per exact toy evaluation column, prefixed.
OPTIMUM_OF = ("did_entropy", "did_entropy_open", "did_entropy_fact", "instruction_score",
              "instruction_judge", "instruction_coverage", "instruction_winrate",
              "instruction_score_seen", "qa_accuracy", "qa_accuracy_known",
              "qa_accuracy_unknown", "qa_accuracy_teachable", "qa_accuracy_unteachable",
              "qa_expected", "qa_accuracy_seen")
_UNITS = {m.name: m.unit for m in TRIAL}
OPTIMUM = tuple(
    _m(f"optimum_{name}", "float", "trials", f"tilted regimes: {name} of the population DPO "
       "optimum of the trial's cell at its training beta, exact (docs/design.md §1.11)",
       _UNITS[name], TOY)
    for name in OPTIMUM_OF)

# The trial's cost breakdown (seconds of its last attempt): the worker's phases, and the whole
# trial as its process saw it; the difference is Ray Tune/Train start-up and latency.
TIMES = (
    _m("time/setup_s", "float", "trials", "loading model, data and tables, and restoring", "s"),
    _m("time/steps_s", "float", "trials", "training steps (and reporting them)", "s"),
    _m("time/eval_s", "float", "trials", "exact evaluation at reports and the final one", "s"),
    _m("time/checkpoint_s", "float", "trials", "saving checkpoints before the final one", "s"),
    _m("time/sampled_eval_s", "float", "trials",
       "the final evaluation on the sampler and scorer actors", "s", worlds=("hf",)),
    _m("time/trial_s", "float", "trials", "the whole trial, start-up included", "s"),
)

ESTIMATE = (
    _m("prompt_id", "int", "evals", "index of the evaluation prompt"),
    _m("metric", "str", "evals", "the estimated quantity (did_entropy)"),
    _m("estimator", "str", "evals", "plugin, snis or exact"),
    _m("k", "int", "evals", "samples per prompt behind the estimate"),
    _m("proposal", "str", "evals", "whose samples: policy or ref"),
    _m("estimate", "float", "evals", "the estimate", "nats"),
    _m("spread_low", "float", "evals", "bootstrap 2.5% quantile of the estimate under "
       "resampling; not a confidence interval", "nats"),
    _m("spread_high", "float", "evals", "bootstrap 97.5% quantile of the estimate under "
       "resampling; not a confidence interval", "nats"),
    _m("ess", "float", "evals", "snis: effective sample size (sum w)^2 / sum w^2 of the "
       "prompt's normalised weights, 1 to k; below 2 the estimate is unreliable (null for "
       "plugin and exact)"),
    _m("exact", "float", "evals", "the exact value where the world can enumerate (toy)",
       "nats"),
)

REGISTRY: dict[str, Metric] = {m.name: m for m in (*AXES, *DATA, *STEP, *TRIAL, *OPTIMUM,
                                                    *TIMES, *ESTIMATE)}
FINAL = "final/"  # trials.parquet carries each step metric of the last report under this prefix


def _pattern(name: str) -> re.Pattern:
    text = re.escape(name)
    for placeholder, matches in PLACEHOLDERS.items():
        text = text.replace(re.escape(placeholder), matches)
    return re.compile(text)


PATTERNS = {_pattern(m.name): m for m in REGISTRY.values() if m.patterned}


def lookup(column: str) -> Metric | None:
    """The registered metric behind a column name, `final/<step metric>` and the columns of a
    patterned name (did_entropy_plugin_k32 -> did_entropy_plugin_k{K}) included."""
    if column.startswith(FINAL):
        name = column.removeprefix(FINAL)
        return REGISTRY[name] if name in step_values() else None
    if column in REGISTRY:
        return REGISTRY[column]
    return next((m for pattern, m in PATTERNS.items() if pattern.fullmatch(column)), None)


def columns(table: str) -> list[Metric]:
    """The registered columns of one results table, in registry order."""
    return [m for m in REGISTRY.values() if table in m.tables]


def step_values() -> list[str]:
    """Step metrics that are numbers a trial reports (what `final/` carries)."""
    return [m.name for m in STEP if m.dtype != "str" and m.name != "step"]


def labels() -> dict[str, str]:
    """name -> short header, for the metrics a progress table shows."""
    return {m.name: m.label for m in (*STEP, *TRIAL) if m.label}


def axis_label(column: str) -> str:
    """A figure's name for a column: its registered axis name and unit ("DID entropy (nats)";
    fractions go without a unit), else the column name itself."""
    metric = lookup(column)
    if metric is None or not metric.axis:
        return column
    return f"{metric.axis} ({metric.unit})" if metric.unit not in ("", "fraction") else metric.axis
