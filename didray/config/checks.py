"""The rules across fields of a sweep, each a function that returns what is wrong (None: it
holds). Train's and Sweep's validators run them on the file's settings, and `point_errors` on
every search point's, so a swept value is held to the same rules as a value in the file."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pydantic_core import InitErrorDetails, PydanticCustomError

from didray.config.fields import MAX_TRIALS, repeated
from didray.config.paths import get, parse, put

if TYPE_CHECKING:
    from didray.config.schema import Sweep, Train


def checkpoints_at_reports(train: Train) -> str | None:
    if train.checkpoint_every is None:
        return None
    every = f"checkpoint_every ({train.checkpoint_every})"
    if train.checkpoint_every > train.steps:
        return (f"{every} must be <= steps ({train.steps}): otherwise no checkpoint is saved "
                "before the last step")
    if train.checkpoint_every % train.report_every:
        return (f"{every} must be a multiple of report_every ({train.report_every}): "
                "checkpoints are saved at report steps only")
    return None


def warmup_fits(train: Train) -> str | None:
    if train.warmup_steps >= train.steps:
        return (f"warmup_steps ({train.warmup_steps}) must be < steps ({train.steps}): "
                "training would end before the warmup does")
    return None


def smoothing_defined(train: Train) -> str | None:
    if train.loss_type == "ipo" and train.label_smoothing:
        return "label_smoothing applies to loss_type sigmoid and simpo, not ipo"
    return None


def population_loss_defined(train: Train) -> str | None:
    if train.objective == "population" and train.loss_type == "simpo":
        return ("train.objective: population takes the loss over log-ratios to pi_ref; "
                "loss_type simpo's length-normalised reward is not one (use sigmoid or ipo)")
    return None


TRAIN_RULES = (checkpoints_at_reports, warmup_fits, smoothing_defined, population_loss_defined)
HF_REQUIRED = ("model.hf", "data.source", "eval.scorer", "eval.split")
HF_ONLY = (*HF_REQUIRED, "data.scorer", "eval.qa")


def hf_sections_in_toy(sweep: Sweep) -> str | None:
    given = [p for p in HF_ONLY if sweep.world == "toy" and get(sweep, parse(p)) is not None]
    if given:
        return f"{', '.join(given)} only apply to world: hf (world is toy)"
    return None


def hf_world_complete(sweep: Sweep) -> str | None:
    if sweep.world != "hf":
        return None
    if missing := [p for p in HF_REQUIRED if get(sweep, parse(p)) is None]:
        held_out = (" (eval.split: the split of data.source whose prompts are held out of "
                    "training to evaluate on, e.g. test)" if "eval.split" in missing else "")
        return f"world: hf needs {', '.join(missing)}{held_out}"
    if "judge" in sweep.eval.model_fields_set:
        return ("eval.judge only applies to world: toy (the hf world scores with "
                "eval.scorer); remove it")
    if sweep.eval.exact and "exact" in sweep.eval.model_fields_set:
        return ("eval.exact: true needs world: toy (hf responses cannot be enumerated); "
                "remove it")
    return None


def evaluations_at_reports(sweep: Sweep) -> str | None:
    every = sweep.eval.every
    if every == 1:
        return None
    if sweep.world != "toy" or not sweep.eval.exact:
        return (f"eval.every ({every}) schedules the exact toy evaluation: it needs world: toy "
                "and eval.exact: true; remove it")
    steps, report_every = sweep.train.steps, sweep.train.report_every
    reports = (steps - 1) // report_every
    if every > reports:
        return (f"eval.every ({every}) must be <= the reports before the last step, "
                f"(train.steps - 1) // train.report_every = ({steps} - 1) // {report_every} "
                f"= {reports}: otherwise only the last step is evaluated (eval.exact: false "
                "says that)")
    return None


def last_cut(train: Train) -> int:
    """The last report step before train.steps (0: none): where ASHA's last rung may be."""
    return (train.steps - 1) // train.report_every * train.report_every


def asha_fits(sweep: Sweep) -> str | None:
    """ASHA decides at reports before the last one (the last already paid for the final
    evaluation): its rungs must lie within them."""
    if sweep.search.scheduler is None:
        return None
    asha, train, last = sweep.search.scheduler.asha, sweep.train, last_cut(sweep.train)
    if last == 0:
        return (f"search.scheduler needs a report before the last step: train.steps "
                f"({train.steps}) must be > train.report_every ({train.report_every})")
    if asha.max_t is not None and asha.max_t > last:
        return (f"search.scheduler.asha.max_t ({asha.max_t}) must be <= the last report "
                f"before train.steps, step {last}")
    if asha.grace_period > (asha.max_t or last):
        return (f"search.scheduler.asha.grace_period ({asha.grace_period}) must be <= max_t "
                f"({asha.max_t or last}): no trial could be stopped")
    return None


def responses_fit(sweep: Sweep) -> str | None:
    need = sweep.model.toy.max_response_tokens + 1  # content words + </s>
    if sweep.world == "toy" and sweep.train.max_response_tokens < need:
        return (f"train.max_response_tokens ({sweep.train.max_response_tokens}) must be >= "
                f"model.toy.max_response_tokens + 1 ({need}): truncating toy responses would "
                "leave the enumerable response space")
    return None


def regimes_known(sweep: Sweep) -> str | None:
    names = [r.name for r in sweep.regimes]
    if same := repeated(names):
        return f"regime names must be unique; repeated: {', '.join(same)}"
    if unknown := [r for r in sweep.search.regime or [] if r not in names]:
        return f"search.regime names {unknown} are not defined in regimes ({', '.join(names)})"
    return None


def batch_splits(sweep: Sweep) -> str | None:
    # Each DDP rank takes batch_size / workers pairs in grad_accum micro-batches; ranks with
    # unequal micro-batch counts (or none) wait forever for each other's gradients.
    workers, accum, size = (sweep.scaling.workers_per_trial, sweep.train.grad_accum,
                            sweep.train.batch_size)
    if size % (workers * accum):
        return (f"train.batch_size ({size}) must be a multiple of scaling.workers_per_trial x "
                f"train.grad_accum ({workers} x {accum} = {workers * accum}): every Ray Train "
                "worker needs the same number of pairs in each micro-batch")
    return None


def trials_bounded(sweep: Sweep) -> str | None:
    if sweep.trial_count() > MAX_TRIALS:
        return (f"the search makes {sweep.trial_count():,} trials; at most {MAX_TRIALS:,} "
                "(beta x regime x seed x each axis in grid mode)")
    return None


def population_law_known(sweep: Sweep) -> str | None:
    """The population objective needs every response enumerated, a regime whose pair law is
    known in closed form (docs/design.md §1.11), and one worker: the enumeration runs many
    forward passes per backward, which DDP does not allow."""
    if sweep.train.objective != "population":
        return None
    if sweep.world != "toy":
        return (f"train.objective: population needs world: toy (world is {sweep.world}): "
                "only toy responses can be enumerated; use train.objective: sampled")
    untilted = [n for n in sweep.regime_names() if n not in sweep.tilted_regimes()]
    if untilted:
        return (f"train.objective: population needs regimes with a known pair law (powerlaw, "
                f"or pg with chosen: tilted); {', '.join(untilted)} has none")
    if sweep.scaling.workers_per_trial != 1:
        return ("train.objective: population needs scaling.workers_per_trial: 1 (its "
                "enumeration takes many forward passes per backward, which DDP refuses)")
    return None


SWEEP_RULES = (hf_sections_in_toy, hf_world_complete, evaluations_at_reports, asha_fits,
               responses_fit, regimes_known, batch_splits, trials_bounded,
               population_law_known)



def first_problem(rules: tuple[Callable, ...], settings: object) -> str | None:
    return next((p for rule in rules if (p := rule(settings)) is not None), None)


def trial_problem(sweep: Sweep) -> str | None:
    """What is wrong with one trial's settings, Train's own rules first."""
    return first_problem(TRAIN_RULES, sweep.train) or first_problem(SWEEP_RULES, sweep)


def point_errors(sweep: Sweep) -> list[InitErrorDetails]:
    """Each search point's problem, once per problem, at the first point that has it: at its
    value (`search.train.steps[1]`) where one axis makes the point, else at `search`, naming
    the point's values. The values were typed by their fields (`Search`), so applying them
    needs no validation."""
    found: dict[str, dict[str, tuple[tuple, object]]] = {}
    for point in sweep.search.points():
        trial = sweep
        for key, (_, value) in point.items():
            trial = put(trial, parse(key), value)
        if (problem := trial_problem(trial)) is not None:
            found.setdefault(problem, point)
    return [point_error(point, problem) for problem, point in found.items()]


def point_error(point: dict[str, tuple[tuple, object]], problem: str) -> InitErrorDetails:
    if len(point) == 1:
        (loc, value), = point.values()
        return InitErrorDetails(type=PydanticCustomError("value_error", problem),
                                loc=("search", *loc), input=value)
    values = ", ".join(f"{key}={value}" for key, (_, value) in point.items())
    return InitErrorDetails(type=PydanticCustomError("value_error", f"with {values}: {problem}"),
                            loc=("search",), input=values)
