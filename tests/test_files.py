"""The bottom layer's files: integrity indexes, JSON that is corrupt, a damaged checkpoint."""

import json
from pathlib import Path

import pytest

from didray.errors import BadInput
from didray.files import damage, read_json, read_manifest, write_index
from didray.train.worker import intact_checkpoint


def checkpoint(root: Path, name: str, weights: bytes) -> Path:
    d = root / name
    (d / "sub").mkdir(parents=True)
    (d / "model.safetensors").write_bytes(weights)
    (d / "sub" / "state.json").write_text('{"step": 4}')
    write_index(d)
    return d


def test_index_catches_truncation_alteration_and_loss(tmp_path):
    d = checkpoint(tmp_path, "c", b"\x00" * 1000)
    assert damage(d) is None
    (d / "model.safetensors").write_bytes(b"\x00" * 999)
    assert damage(d) == "model.safetensors has 999 bytes, 1000 were written"
    (d / "model.safetensors").write_bytes(b"\x00" * 999 + b"\x01")
    assert damage(d) == "model.safetensors differs from what was written (sha256)"
    (d / "sub" / "state.json").unlink()
    (d / "model.safetensors").write_bytes(b"\x00" * 1000)
    assert damage(d) == "sub/state.json is missing"
    (d / "integrity.json").unlink()
    assert damage(d).startswith("no readable integrity.json")


def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path, capsys):
    old = checkpoint(tmp_path, "checkpoint_2026-01-01_00-00-01", b"a" * 10)
    new = checkpoint(tmp_path, "checkpoint_2026-01-01_00-00-02", b"b" * 10)
    assert intact_checkpoint(new) == new
    (new / "model.safetensors").write_bytes(b"b" * 5)
    assert intact_checkpoint(new) == old
    assert "checkpoint_2026-01-01_00-00-02 is damaged (model.safetensors has 5" in (
        capsys.readouterr().err)
    (old / "model.safetensors").write_bytes(b"")
    with pytest.raises(RuntimeError, match="no intact checkpoint"):
        intact_checkpoint(new)


def test_corrupt_json_and_manifests_are_named_errors(tmp_path):
    path = tmp_path / "manifest.json"
    assert read_json(path, {"default": 1}) == {"default": 1}
    path.write_text(json.dumps({"version": 2, "sweep": {"name": "x"}})[:20])
    with pytest.raises(BadInput, match=r"manifest.json: not readable JSON .*truncated"):
        read_manifest(path)
    path.write_text("[1, 2]")
    with pytest.raises(BadInput, match="manifest.json: a sweep manifest is a JSON object, "
                                       "this holds a list"):
        read_manifest(path)
