"""A sweep on an S3 URI: a real S3-compatible server (moto's) on loopback, started by the test.

Everything didray writes must reach the bucket: with this machine's mirror wiped, the results
read back equal to the same sweep run on a local path, a trained policy loads from its
checkpoint in the bucket, and an extension reuses the bucket's caches (nothing recomputed).
About building caches too (their entries must reach the bucket): it starts from an empty one.
"""

import io
import json
import os
import shutil
import socket
import threading
import time

import polars as pl
import pyarrow.fs as pafs
import pytest
import torch
from support.fixtures import free_port
from support.sweeps import ROOT, assert_same_results, run_cli

from didray.analysis import load
from didray.analysis.load import mirrored
from didray.analysis.policy import load_policy
from didray.cli import main
from didray.storage import _put, puts_whole


def remote_files(fs, prefix: str) -> set[str]:
    selector = pafs.FileSelector(prefix, recursive=True)
    return {f.path.removeprefix(prefix + "/") for f in fs.get_file_info(selector)
            if f.type == pafs.FileType.File}


def sweep_uri(storage: str, name: str) -> str:
    base, query = storage.split("?")
    return f"{base}/{name}?{query}"


def test_ci_sweep_on_s3_reads_back_equal_to_the_local_one(s3, ci_sweep, tmp_path, capsys):
    uri, fs = s3
    code, log, _ = run_cli(["run", "sweeps/ci.yaml", "--storage", uri])
    assert code == 0, log[-3000:]
    files = remote_files(fs, "didray/results")
    for name in ("trials.parquet", "trials.parquet.integrity.json", "steps.parquet",
                 "evals.parquet", "manifest.json"):
        assert f"ci/{name}" in files
    assert any(f.startswith("ci/tune/") and "/checkpoint_" in f for f in files)
    assert any(f.startswith("cache/ref/") for f in files)
    assert any(f.startswith("cache/toy/") and f.endswith("integrity.json") for f in files)
    assert not (ROOT / "s3:").exists()  # pydantic's Path('s3:/...') wrote here once

    shutil.rmtree(tmp_path / "mirror")  # only the bucket is left
    _, clean = ci_sweep
    assert_same_results(mirrored(sweep_uri(uri, "ci")), clean)

    # `didray analyze URI` reads the bucket too: the regime table names the CI sweep's regimes.
    assert main(["analyze", sweep_uri(uri, "ci"), "--table", "regimes", "--format", "csv"]) == 0
    regimes = pl.read_csv(io.StringIO(capsys.readouterr().out))
    assert sorted(regimes["regime"]) == ["pg", "powerlaw-t1"]

    # A trained policy comes back from its checkpoint in the bucket, equal to the local run's.
    results = load(sweep_uri(uri, "ci"))
    row = results.trials.sort("beta", "regime").collect().row(0, named=True)
    assert row["checkpoint_path"].startswith("tune/")  # relative to the sweep's URI
    twin = load(clean).trials.filter(beta=row["beta"], regime=row["regime"]).collect()
    model, _ = load_policy(results, row["trial_id"])
    local, _ = load_policy(clean, twin["trial_id"][0])
    for (name, got), want in zip(model.state_dict().items(), local.state_dict().values(),
                                 strict=True):
        assert torch.equal(got, want), name

    # One more beta, from an empty mirror: data, pi_ref and reference caches come from S3.
    shutil.rmtree(tmp_path / "mirror")
    code, log, _ = run_cli(["run", "sweeps/ci.yaml", "search.beta=[0.1,0.5,1.0]",
                            "--storage", uri, "--extend"])
    assert code == 0, log[-3000:]
    manifest = json.loads(fs.open_input_stream("didray/results/ci/manifest.json").read())
    assert manifest["cache_computations"] and set(manifest["cache_computations"].values()) == {1}
    assert "fitting by SFT" not in log and "building regime" not in log
    trials = load(sweep_uri(uri, "ci")).trials.collect()
    assert sorted(set(trials["beta"])) == [0.1, 0.5, 1.0]


def test_a_storage_that_cannot_be_opened_is_refused_before_anything_runs(tmp_path, capsys,
                                                                            monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    port = free_port()  # nothing listens there
    uri = f"s3://didray/results?endpoint_override=127.0.0.1:{port}&scheme=http"
    assert main(["validate", str(ROOT / "sweeps/ci.yaml"), f"storage={uri}"]) == 2
    err = capsys.readouterr().err
    assert f"storage {uri!r} cannot be opened" in err and "endpoint_override" in err


def test_a_storage_that_never_answers_is_refused_within_the_probe_timeout(monkeypatch,
                                                                          capsys):
    """A server that accepts the connection and never replies (as an offline gs:// did: the
    probe waited past 300 s) is refused once PROBE_TIMEOUT_S has passed, in one paragraph."""
    import didray.storage

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setattr(didray.storage, "PROBE_TIMEOUT_S", 1.0)
    silent = socket.create_server(("127.0.0.1", 0))  # listens, never reads nor answers
    port = silent.getsockname()[1]
    uri = f"s3://didray/results?endpoint_override=127.0.0.1:{port}&scheme=http"
    started = time.monotonic()
    try:
        assert main(["validate", str(ROOT / "sweeps/ci.yaml"), f"storage={uri}"]) == 2
    finally:
        silent.close()
    assert time.monotonic() - started < 5
    assert "cannot be opened (no answer within 1 s" in capsys.readouterr().err


def test_a_bucket_that_does_not_exist_is_refused_by_validate(s3, capsys):
    """didray creates no bucket: one missing (a typo) is named by `validate`, not found by
    the first write after prepare. An existing bucket passes, whatever prefix follows."""
    uri, _ = s3
    missing = uri.replace("s3://didray/", "s3://didray-typo/")
    assert main(["validate", str(ROOT / "sweeps/ci.yaml"), f"storage={missing}"]) == 2
    assert "(the bucket 'didray-typo' does not exist; create it first)" in capsys.readouterr().err
    fresh = sweep_uri(uri, "new/prefix")  # nothing written there yet
    assert main(["validate", str(ROOT / "sweeps/ci.yaml"), f"storage={fresh}"]) == 0


def test_push_and_pull_copy_a_tree_byte_for_byte(s3):
    """A cache entry's tree (nested, an empty file, one of several copy chunks, its index)
    reaches the bucket under the entry's path and comes back into a wiped mirror equal, with
    no temporary file left beside what was pulled."""
    import os

    from didray.storage import Storage

    uri, fs = s3
    storage = Storage.of(uri)
    entry = storage.local / "cache" / "entry"
    content = {"weights/model.bin": os.urandom(3 << 20), "weights/empty": b"",
               "config.json": b'{"a": 1}', "integrity.json": b"{}"}
    for name, data in content.items():
        (entry / name).parent.mkdir(parents=True, exist_ok=True)
        (entry / name).write_bytes(data)
    storage.push(entry)
    assert remote_files(fs, "didray/results/cache/entry") == set(content)
    with fs.open_input_stream("didray/results/cache/entry/weights/model.bin") as src:
        assert src.read() == content["weights/model.bin"]
    shutil.rmtree(storage.local)
    assert storage.pull(entry)
    assert {p.relative_to(entry).as_posix(): p.read_bytes()
            for p in entry.rglob("*") if p.is_file()} == content


@pytest.mark.parametrize(("uri", "whole"), [
    ("s3://didray/results", True), ("gs://didray/results", True), ("GCS://didray/x", True),
    ("hdfs://namenode:8020/results", False), ("viewfs://cluster/results", False),
    ("abfs://results@account.dfs.core.windows.net/x", False), ("abfss://c@a/x", False)])
def test_only_object_stores_take_a_push_in_place(uri, whole):
    assert puts_whole(uri) is whole


def test_a_push_where_files_grow_while_written_moves_a_whole_file_under_its_name(tmp_path):
    """The move path on pyarrow's local filesystem, where a file is visible while written as
    on HDFS: a reader polling the target name during a 64 MiB push only ever finds nothing or
    the whole file, and no temporary file is left beside it."""
    data = os.urandom(64 << 20)
    (source := tmp_path / "trials.parquet").write_bytes(data)
    (remote := tmp_path / "remote").mkdir()
    fs, target, seen, done = pafs.LocalFileSystem(), str(remote / source.name), set(), []

    def watch() -> None:
        while not done:
            if (info := fs.get_file_info(target)).type == pafs.FileType.File:
                seen.add(info.size)

    reader = threading.Thread(target=watch)
    reader.start()
    try:
        _put(source, fs, target, whole=False)
    finally:
        done.append(True)
        reader.join()
    assert seen <= {len(data)}  # never a partial size
    assert (remote / source.name).read_bytes() == data
    assert [p.name for p in remote.iterdir()] == [source.name]
