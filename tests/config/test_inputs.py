"""The hf world's local inputs: read from the sweep file's directory (an override's from the
working directory), and a missing local path refused at validate, never taken for a hub name
(docs/design.md §3.3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.sweeps import write_sweep

from didray.cli import main
from didray.config.load import SweepFileError, load_sweep

HF = {"name": "h", "world": "hf", "model": {"hf": {"path": "HuggingFaceTB/SmolLM2-135M"}},
      "regimes": [{"kind": "pg", "name": "pg"}], "search": {"beta": [0.1]},
      "eval": {"split": "test", "scorer": {"kind": "embedding", "path": "owner/embedder"}}}


def sweep_dir(tmp_path: Path, data: dict) -> Path:
    """tmp_path/sweeps/hf.yaml holding `data`, beside a data/ directory with a QA file."""
    here = tmp_path / "sweeps"
    (here / "data" / "prefs").mkdir(parents=True)
    (here / "data" / "qa.jsonl").write_text(json.dumps({"question": "q", "answer": "a"}))
    return write_sweep(here, data, "hf.yaml")


def test_relative_paths_are_read_from_the_sweep_files_directory(tmp_path, monkeypatch):
    file = sweep_dir(tmp_path, {**HF, "data": {"source": "data/prefs"},
                                "eval": {**HF["eval"], "qa": {"source": "./data/qa.jsonl"}}})
    monkeypatch.chdir(tmp_path)  # not the file's directory
    sweep = load_sweep(file.relative_to(tmp_path))
    # Written relative to the working directory, where every loader reads them.
    assert (sweep.data.source, sweep.eval.qa.source) == ("sweeps/data/prefs",
                                                        "sweeps/data/qa.jsonl")
    # Hub names stay hub names.
    assert sweep.model.hf.path == "HuggingFaceTB/SmolLM2-135M"
    assert sweep.eval.scorer.path == "owner/embedder"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the inputs lie outside the working directory: absolute
    assert load_sweep(file).data.source == str(tmp_path / "sweeps/data/prefs")


def test_an_overrides_path_is_read_from_the_working_directory(tmp_path, monkeypatch):
    file = sweep_dir(tmp_path, {**HF, "data": {"source": "data/prefs"}})
    (tmp_path / "mine.jsonl").write_text(json.dumps({"prompt": "p"}))
    monkeypatch.chdir(tmp_path)
    assert load_sweep(file, ["data.source=./mine.jsonl"]).data.source == "mine.jsonl"
    with pytest.raises(SweepFileError) as refused:
        load_sweep(file, ["data.source=data/prefs/train.jsonl"])  # the file's, not here
    assert refused.value.errors == [
        f"data.source=data/prefs/train.jsonl: {tmp_path}/data/prefs/train.jsonl does not exist; "
        f"a relative path in the sweep file is read from its directory ({tmp_path}/sweeps), "
        "one in an override from the working directory, and a path is never looked up on the "
        "Hugging Face hub (a hub name is owner/name)"]


@pytest.mark.parametrize("given", ["./data/train.jsonl", "data/x.jsonl", "x.parquet",
                                   "../prefs", "~/no-such-didray-dir", "/no/such/dir"])
def test_a_missing_local_path_is_refused_at_validate(given, tmp_path, monkeypatch, capsys):
    file = sweep_dir(tmp_path, {**HF, "data": {"source": given}})
    monkeypatch.chdir(tmp_path)
    assert main(["validate", str(file)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{file}: 1 error(s)\n  data.source: ")
    assert "does not exist" in err and "never looked up on the Hugging Face hub" in err
    assert len(err.strip().splitlines()) == 2  # one paragraph under the file's name


def test_each_input_field_is_checked_and_named(tmp_path, monkeypatch):
    scorer = {"kind": "embedding", "path": "./models/embedder"}
    file = sweep_dir(tmp_path, {**HF, "data": {"source": "data/prefs", "scorer": scorer},
                                "model": {"hf": {"path": "../models/pi_ref"}},
                                "eval": {**HF["eval"], "scorer": dict(scorer),  # no YAML alias
                                         "qa": {"source": "data/none.json"}}})
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SweepFileError) as refused:
        load_sweep(file)
    named = [e.split(":")[0] for e in refused.value.errors]
    assert named == ["eval.qa.source", "model.hf.path", "eval.scorer.path", "data.scorer.path"]
    assert refused.value.errors[1].startswith(f"model.hf.path: {tmp_path}/models/pi_ref does")
