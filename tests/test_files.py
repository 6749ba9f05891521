"""The bottom layer's files: integrity indexes and seals, JSON that is corrupt, a damaged
checkpoint, a damaged cache entry rebuilt."""

import hashlib
import json
import os
import stat
import threading
from pathlib import Path

import pytest

from didray.errors import BadInput
from didray.files import (
    build_once,
    damage,
    file_damage,
    has_seals,
    manifest_json,
    read_json,
    read_sealed,
    seal_path,
    sealed_write,
    write_index,
    write_json,
)
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
        manifest_json(path)
    path.write_text("[1, 2]")
    with pytest.raises(BadInput, match="manifest.json: a sweep manifest is a JSON object, "
                                       "this holds a list"):
        manifest_json(path)


def test_a_seal_catches_truncation_and_alteration(tmp_path):
    path = tmp_path / "t.bin"
    sealed_write(path, lambda tmp: Path(tmp).write_bytes(b"x" * 100))
    assert json.loads(seal_path(path).read_text())[0] == 100
    assert file_damage(path) is None
    path.write_bytes(b"x" * 60)
    assert file_damage(path) == "t.bin has 60 bytes, 100 were written"
    path.write_bytes(b"x" * 99 + b"y")
    assert file_damage(path) == "t.bin differs from what was written (sha256)"
    seal_path(path).unlink()
    assert file_damage(path) == "t.bin has no readable t.bin.integrity.json"
    assert file_damage(path, unsealed_ok=True) is None  # an older didray's file


def read_while_rewritten(path: Path, read, size: int) -> list:
    """`read(path)` over and over while a thread writes 300 versions of `path` (version i:
    str(i) repeated `size` times) through `sealed_write`, as a running sweep rewrites its
    tables while a notebook reads them; what each read returned."""
    sealed_write(path, lambda tmp: Path(tmp).write_bytes(b"0"))
    done = threading.Event()

    def rewrite():
        for i in range(300):
            sealed_write(path, lambda tmp, i=i: Path(tmp).write_bytes(str(i).encode() * size))
        done.set()

    writer = threading.Thread(target=rewrite)
    writer.start()
    seen = []
    while not done.is_set():
        seen.append(read(path))
    writer.join()
    return seen


def test_a_file_rewritten_while_it_is_checked_is_never_called_damaged_nor_unsealed(tmp_path):
    """Every check must see a file and a seal that belong together, and never the file
    without a seal (in a sealed sweep that is refused as damage)."""
    path = tmp_path / "trials.parquet"
    assert set(read_while_rewritten(path, file_damage, 5000)) == {None}
    assert json.loads(seal_path(path).read_text()) == [15000, hashlib.sha256(
        b"299" * 5000).hexdigest()]


def test_which_sweeps_have_seals(tmp_path):
    assert not has_seals(tmp_path)
    sealed_write(tmp_path / "steps" / "t1.parquet", lambda tmp: Path(tmp).write_bytes(b"1"))
    assert has_seals(tmp_path)  # a trial's part is enough: its tables must be sealed too


def test_a_damaged_cache_entry_is_rebuilt_and_said(tmp_path):
    final, said, builds = tmp_path / "entry", [], []

    def write(out: Path) -> None:
        builds.append(out)
        (out / "table.pt").write_bytes(b"t" * 4096)

    assert build_once(final, Path.exists, write, said.append)
    assert not build_once(final, Path.exists, write, said.append)  # intact: reused
    assert len(builds) == 1 and said == []
    with (final / "table.pt").open("r+b") as f:
        f.truncate(1000)  # disk full while a copy was made
    assert build_once(final, Path.exists, write, said.append)
    assert said == [f"cache: {final} cannot be reused (table.pt has 1000 bytes, 4096 were "
                    "written); rebuilding it"]
    assert (final / "table.pt").read_bytes() == b"t" * 4096 and damage(final) is None


def test_written_files_and_built_dirs_get_the_umask_modes_not_tempfiles_private_ones(tmp_path):
    """mkstemp makes 0600 and mkdtemp 0700; results must be as readable as `open` makes them."""
    mask = os.umask(0o022)
    os.umask(mask)
    if mask != 0o022:
        pytest.skip(f"the modes below assume umask 022 (this process has {mask:03o})")
    write_json({"a": 1}, tmp_path / "x.json")
    build_once(tmp_path / "entry", Path.exists, lambda d: (Path(d) / "f").write_text("x"))
    assert stat.S_IMODE((tmp_path / "x.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "entry").stat().st_mode) == 0o755


def test_bytes_read_while_the_file_is_rewritten_are_checked_against_their_own_seal(tmp_path):
    """`read_sealed` returns bytes it checked: bytes read before the writer sealed their
    version away are read again, not called damaged (1 CI run in 2: a table rewritten while
    `didray analyze` read it was refused as corrupt)."""
    read = read_while_rewritten(tmp_path / "trials.parquet",
                                lambda path: read_sealed(path, sealed=True), 50)
    assert set(read) <= {b"0", *(str(i).encode() * 50 for i in range(300))}
