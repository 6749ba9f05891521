"""Command-line overrides: `didray validate|run|submit FILE key.path=value ...`."""

import json
from pathlib import Path

import pytest

from didray import jobs
from didray.cli import main, parse
from didray.config.load import SweepFileError, load_sweep
from didray.storage import Storage
from didray.sweep.prepare import PreparedSweep
from didray.sweep.state import manifest_of, write_manifest

CI = Path(__file__).parents[2] / "sweeps/ci.yaml"


def test_validate_counts_the_overridden_trials(capsys):
    assert main(["validate", str(CI), "train.lr=0.002", "search.seed=[0,1]"]) == 0
    out = capsys.readouterr().out
    # 2 betas x 2 regimes x 2 seeds; the file alone has one seed: 4 trials.
    assert "8 trial(s)" in out
    assert "with train.lr=0.002 search.seed=[0,1]" in out


def test_overrides_set_values_read_as_yaml():
    sweep = load_sweep(CI, ["train.lr=1e-4", "search.seed=[3,4]", "regimes[1].tau=0.5",
                            "regimes.0.name=given", "train.steps=8"])
    assert sweep.train.lr == 1e-4 and sweep.train.steps == 8
    assert sweep.search.seed == [3, 4]
    assert [r.name for r in sweep.regimes] == ["given", "powerlaw-t1"]
    assert sweep.regimes[1].tau == 0.5
    assert sweep.search.beta == [0.1, 0.5]  # untouched fields keep the file's values


def test_search_axes_are_set_by_their_dotted_path():
    """`search.train.lr=[...]` is the file's `search: {train.lr: [...]}` (it was refused as
    an unknown setting `train`), a single value a one-value axis."""
    sweep = load_sweep(CI, ["search.train.lr=[1e-3, 1e-2]", "search.beta=0.25",
                            "search.data.seed=[0, 1, 2]", "search.eval.judge.k=8"])
    assert sweep.search.axes == {"train.lr": [1e-3, 1e-2], "data.seed": [0, 1, 2],
                                 "eval.judge.k": [8]}
    assert sweep.search.beta == [0.25]
    assert sweep.trial_count() == 1 * 2 * 1 * 2 * 3 * 1  # beta x regime x seed x lr x data


def test_the_last_override_of_a_key_wins():
    assert load_sweep(CI, ["train.lr=0.1", "train.lr=0.2"]).train.lr == 0.2


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (["train.lr=abc"], "train.lr=abc: Input should be a valid number"),
        (["regimes[1].tau=-1"], "regimes[1].tau=-1: must be >= 0.0001 (got -1)"),
        (["regimes.1.tau=-1"], "regimes.1.tau=-1: must be >= 0.0001 (got -1)"),
        (["search.seed=[0,0]"], "search.seed=[0,0]: values must be distinct"),
        (["train.lr=[1,"], "train.lr=[1,: not a YAML value"),
        (["regimes[5].tau=1"], "regimes[5].tau=1: list index out of range"),
        (["trainlr"], "trainlr: an override is key.path=value"),
        (["train.lr=0.1", "train.steps=0"], "train.steps=0: must be >= 1 (got 0)"),
        (["search.train.lr=[1e-3,-1]"], "search.train.lr=[1e-3,-1]: must be > 0 (got -1)"),
    ],
)
def test_a_bad_override_exits_2_naming_it(overrides, line, capsys):
    assert main(["validate", str(CI), *overrides]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{CI}: 1 error(s)\n")
    assert err.splitlines()[1].strip().startswith(line), err


def test_an_error_the_override_did_not_cause_names_the_field(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(CI.read_text().replace("steps: 6", "steps: 0"))
    with pytest.raises(SweepFileError) as err:
        load_sweep(path, ["train.lr=0.1"])
    assert err.value.errors == ["train.steps: must be >= 1 (got 0)"]


def test_interpolation_syntax_is_plain_text():
    # OmegaConf would resolve ${...}; a sweep file has no interpolation, so it stays a name.
    with pytest.raises(SweepFileError) as err:
        load_sweep(CI, ["name=${train.lr}"])
    assert err.value.errors[0].startswith("name=${train.lr}: must match")


def test_manifest_records_the_overrides(tmp_path):
    sweep = load_sweep(CI, ["train.lr=0.002", "search.seed=[0,1]"])
    prepared = PreparedSweep(world_dir=tmp_path, world_hash="h", regimes={})
    written = manifest_of(sweep, CI.read_text(), prepared,
                          ["train.lr=0.002", "search.seed=[0,1]"], {}, [], [])
    write_manifest(written, Storage.of(tmp_path), tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["overrides"] == ["train.lr=0.002", "search.seed=[0,1]"]
    assert manifest["sweep"]["search"]["seed"] == [0, 1]
    assert manifest["sweep_file"] == CI.read_text()
    assert manifest["sealed"] is True  # its tables' seals cannot all be deleted unnoticed


def test_submit_validates_and_passes_the_overrides_to_the_job():
    upload = jobs.prepare(CI, CI.parents[1], ["search.seed=[0,1]"])
    assert upload.sweep.trial_count() == 8
    command = jobs.entrypoint(upload.sweep_rel, None, False, upload.overrides)
    assert command == (jobs.env_check()
                       + " && python -m didray.cli run sweeps/ci.yaml 'search.seed=[0,1]'")


def test_overrides_may_follow_options(capsys):
    args = ["run", str(CI), "train.lr=0.1", "--resume", "search.seed=[0,1]", "--format", "md"]
    assert parse(args).overrides == ["train.lr=0.1", "search.seed=[0,1]"]
    assert main(["validate", str(CI), "--bogus"]) == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
