"""The hf evaluation's sample scoring on real toy models: the log-ratio of each sample between
the policy and pi_ref, as `evaluate_policy` computes it, against the toy world's exact law.

At max_tokens=2 with 3-word responses a sample either finished ("w </s>") or was cut after two
words; a cut one has no eos, so neither model may score one (docs/design.md §7.4)."""


import pytest
import torch
from support.builders import save_toy_policies
from support.toy_law import exact_logp

from didray.eval.hf import cut_fraction, own_logps, sample_record, score_samples
from didray.files import read_json, write_json
from didray.sampling.sampler import Sampler
from didray.worlds import toy

SPEC = toy.ToyWorldSpec(n_open_prompts=2, n_fact_prompts=2, response_alphabet=6,
                        max_response_tokens=3)
PROMPTS = [p.text for p in toy.build_world(SPEC).prompts]
K = 16


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    """pi_ref and a policy with other weights (a different init seed), saved like checkpoints."""
    return dict(zip(("ref", "policy"), save_toy_policies(tmp_path_factory, SPEC), strict=True))


@pytest.fixture(scope="module")
def samplers(paths):
    return {name: Sampler(path, backend="transformers", threads=1)
            for name, path in paths.items()}


@pytest.mark.parametrize("drawer", ["policy", "ref"])
def test_sample_log_ratios_are_exact_with_truncated_samples(paths, samplers, drawer, tmp_path):
    other = "ref" if drawer == "policy" else "policy"
    drawn = samplers[drawer].generate(PROMPTS, K, max_tokens=2, seed=0)
    write_json(sample_record(drawn), tmp_path / "eval.json")  # as prepare stores pi_ref's
    record = read_json(tmp_path / "eval.json")
    logps = {drawer: own_logps(record), other: score_samples(samplers[other], PROMPTS, record)}
    got = logps["policy"] - logps["ref"]  # (P, K)
    exact = torch.tensor([[exact_logp(paths["policy"], p, c) - exact_logp(paths["ref"], p, c)
                           for c in row] for p, row in zip(PROMPTS, drawn, strict=True)],
                         dtype=torch.float64)
    assert torch.allclose(got, exact, rtol=0, atol=1e-5), (got - exact).abs().max()
    cut = torch.tensor([[not c.finished for c in row] for row in drawn])
    assert 0 < int(cut.sum()) < cut.numel()  # both kinds of sample are graded
    # Re-encoding the text appends an eos to the cut samples: off by log p(eos | prefix).
    texts = [c.text for row in drawn for c in row]
    via_text = torch.tensor(samplers[other].score([p for p in PROMPTS for _ in range(K)], texts),
                            dtype=torch.float64).reshape(len(PROMPTS), K)
    text_error = (via_text - logps[other]).abs()
    assert text_error[~cut].max() < 1e-5 and text_error[cut].min() > 0.05


@pytest.mark.parametrize(("max_tokens", "cut"), [(1, 1.0), (4, 0.0), (2, None)])
def test_cut_fraction_counts_samples_without_eos(samplers, max_tokens, cut, tmp_path):
    # A toy response is 1 to 3 words and then </s>: one token is never a whole response, and
    # four always hold one. At two tokens, a sample is cut exactly when its two ids hold no eos.
    drawn = samplers["policy"].generate(PROMPTS, K, max_tokens=max_tokens, seed=0)
    write_json(sample_record(drawn), tmp_path / "eval.json")  # as prepare stores pi_ref's
    eos = toy.build_tokenizer().eos_token_id
    no_eos = sum(eos not in c.token_ids for row in drawn for c in row) / (len(PROMPTS) * K)
    assert cut_fraction(read_json(tmp_path / "eval.json")) == (no_eos if cut is None else cut)
    if cut is None:
        assert 0 < no_eos < 1
