"""Scores of the hf world: instruction following (a reward model, or embedding similarity to a
reference response) and knowledge QA (multiple-choice log-likelihood, or exact match).

Both instruction-following scorers are called the same way, `score(prompts, responses)`, so the
pipeline does not care which one a sweep chose. They run on a GPU where the process has one
(a scorer actor given `eval.scorer.gpus`, didray/eval/scorer_actor.py), else on the CPU.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence

import torch
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from didray.errors import BadInput
from didray.worlds.hf import resolve_path
from didray.worlds.hf_data import QAItem
from didray.worlds.text import prompt_messages

Score = Callable[[list[str], list[str]], list[float]]


def device() -> str:
    """Where a scorer runs: in a Ray actor given no GPU, CUDA_VISIBLE_DEVICES is empty and
    this is the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


class EmbeddingScorer:
    """Cosine similarity of each response to its prompt's reference response, embedded by a
    sentence embedder (mean-pooled, L2-normalised last hidden states, as all-MiniLM-L6-v2)."""

    def __init__(self, path: str, references: dict[str, str], dtype: str = "float32",
                 revision: str | None = None, batch_size: int = 64, max_length: int = 256):
        resolved = resolve_path(path)
        self.tokenizer = AutoTokenizer.from_pretrained(resolved, revision=revision)
        self.model = AutoModel.from_pretrained(resolved, revision=revision,
                                               dtype=getattr(torch, dtype)).to(device()).eval()
        self.batch_size = batch_size
        self.max_length = max_length
        prompts = list(references)
        embedded = self.embed([references[p] for p in prompts])
        self.references = dict(zip(prompts, embedded, strict=True))

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-norm embeddings (N, D)."""
        chunks = [self._embed_batch(texts[i: i + self.batch_size])
                  for i in range(0, len(texts), self.batch_size)]
        return torch.cat(chunks) if chunks else torch.empty(0)

    def _embed_batch(self, texts: Sequence[str]) -> torch.Tensor:
        batch = self.tokenizer(list(texts), padding=True, truncation=True,
                               max_length=self.max_length, return_tensors="pt")
        batch = batch.to(self.model.device)
        hidden = self.model(**batch).last_hidden_state.float()  # (B, T, D)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, D)
        return torch.nn.functional.normalize(pooled, dim=-1).cpu()

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        missing = [p for p in prompts if p not in self.references]
        if missing:
            raise BadInput(f"no reference response for prompt {missing[0]!r}")
        if not prompts:
            return []
        refs = torch.stack([self.references[p] for p in prompts])  # (N, D)
        return (self.embed(responses) * refs).sum(-1).tolist()


class RewardModelScorer:
    """The scalar reward (logit 0) of a sequence-classification reward model on the
    chat-formatted (prompt, response) conversation."""

    def __init__(self, path: str, dtype: str = "float32", revision: str | None = None,
                 batch_size: int = 16):
        resolved = resolve_path(path)
        self.tokenizer = AutoTokenizer.from_pretrained(resolved, revision=revision)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "right"
        self.model = AutoModelForSequenceClassification.from_pretrained(
            resolved, revision=revision, dtype=getattr(torch, dtype)).to(device()).eval()
        # The model reads its score at the last non-pad token, so it must know the pad id.
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.batch_size = batch_size

    def conversation(self, prompt: str, response: str) -> str:
        messages = [*prompt_messages(prompt), {"role": "assistant", "content": response}]
        if not self.tokenizer.chat_template:
            return "\n\n".join(m["content"] for m in messages)
        return self.tokenizer.apply_chat_template(messages, tokenize=False)

    @torch.no_grad()
    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        texts = [self.conversation(p, r) for p, r in zip(prompts, responses, strict=True)]
        scores = []
        for i in range(0, len(texts), self.batch_size):
            # A chat template writes its own special tokens; plain text gets the tokenizer's.
            batch = self.tokenizer(texts[i: i + self.batch_size], padding=True,
                                   add_special_tokens=not self.tokenizer.chat_template,
                                   return_tensors="pt").to(self.model.device)
            scores += self.model(**batch).logits[:, 0].float().tolist()
        return scores


def make_scorer(kind: str, path: str, references: dict[str, str] | None = None,
                dtype: str = "float32", revision: str | None = None) -> Score:
    """The `eval.scorer` of a sweep: "reward_model" or "embedding" (needs references)."""
    if kind == "reward_model":
        return RewardModelScorer(path, dtype, revision)
    if kind == "embedding":
        if not references:
            raise BadInput("the embedding scorer needs a `reference` column in data.source")
        return EmbeddingScorer(path, references, dtype, revision)
    raise BadInput(f"unknown scorer kind {kind!r}")


def win_rate(policy_scores: Sequence[float], ref_scores: Sequence[float]) -> float:
    """Fraction of prompts where the policy's score beats pi_ref's; ties count half."""
    if len(policy_scores) != len(ref_scores) or not policy_scores:
        raise ValueError("win_rate needs two equally long, non-empty score lists")
    wins = sum(1.0 if p > r else 0.5 if p == r else 0.0
               for p, r in zip(policy_scores, ref_scores, strict=True))
    return wins / len(policy_scores)


# ----------------------------------------------------------------------------- knowledge QA

_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")


def normalise(text: str) -> str:
    """Lowercase, drop punctuation and articles, collapse whitespace (SQuAD-style)."""
    text = _ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION))
    return " ".join(text.split())


def exact_match(response: str, answers: Sequence[str]) -> bool:
    """Whether any answer alias appears, as whole words, in the response's first sentence.

    Only the first line/sentence counts: a model that lists several candidates later should
    not get credit for them."""
    lines = response.strip().splitlines()
    first = _SENTENCE_END.split(lines[0], maxsplit=1)[0] if lines else ""
    said = f" {normalise(first)} "
    return any(f" {alias} " in said for alias in map(normalise, answers) if alias)


def qa_prompt(item: QAItem) -> str:
    """The prompt of a question. Choices are not listed: multiple choice scores each choice as
    the completion of this same prompt, so both modes ask the model the same thing."""
    return item.question


def choice_pairs(items: Sequence[QAItem]) -> tuple[list[str], list[str], list[int]]:
    """(prompts, completions, owners): every choice of every item in order, flattened for one
    batched log-prob pass; owners[k] is the index of the item choice k belongs to."""
    prompts, completions, owners = [], [], []
    for i, item in enumerate(items):
        if item.choices is None:
            raise BadInput(f"multiple choice needs choices for question {item.question!r}")
        prompts += [qa_prompt(item)] * len(item.choices)
        completions += item.choices
        owners += [i] * len(item.choices)
    return prompts, completions, owners


def multiple_choice_accuracy(items: Sequence[QAItem], choice_logps: Sequence[float]) -> float:
    """Fraction of items whose most likely choice is the answer; `choice_logps` in
    `choice_pairs` order.

    A choice's score is the plain sum of its tokens' log-probs (lm-eval's `acc`): the answers
    here are a word or two, so length normalisation would change little and adds a knob."""
    logps = [float(x) for x in choice_logps]
    if len(logps) != sum(len(item.choices or ()) for item in items):
        raise ValueError("choice_logps does not match the items' choices")
    right, start = 0, 0
    for item in items:
        scores = logps[start: start + len(item.choices)]
        right += scores.index(max(scores)) == item.answer_index
        start += len(item.choices)
    return right / len(items)
