"""prepare's caches are reused only when they match their seal; a truncated one is rebuilt, and
the user told so (no Ray needed: the toy pi_ref and its enumeration)."""

from pathlib import Path

import ray
import torch
import yaml

from didray.config.load import parse_sweep
from didray.files import content_hash, damage
from didray.sweep.prepare import Caches, compute_references, toy_world
from didray.worlds import toy

ROOT = Path(__file__).resolve().parents[2]


def truncate(path: Path) -> int:
    """Cut `path` to half its bytes, as a full disk or an interrupted copy would; its size."""
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.truncate(size // 2)
    return size


def test_a_truncated_cache_is_rebuilt_and_said(tmp_path):
    spec = yaml.safe_load((ROOT / "sweeps/ci.yaml").read_text())
    spec["model"]["toy"]["sft_steps"] = 20  # the cache's content does not matter here
    sweep = parse_sweep({**spec, "storage": str(tmp_path / "results")})
    said = []

    def computed() -> dict[str, int]:
        """What one prepare of the toy world computed (1) or reused (0)."""
        caches = Caches()
        toy_world(sweep, caches, said.append)
        return {key.split("/")[0]: n for key, n in caches.computed.items()}

    assert computed() == {"pi_ref": 1, "enumeration": 1}
    world_dir = tmp_path / "results" / "cache" / "toy" / sweep.model.toy.recipe_hash()
    enum_key = content_hash(sweep.model.toy.recipe_hash(), toy.ENUMERATION)
    enum_file = tmp_path / "results" / "cache" / "enum" / f"{enum_key}.pt"
    table = torch.load(enum_file)
    assert computed() == {"pi_ref": 0, "enumeration": 0}
    assert not [line for line in said if line.startswith("cache:")]

    size = truncate(enum_file)
    assert computed() == {"pi_ref": 0, "enumeration": 1}
    assert f"cache: {enum_file.name} cannot be reused ({enum_file.name} has {size // 2} " \
           f"bytes, {size} were written); rebuilding it" in said
    assert torch.equal(torch.load(enum_file), table)

    weights = world_dir / "model.safetensors"
    size = truncate(weights)
    assert computed() == {"pi_ref": 1, "enumeration": 0}
    assert f"cache: {world_dir} cannot be reused (model.safetensors has {size // 2} bytes, " \
           f"{size} were written); rebuilding it" in said
    assert damage(world_dir) is None and weights.stat().st_size == size


def test_toy_reference_log_probs_are_computed_in_the_driver_as_the_enumeration_has_them(
        tmp_path):
    """The toy world's reference cache is scored in this process (no Ray task, so Ray is not
    even started), and each pair's two rows hold pi_ref's log-probs of its responses: the
    same numbers as the tree enumeration, a separate code path (design §2.2)."""
    spec = yaml.safe_load((ROOT / "sweeps/ci.yaml").read_text())
    spec["model"]["toy"]["sft_steps"] = 20  # any pi_ref will do; this one is quick to fit
    sweep = parse_sweep({**spec, "storage": str(tmp_path / "results")})
    world_dir = toy_world(sweep, Caches(), lambda _: None).dir
    world, _, _ = toy.load_world(world_dir)
    responses = toy.enumerate_responses(world)
    picks = [(0, 0), (3, 5), (len(world.all_prompts) - 1, len(responses) - 1), (7, 2)]
    prompts = [world.all_prompts[p].text for p, _ in picks]
    chosen, rejected = [responses[r] for _, r in picks[:2]], [responses[r] for _, r in picks[2:]]
    lengths = (sweep.train.max_prompt_tokens, sweep.train.max_response_tokens)

    [pairs] = compute_references(sweep, world_dir, [(prompts, chosen + rejected)], lengths)

    assert not ray.is_initialized()
    table = torch.load(tmp_path / "results" / "cache" / "enum"
                       / f"{content_hash(sweep.model.toy.recipe_hash(), toy.ENUMERATION)}.pt")
    expected = torch.stack([table[p, r] for p, r in picks]).float()
    torch.testing.assert_close(pairs.ref_logps, expected, atol=1e-5, rtol=0)
