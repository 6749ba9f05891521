"""Sweep files: every shipped file validates; bad files fail with field paths, exit code 2."""

from pathlib import Path

import pytest
import yaml
from support.schema import CI, errors_of, swept, with_

from didray.cli import main
from didray.config.load import load_sweep, parse_sweep
from didray.config.schema import Sweep

SWEEPS = sorted(Path(__file__).parents[2].joinpath("sweeps").glob("*.yaml"))


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_shipped_sweeps_validate(path):
    sweep = load_sweep(path)
    assert sweep.trial_count() >= 4


def test_toy_default_has_three_betas_and_two_regimes():
    sweep = load_sweep(Path(__file__).parents[2] / "sweeps/toy.yaml")
    assert len(sweep.search.beta) >= 3 and len(sweep.regime_names()) >= 2


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("search.beta", [0.1, 0.2, -1], "search.beta[2]: must be >= 0.0001 (got -1)"),
        ("train.lrr", 0.1, "train.lrr: unknown field (not in the schema)"),
        # unknown fields: the nearest valid name of their section, or TRL's name pointed to ours
        ("train.step", 6, "train.step: unknown field (not in the schema); did you mean `steps`?"),
        ("regimes.1.taus", 1, "regimes[1].taus: unknown field (not in the schema); did you mean "
                              "`tau`?"),
        ("eval.judge.kk", 3, "eval.judge.kk: unknown field (not in the schema); did you mean "
                             "`k`?"),
        # ci.yaml gives train.lr: TRL's name for it as well is one too many
        ("train.learning_rate", 1e-4, "train.learning_rate: unknown field (not in the schema); "
                                      "TRL's `learning_rate` is `train.lr`, which is given too"),
        ("train.per_device_train_batch_size", 4, "TRL's `per_device_train_batch_size`: "
                                                 "`train.batch_size` is pairs per optimizer "
                                                 "step over all workers (not per device)"),
        ("gradient_accumulation_steps", 2, "gradient_accumulation_steps: unknown field (not in "
                                           "the schema); TRL's `gradient_accumulation_steps` is "
                                           "`train.grad_accum` here"),
        ("train.max_steps", 10, "TRL's `max_steps` is `train.steps`, which is given too"),
        ("train.num_train_epochs", 3, "TRL's `num_train_epochs`: `train.steps` counts optimizer "
                                      "steps (didray has no epochs)"),
        ("train.beta", 0.1, "train.beta: unknown field (not in the schema); TRL's `beta`: the "
                            "training beta is a search axis, `search.beta`"),
        ("regimes.1.tau", 0, "regimes[1].tau: must be >= 0.0001 (got 0)"),
        ("regimes.0.kind", "nope", "regimes[0]: Input tag 'nope'"),
        ("train.optimizer", "lion", "train.optimizer: Input should be 'adamw' or 'sgd'"),
        ("name", "a b", "name: must match"),
        ("search.regime", ["pg", "missing"], "search.regime names ['missing'] are not defined"),
        ("train.max_response_tokens", 3, "train.max_response_tokens (3) must be >= "),
        ("model.toy.head_dim", 16, "model.toy.head_dim: must be >= 32 (got 16)"),
        ("model.toy.sft_steps", 10**6,
         "model.toy.sft_steps: must be <= 100,000 (got 1000000)"),
        ("model.toy.hidden_sise", 64, "model.toy.hidden_sise: unknown field (not in the schema)"),
        # numbers: finite, never booleans, within limits
        ("train.lr", True, "train.lr: must be a number, not the boolean True"),
        ("search.seed", [0, False], "search.seed[1]: must be a number, not the boolean False"),
        ("train.lr", float("inf"), "train.lr: must be a finite number (got inf)"),
        ("regimes.1.beta_data", float("nan"), "regimes[1].beta_data: must be a finite number"),
        ("scaling.cpus_per_worker", float("inf"), "scaling.cpus_per_worker: must be a finite"),
        ("scaling.gpus_per_worker", 17, "scaling.gpus_per_worker: must be <= 16 (got 17)"),
        ("train.steps", 100_001, "train.steps: must be <= 100,000 (got 100001)"),
        ("data.pairs_per_prompt", 10**7, "data.pairs_per_prompt: must be <= 1,024 (got 10000000)"),
        ("data.seed", 2**63, "data.seed: must be <= 2,147,483,647 (got 9223372036854775808)"),
        ("data.seed", -1, "data.seed: must be >= 0 (got -1)"),
        ("search.seed", [0, 2**31], "search.seed[1]: must be <= 2,147,483,647 (got 2147483648)"),
        ("search.num_samples", 10_001, "search.num_samples: must be <= 10,000 (got 10001)"),
        ("storage", "ftp://host/x", "storage: 'ftp://host/x': ftp:// is not a storage didray "
                                    "can write; use a local path or a URI of s3://"),
        # cross-field rules
        ("search.beta", [0.1, 0.5, 0.1], "search.beta: values must be distinct; repeated: 0.1"),
        ("search.seed", [3, 0, 3], "search.seed: values must be distinct; repeated: 3"),
        ("search.regime", ["pg", "pg"], "search.regime: values must be distinct; repeated: pg"),
        ("train.checkpoint_every", 8, "train: checkpoint_every (8) must be <= steps (6)"),
        ("train.warmup_steps", 6, "train: warmup_steps (6) must be < steps (6)"),
        ("train.label_smoothing", 0.6, "train.label_smoothing: must be <= 0.5 (got 0.6)"),
        ("train.lr_schedule", "step", "train.lr_schedule: Input should be 'constant', 'linear' "
                                      "or 'cosine'"),
        ("train.max_grad_norm", 0, "train.max_grad_norm: must be > 0 (got 0)"),
        ("train.checkpoint_every", 3,
         "train: checkpoint_every (3) must be a multiple of report_every (2)"),
        # CI: 6 steps, reports at 2, 4 and the last step, 6: an every-3rd report is the last
        ("eval.every", 3, "(top level): eval.every (3) must be <= the reports before the last "
                          "step, (train.steps - 1) // train.report_every = (6 - 1) // 2 = 2"),
        ("eval.every", 0, "eval.every: must be >= 1 (got 0)"),
        ("train.grad_accum", 3, "(top level): train.batch_size (8) must be a multiple of "
                                "scaling.workers_per_trial x train.grad_accum (1 x 3 = 3)"),
        ("scaling.workers_per_trial", 3, "train.batch_size (8) must be a multiple of "
                                         "scaling.workers_per_trial x train.grad_accum (3 x 1"),
        ("search.seed", list(range(2501)), "(top level): the search makes 10,004 trials; "
                                           "at most 10,000"),
    ],
)
def test_bad_values_name_their_field(path, value, expected):
    errors = errors_of(with_(path, value))
    assert any(e.startswith(expected) or expected in e for e in errors), errors


@pytest.mark.parametrize("section", [{"exact": False, "every": 2}, {"every": 2}])
def test_eval_every_needs_the_exact_toy_evaluation(section):
    data = with_("eval", section)
    if "exact" not in section:  # the hf world cannot enumerate responses
        data = {**data, "world": "hf", "model": {"hf": {"path": "m"}},
                "data": {"source": "d"}, "eval": {**section, "split": "test", "scorer": {
                    "kind": "embedding", "path": "e"}}}
    errors = errors_of(data)
    assert any("eval.every (2) schedules the exact toy evaluation: it needs world: toy and "
               "eval.exact: true" in e for e in errors), errors


@pytest.mark.parametrize(
    ("changes", "read"),
    [
        ({"train.lr": 1}, ("train", "lr", 1.0)),  # an int where a float is expected
        ({"train.lr": "1e-3"}, ("train", "lr", 0.001)),  # YAML 1.1 reads 1e-3 as text
        ({"train.grad_accum": 2, "scaling.workers_per_trial": 4}, ("train", "batch_size", 8)),
        ({"train.checkpoint_every": 6, "train.report_every": 3}, ("train", "checkpoint_every", 6)),
        ({}, ("eval", "every", 1)),  # by default every report is evaluated
        ({"eval.every": 2}, ("eval", "every", 2)),
        ({"search.seed": [2**31 - 1, 0]}, ("search", "seed", [2**31 - 1, 0])),
    ],
)
def test_accepted_values_read_back(changes, read):
    data = CI
    for path, value in changes.items():
        data = with_(path, value, data)
    section, field, expected = read
    assert getattr(getattr(parse_sweep(data), section), field) == expected


def number_rules(prop: dict):
    """The JSON-schema rules of a property's numbers (optional fields and list items too)."""
    for rule in prop.get("anyOf", [prop]):
        for inner in (rule, rule.get("items", {})):
            if inner.get("type") in ("integer", "number"):
                yield inner


def test_every_number_is_bounded_and_every_limit_stated():
    schema = Sweep.model_json_schema()
    seen = 0
    for model, definition in schema["$defs"].items():
        for field, prop in definition["properties"].items():
            for rule in number_rules(prop):
                seen += 1
                assert "minimum" in rule or "exclusiveMinimum" in rule, (model, field)
                assert rule["type"] == "number" or "maximum" in rule, (model, field)
                if "maximum" in rule:
                    assert f"{rule['maximum']:,}" in prop["description"], (model, field)
    assert seen == 69  # a new numeric field must state its bounds to be counted here


def test_label_smoothing_is_not_defined_for_ipo():
    data = with_("train", {**CI["train"], "loss_type": "ipo", "label_smoothing": 0.1})
    assert errors_of(data) == ["train: label_smoothing applies to loss_type sigmoid and simpo, "
                               "not ipo"]


def test_trainer_defaults_are_todays_behaviour():
    train = parse_sweep(CI).train
    assert (train.lr_schedule, train.warmup_steps, train.max_grad_norm, train.label_smoothing,
            train.loss_type) == ("constant", 0, None, 0.0, "sigmoid")


def test_an_unknown_field_far_from_every_name_gets_no_guess():
    assert errors_of(with_("train.zzz", 1)) == ["train.zzz: unknown field (not in the schema)"]


def test_every_error_is_listed():
    data = with_("search.beta", [-1])
    data["train"]["bogus"] = 1
    data["regimes"][1]["tau"] = -2
    errors = errors_of(data)
    assert len(errors) == 3


def test_a_refused_search_key_hides_no_other_search_error():
    """An unknown key and a prepared setting under `search` are named beside the bad beta
    (a hypothesis find: the unknown key used to stop the search's validation)."""
    errors = errors_of(swept(beta=[-1], bogus=1, **{"data.pairs_per_prompt": [4, 8]}))
    assert errors == ["search.beta[0]: must be >= 0.0001 (got -1)",
                      "search: unknown field `bogus` (not in the schema)",
                      "search: `data.pairs_per_prompt` cannot be a search axis: it is read "
                      "while the regime datasets, reference caches and evaluation data are "
                      "prepared, once for all trials before any starts; run one sweep per "
                      "value instead"]


def test_duplicate_regime_names_rejected():
    data = with_("regimes.1.name", "pg")
    assert any("repeated: pg" in e for e in errors_of(data))


def test_validate_cli_exit_codes(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(CI))
    assert main(["validate", str(good)]) == 0
    assert "4 trial(s)" in capsys.readouterr().out

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(with_("search.beta", [0.1, 0.2, -1])))
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "search.beta[2]: must be >= 0.0001 (got -1)" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("text", "expected"),
    [("name: [unclosed", "not valid YAML"), ("- a\n- b\n", "top level must be a mapping")],
)
def test_unparseable_files(tmp_path, capsys, text, expected):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    assert main(["validate", str(path)]) == 2
    assert expected in capsys.readouterr().err


def test_missing_file(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err


HF = {"name": "h", "world": "hf", "model": {"hf": {"path": "m"}},
      "data": {"source": "d.jsonl"}, "regimes": [{"kind": "pg", "name": "pg"}],
      "search": {"beta": [0.1]},
      "eval": {"split": "test", "scorer": {"kind": "embedding", "path": "e"}}}


def test_hf_sections_belong_to_the_hf_world():
    errors = errors_of(with_("data.source", "d.jsonl"))
    assert errors == ["(top level): data.source only apply to world: hf (world is toy)"]
    errors = errors_of(with_("data.scorer", {"kind": "embedding", "path": "e"}))
    assert errors == ["(top level): data.scorer only apply to world: hf (world is toy)"]


def test_hf_world_needs_a_held_out_evaluation_split():
    data = {**HF, "eval": {"scorer": HF["eval"]["scorer"]}}
    assert errors_of(data) == [
        "(top level): world: hf needs eval.split (eval.split: the split of data.source whose "
        "prompts are held out of training to evaluate on, e.g. test)"]


@pytest.mark.parametrize("drop, named", [("model", "model.hf"), ("data", "data.source"),
                                         ("eval", "eval.scorer")])
def test_hf_world_names_what_it_lacks(drop, named):
    data = {k: v for k, v in HF.items() if k != drop}
    assert named in " ".join(errors_of(data))


def test_hf_world_refuses_exact_evaluation():
    data = {**HF, "eval": {**HF["eval"], "exact": True}}
    assert "eval.exact" in " ".join(errors_of(data))
    assert parse_sweep(HF).sampler.backend == "auto"  # and the minimal hf file is valid


def test_judge_belongs_to_the_toy_world():
    assert parse_sweep(with_("eval.judge", {"diversity_weight": 0, "k": 4})).eval.judge.k == 4
    data = {**HF, "eval": {**HF["eval"], "judge": {"diversity_weight": 1}}}
    assert "eval.judge only applies to world: toy" in " ".join(errors_of(data))


def test_training_and_heldout_prompts_share_the_candidates():
    errors = errors_of(with_("model.toy", {"n_fact_prompts": 40, "n_heldout_fact_prompts": 9}))
    assert "n_fact_prompts + n_heldout_fact_prompts = 49: at most 48 fact prompts exist" in (
        " ".join(errors))

def test_hf_sweep_files_pin_what_they_claim():
    cpu = load_sweep(Path(__file__).parents[2] / "sweeps/smollm2-cpu.yaml")
    gpu = load_sweep(Path(__file__).parents[2] / "sweeps/qwen3-4b-ultrafeedback.yaml")
    assert (cpu.model.hf.dtype, cpu.scaling.gpus_per_worker, cpu.sampler.gpus_per_actor) == (
        "float32", 0, 0)
    assert {r.kind for r in cpu.regimes} == {"pg", "powerlaw"} and len(cpu.search.beta) == 2
    assert (gpu.model.hf.dtype, gpu.model.hf.gradient_checkpointing) == ("bfloat16", True)
    assert gpu.scaling.gpus_per_worker == 1 and gpu.sampler.backend == "vllm"


def test_any_train_or_eval_setting_is_an_axis_typed_by_its_field():
    sweep = parse_sweep(swept(**{"train.lr": ["1e-4", 1e-3], "eval.judge.k": [4, 8]}))
    assert sweep.search.axes == {"train.lr": [1e-4, 1e-3], "eval.judge.k": [4, 8]}
    assert sweep.trial_count() == 2 * 2 * 2 * 2  # beta x regime x lr x k
    # Dotted keys round-trip: the manifest's dump validates to the same sweep.
    assert parse_sweep(sweep.model_dump(mode="json")) == sweep
    drawn = parse_sweep(swept(mode="random", num_samples=4,
                              **{"train.lr": {"loguniform": ["1e-4", "1e-2"]}}))
    assert drawn.model_dump(mode="json")["search"]["train.lr"] == {"loguniform": [1e-4, 1e-2]}
    assert drawn.trial_count() == 4


def test_data_seeds_are_replicate_datasets_of_every_regime():
    """docs/design.md §3.7: each data.seed value is one dataset of each regime."""
    sweep = parse_sweep(swept(**{"data.seed": [3, 1, 2]}))
    assert sweep.datasets() == [("pg", 3), ("pg", 1), ("pg", 2), ("powerlaw-t1", 3),
                                ("powerlaw-t1", 1), ("powerlaw-t1", 2)]
    assert sweep.trial_count() == 2 * 2 * 3  # beta x regime x data.seed
    assert parse_sweep(CI).datasets() == [("pg", None), ("powerlaw-t1", None)]
    drawn = parse_sweep(swept(mode="random", num_samples=5, **{"data.seed": {"choice": [0, 7]}}))
    assert drawn.search.data_seeds() == [0, 7]


@pytest.mark.parametrize(("search", "expected"), [
    ({"train.lr": [1e-3, -1]}, "search.train.lr[1]: must be > 0 (got -1)"),
    # applied to the whole sweep: ci.yaml's train.steps is 6
    ({"train.warmup_steps": [0, 10]}, "search.train.warmup_steps[1]: warmup_steps (10) must "
     "be < steps (6)"),
    ({"mode": "random", "train.lr": {"choice": [1e-3, 0]}},
     "search.train.lr.choice[1]: must be > 0 (got 0)"),
    ({"mode": "random", "train.lr": {"uniform": [1, 0.5]}},
     "search.train.lr: uniform: [lo, hi] needs lo < hi"),
    ({"mode": "random", "train.lr": 0.1}, "search.train.lr: must be a list of values or a "
     "distribution"),
    ({"train.lr": {"loguniform": [1e-4, 1e-2]}}, "search: train.lr: a distribution needs mode: "
     "random"),
    ({"train.lrr": [1e-3]}, "search: unknown setting `train.lrr`; did you mean `train.lr`?"),
    ({"data.pairs_per_prompt": [4, 8]}, "search: `data.pairs_per_prompt` cannot be a search "
     "axis: it is read while the regime datasets"),
    ({"mode": "random", "data.seed": {"uniform": [0, 4]}}, "search: data.seed: each value is "
     "a dataset built before the trials start, so give a list or {choice: [...]}"),
    ({"data.seed": [0, -1]}, "search.data.seed[1]: must be >= 0"),
    ({"train.lr": [1e-3, 1e-3]}, "search.train.lr: values must be distinct; repeated: 0.001"),
])
def test_bad_axes_are_named(search, expected):
    errors = errors_of(swept(**search))
    assert any(e.startswith(expected) for e in errors), errors


def test_population_objective_needs_a_known_pair_law():
    """docs/design.md §1.11: the population objective enumerates responses (toy), takes a
    tilted regime's law, trains on one worker and a log-ratio loss."""
    population = {**CI["train"], "objective": "population"}
    tilted = [{"kind": "powerlaw", "name": "p", "tau": 1.0}]
    assert errors_of({**with_("train", population), "regimes": CI["regimes"]}) == [
        "(top level): train.objective: population needs regimes with a known pair law "
        "(powerlaw, or pg with chosen: tilted); pg has none"]
    hf = {**HF, "train": population, "regimes": tilted}
    assert "train.objective: population needs world: toy" in " ".join(errors_of(hf))
    many = {**with_("train", population), "regimes": tilted,
            "scaling": {**CI["scaling"], "workers_per_trial": 2}}
    assert "workers_per_trial: 1" in " ".join(errors_of(many))
    simpo = {**with_("train", {**population, "loss_type": "simpo"}), "regimes": tilted}
    assert "loss_type simpo" in " ".join(errors_of(simpo))
    ok = parse_sweep({**with_("train", population), "regimes": tilted})
    assert ok.train.objective == "population" and parse_sweep(CI).train.objective == "sampled"


def test_trl_names_of_train_settings_are_accepted_as_didrays():
    """A TRL user's DPOConfig names for settings that mean the same here are taken, and the
    resolved sweep (what manifest.json records) carries didray's names."""
    train = {k: v for k, v in CI["train"].items() if k not in ("lr", "steps")}
    sweep = parse_sweep({**CI, "train": {**train, "learning_rate": 3e-4, "max_steps": 8,
                                         "lr_scheduler_type": "cosine",
                                         "gradient_accumulation_steps": 2}})
    assert (sweep.train.lr, sweep.train.steps, sweep.train.lr_schedule,
            sweep.train.grad_accum) == (3e-4, 8, "cosine", 2)
    dumped = sweep.model_dump(mode="json")["train"]
    assert dumped["lr"] == 3e-4 and "learning_rate" not in dumped
    overridden = load_sweep(Path(__file__).parents[2] / "sweeps/ci.yaml",
                            ["train.learning_rate=1e-4"])
    assert overridden.train.lr == 1e-4  # the file's train.lr, set by TRL's name
