"""Sweep files: every shipped file validates; bad files fail with field paths, exit code 2."""

from pathlib import Path

import pytest
import yaml

from didray.cli import main
from didray.config.load import SweepFileError, load_sweep, parse_sweep

SWEEPS = sorted(Path(__file__).parents[2].joinpath("sweeps").glob("*.yaml"))
CI = yaml.safe_load(Path(__file__).parents[2].joinpath("sweeps/ci.yaml").read_text())


def errors_of(data: dict) -> list[str]:
    with pytest.raises(SweepFileError) as info:
        parse_sweep(data)
    return info.value.errors


def with_(path: str, value) -> dict:
    """A copy of the CI sweep with one dotted field replaced."""
    data = yaml.safe_load(yaml.safe_dump(CI))
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[int(key)] if key.isdigit() else node.setdefault(key, {})
    node[last] = value
    return data


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
        ("search.beta", [0.1, 0.2, -1], "search.beta[2]: must be > 0.0 (got -1)"),
        ("train.lrr", 0.1, "train.lrr: unknown field (not in the schema)"),
        ("regimes.1.tau", 0, "regimes[1].tau: must be > 0.0 (got 0)"),
        ("regimes.0.kind", "nope", "regimes[0]: Input tag 'nope'"),
        ("train.optimizer", "lion", "train.optimizer: Input should be 'adamw' or 'sgd'"),
        ("name", "a b", "name: must match"),
        ("search.regime", ["pg", "missing"], "search.regime names ['missing'] are not defined"),
        ("train.grad_accum", 3, "batch_size (8) must be a multiple of grad_accum (3)"),
        ("train.max_response_tokens", 3, "train.max_response_tokens (3) must be >= "),
        ("model.toy.head_dim", 16, "model.toy.head_dim: must be >= 32 (got 16)"),
        ("model.toy.sft_steps", 10**6,
         "model.toy.sft_steps: Input should be less than or equal to 100000"),
        ("model.toy.hidden_sise", 64, "model.toy.hidden_sise: unknown field (not in the schema)"),
    ],
)
def test_bad_values_name_their_field(path, value, expected):
    errors = errors_of(with_(path, value))
    assert any(e.startswith(expected) or expected in e for e in errors), errors


def test_every_error_is_listed():
    data = with_("search.beta", [-1])
    data["train"]["bogus"] = 1
    data["regimes"][1]["tau"] = -2
    errors = errors_of(data)
    assert len(errors) == 3


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
    assert "search.beta[2]: must be > 0.0 (got -1)" in err
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
      "search": {"beta": [0.1]}, "eval": {"scorer": {"kind": "embedding", "path": "e"}}}


def test_hf_sections_belong_to_the_hf_world():
    errors = errors_of(with_("data.source", "d.jsonl"))
    assert errors == ["(top level): data.source only apply to world: hf (world is toy)"]


@pytest.mark.parametrize("drop, named", [("model", "model.hf"), ("data", "data.source"),
                                         ("eval", "eval.scorer")])
def test_hf_world_names_what_it_lacks(drop, named):
    data = {k: v for k, v in HF.items() if k != drop}
    assert named in " ".join(errors_of(data))


def test_hf_world_refuses_exact_evaluation():
    data = {**HF, "eval": {**HF["eval"], "exact": True}}
    assert "eval.exact" in " ".join(errors_of(data))
    assert parse_sweep(HF).sampler.backend == "auto"  # and the minimal hf file is valid


def test_hf_sweep_files_pin_what_they_claim():
    cpu = load_sweep(Path(__file__).parents[2] / "sweeps/smollm2-cpu.yaml")
    gpu = load_sweep(Path(__file__).parents[2] / "sweeps/qwen3-4b-ultrafeedback.yaml")
    assert (cpu.model.hf.dtype, cpu.scaling.gpus_per_worker, cpu.sampler.gpus_per_actor) == (
        "float32", 0, 0)
    assert {r.kind for r in cpu.regimes} == {"pg", "powerlaw"} and len(cpu.search.beta) == 2
    assert (gpu.model.hf.dtype, gpu.model.hf.gradient_checkpointing) == ("bfloat16", True)
    assert gpu.scaling.gpus_per_worker == 1 and gpu.sampler.backend == "vllm"
